"""A Ray of its own with a known Prometheus port, a little of every squigglray workload, then wait.

    python tests/metrics_scenario.py    # prints `PORT <port>`, later `SCENARIO {json}`, then waits for stdin to close

Run by tests/test_metrics_export.py in a subprocess (the test session's Ray stays untouched). It starts
`ray.init(num_cpus=2, _metrics_export_port=PORT)` with a 1 s metrics report interval (the default is
10 s), runs a sandbox pool, a Tune sweep under SweepMetrics, a real slice build and a Metered Ray Data
stage, and prints what the metrics must show. The driver then stays alive (its gauges and counters
stay exported) until the test closes stdin.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

SWEEP_TRIALS = [  # (target, fail): the trainable reports STEPS steps, then fails if asked
    ("mod_power", False), ("stars_bars", False), ("control:shuffled_labels", True)]
STEPS = 3
CODES = ["print(1 + 1)", "x = 2\nprint(x * 21)", "raise ValueError('boom')", "print('ok')"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toy_trial(config):
    """A function trainable shaped like a probe: one report per step with `step` and `loss`."""
    from ray import tune

    for step in range(1, STEPS + 1):
        tune.report({"step": step, "loss": 1.0 / step, "probe_id": config["probe"]["target"]})
    if config["probe"]["fail"]:
        raise RuntimeError("this trial fails on purpose")


def double(batch):
    return {"id": batch["id"] * 2}


def run_sandbox() -> dict:
    from actors.sandbox_pool import SandboxPool
    from squigglray.solve.sandbox import Limits

    pool = SandboxPool(size=1, limits=Limits(), num_cpus=1, isolation="process", allow_weak_isolation=True)
    try:
        results = pool.map(CODES, timeout_s=20, batch_size=2)
    finally:
        pool.shutdown()
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {"runs": statuses}


def run_sweep(storage: str) -> dict:
    from ray import tune

    from tune_spaces.metrics import SweepMetrics

    space = {"probe": tune.grid_search([{"target": t, "seed": 0, "fail": fail} for t, fail in SWEEP_TRIALS])}
    tuner = tune.Tuner(
        tune.with_resources(toy_trial, {"cpu": 1}), param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(name="metrics-scenario", storage_path=storage, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  callbacks=[SweepMetrics("probe")]),
    )
    grid = tuner.fit()
    return {"completed": sum(r.error is None for r in grid), "errored": sum(r.error is not None for r in grid),
            "steps": STEPS * len(SWEEP_TRIALS), "steps_per_trial": STEPS, "groups": [t for t, _ in SWEEP_TRIALS]}


def run_slice(data_dir: str) -> dict:
    import ray

    from actors.slice_metrics import Metered
    from squigglray.data.config import SliceConfig
    from squigglray.data.slice import read_items
    from squigglray.jobs.slice import build_slice
    from squigglray.paths import ArtifactStore

    cfg = SliceConfig.model_validate({
        "name": "metrics", "seed": 0, "batch_size": 64,
        "sources": [{"kind": "families", "families": ["mod_power", "stars_bars"], "per_family_level": 6}],
        "quotas": {"train": 6, "probe_a": 1, "holdout": 2}, "fill": {"enabled": False}})
    manifest = build_slice(cfg, data_dir, log=lambda *_: None)
    selected: dict[str, int] = {}
    for item in read_items(manifest.slice_id, ArtifactStore(data_dir))[1]:
        selected[item.family_id] = selected.get(item.family_id, 0) + 1
    n = 100
    rows = ray.data.range(n).map_batches(Metered(double, "scenario", slice_name="metered"), batch_size=25).count()
    return {"slice": cfg.name, "read": manifest.pool["rows"], "selected": selected, "metered": rows}


def main() -> int:
    import ray

    port = free_port()
    t0 = time.monotonic()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _metrics_export_port=port,
             _system_config={"metrics_report_interval_ms": 1000})
    timings = {"init": time.monotonic() - t0}
    print(f"PORT {port}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sq-metrics-") as tmp:
        facts = {"port": port}
        for name, fn in (("sandbox", run_sandbox), ("sweep", lambda: run_sweep(f"{tmp}/tune")),
                         ("slice", lambda: run_slice(f"{tmp}/data"))):
            t = time.monotonic()
            facts[name] = fn()
            timings[name] = time.monotonic() - t
        facts["timings"] = {k: round(v, 1) for k, v in timings.items()}
        print("SCENARIO " + json.dumps(facts), flush=True)
        try:  # stay alive, exporting, until the test is done (stdin closes) or two minutes pass
            import select

            select.select([sys.stdin], [], [], 120)
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
