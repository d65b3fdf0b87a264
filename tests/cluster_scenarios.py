"""Multi-node scenarios on a simulated heterogeneous cluster (`ray.cluster_utils.Cluster`: one machine,
several raylets whose fake GPUs, memory classes, accelerator types and sandbox markers are declared
resources). Each runs in its own process so the test session's Ray is left alone:

    python tests/cluster_scenarios.py placement     # each workload's placement lands on the right node type
    python tests/cluster_scenarios.py probe_fault   # a probe sweep survives losing a worker node

The last line of stdout is `SCENARIO_RESULT <json>`; tests/test_placement.py and
tests/test_fault_tolerance.py assert on it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEAD = {"num_cpus": 1, "include_dashboard": False}


def _node(cluster: Cluster, num_cpus: float, resources: dict[str, float]):
    """A worker node from squigglray.placement.node_resources output (GPU goes to num_gpus)."""
    res = dict(resources)
    gpus = res.pop("GPU", 0)
    return cluster.add_node(num_cpus=num_cpus, num_gpus=gpus, resources=res, wait=False)  # raylets start together


def _start(cluster: Cluster) -> None:
    cluster.wait_for_nodes(timeout=90)
    ray.init(address=cluster.address, log_to_driver=False)


# ---------------------------------------------------------------------------------------------
# placement

@ray.remote(num_cpus=0)
def where() -> str:
    return ray.get_runtime_context().get_node_id()


def placement() -> dict:
    from actors.placement import PlacementError, check_feasible, options
    from squigglray.jobs.probe import SweepOptions, run_trials
    from squigglray.placement import DEFAULTS, Placement, node_resources, to_tune_resources

    t0 = time.perf_counter()
    # the head is the CPU sandbox node (one raylet fewer on a 2-core machine)
    cluster = Cluster(initialize_head=True, head_node_args={**HEAD, "num_cpus": 2,
                                                            "resources": node_resources(0, 0, sandbox=True)})
    nodes = {
        "rtx5090": _node(cluster, 4, node_resources(1, 32, "RTX5090")),
        "a100_40g": _node(cluster, 4, node_resources(1, 40, "A100")),
        "h100_80g": _node(cluster, 4, node_resources(1, 80, "H100")),
    }
    ids = {name: n.node_id for name, n in nodes.items()}
    ids["sandbox_head"] = cluster.head_node.node_id
    _start(cluster)
    out: dict = {"nodes": ids, "tasks": {}, "infeasible": {}}
    try:
        requests = {
            "generation": DEFAULTS["generation"], "sft": DEFAULTS["sft"],
            "solver_engine": DEFAULTS["solver_engine"], "probe": DEFAULTS["probe"], "dcm": DEFAULTS["dcm"],
            "sandbox": DEFAULTS["sandbox"], "a100_40g_or_more": Placement(gpus=1, memory_class="40g",
                                                                          accelerator_type="A100"),
            "rtx_32g": Placement(gpus=0.5, memory_class="32g", accelerator_type="RTX5090"),
        }
        refs = {name: where.options(**options(p, name)).remote() for name, p in requests.items()}
        out["tasks"] = {name: ray.get(ref, timeout=60) for name, ref in refs.items()}

        # a Tune trial with the probe sweep's placement: DEFAULTS["probe"] pinned to the H100 type
        from ray import tune

        def trial(config):
            tune.report({"node": ray.get_runtime_context().get_node_id()})

        probe_p = SweepOptions(placement=DEFAULTS["probe"], accelerator_type="H100").trial_placement()
        check_feasible(probe_p, what="probe trial")
        with tempfile.TemporaryDirectory() as tmp:
            grid = tune.Tuner(tune.with_resources(trial, to_tune_resources(probe_p)),
                              run_config=tune.RunConfig(name="where", storage_path=tmp, verbose=0)).fit()
            out["tune_probe_trial"] = grid[0].metrics["node"]

        # a sandbox actor of the pool, on the sandbox node
        import asyncio

        from actors.sandbox_pool import SandboxPool
        from squigglray.solve.sandbox import Limits

        pool = SandboxPool(size=1, limits=Limits(timeout_s=5), num_cpus=1, sandbox_nodes=True)
        [info] = pool.ready(timeout_s=60)
        r = asyncio.run(pool.run("print(6 * 7)"))
        out["sandbox_actor"] = {"node": info["node_id"], "status": r.status, "stdout": r.stdout}
        pool.shutdown()

        # requests no node can hold: PlacementError at once, not a pending task
        bad = {"two_80g_gpus": Placement(gpus=2, memory_class="80g"),
               "v100": Placement(gpus=1, accelerator_type="V100"),
               "80g_rtx": Placement(gpus=1, memory_class="80g", accelerator_type="RTX5090"),
               "gpu_on_sandbox": Placement(gpus=1, sandbox=True)}
        for name, p in bad.items():
            t1 = time.perf_counter()
            try:
                where.options(**options(p, name)).remote()
                out["infeasible"][name] = {"raised": False}
            except PlacementError as e:
                out["infeasible"][name] = {"raised": True, "message": str(e), "seconds": time.perf_counter() - t1}
        # ... and a whole probe sweep asking for it fails before Tune starts
        from types import SimpleNamespace

        from squigglray.paths import ArtifactStore

        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                run_trials(ArtifactStore(tmp), SimpleNamespace(experiment_id="exp-x", config_hash="h" * 64),
                           [{"target": "arithmetic", "seed": 0}],
                           SweepOptions(gpus_per_trial=2, memory_class="80g").resolved())
                out["infeasible"]["probe_sweep"] = {"raised": False}
            except PlacementError as e:
                out["infeasible"]["probe_sweep"] = {"raised": True, "message": str(e),
                                                     "seconds": time.perf_counter() - t1}
    finally:
        ray.shutdown()
        cluster.shutdown()
    out["seconds"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------------------------
# fault tolerance: a probe sweep loses a worker node

PROBE_FAMILIES = ["arithmetic"]
PROBE_CONFIG = {
    "families": PROBE_FAMILIES, "seeds": [0, 1], "controls": ["shuffled_labels"],
    "data": {"n_instances": 8},
    "lora": {"r": 2, "alpha": 4.0},
    "finetune": {"steps": 24, "batch_size": 4, "capture_every": 2, "max_seq_len": 320},
    "eval": {"families": PROBE_FAMILIES, "a_per_family": 1, "b_per_family": 1, "capture_batch_size": 2},
    "signature": {"sketch_dim": 8},
}


def _nano_base(folder: Path) -> str:
    from squigglray.families import list_families, sample
    from squigglray.families.trace import format_prompt
    from squigglray.models import build_model, train_tokenizer

    texts = [format_prompt(x.problem) + x.trace for f in list_families() for x in sample(f, 20, 0)]
    tok = train_tokenizer(texts, vocab_size=400)
    build_model("nano", tok, 320, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _steps_on(node, staging: Path, summaries: Path) -> dict[str, int]:
    """probe_id -> last training step that a trial running on `node` reported to Tune, read from the
    trials' result.json in the driver's staging folder (Tune writes it there as results come and copies
    it to storage only when the trial ends), matched by the reporting process: a worker under that
    node's raylet. Probes whose summary is written are finished: Tune reuses a trial's actor (same pid)."""
    import psutil

    try:
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        pids = {c.pid for c in raylet.children(recursive=True)}
    except (psutil.Error, KeyError, IndexError):  # a worker exiting under our feet: look again
        return {}
    steps: dict[str, int] = {}
    for f in staging.rglob("driver_artifacts/*/result.json"):
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:  # a line being written
                continue
            if r.get("pid") in pids and "step" in r and not r.get("done"):
                steps[r["probe_id"]] = max(steps.get(r["probe_id"], 0), int(r["step"]))
    return {p: s for p, s in steps.items() if not (summaries / f"{p}.json").exists()}


def probe_fault() -> dict:
    from squigglray.config import build_config
    from squigglray.jobs.probe import SweepOptions, run_probe_sweep
    from squigglray.probes.config import ProbeConfig

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="probe-fault-"))
    data = tmp / "data"  # one folder every node sees: the artifact store and Tune's storage
    base = _nano_base(tmp / "base")
    cluster = Cluster(initialize_head=True, head_node_args={**HEAD, "num_cpus": 0})  # trials only on workers
    keep = cluster.add_node(num_cpus=1)
    doomed = cluster.add_node(num_cpus=1)
    _start(cluster)
    out: dict = {"nodes": {"keep": keep.node_id, "doomed": doomed.node_id}}
    result: dict = {}

    def sweep():
        try:
            cfg = build_config(ProbeConfig, PROBE_CONFIG)
            result["out"] = run_probe_sweep(cfg, "exp-fault", base, str(data), SweepOptions(max_failures=3))
        except BaseException as e:  # noqa: BLE001 - reported below
            result["error"] = "".join(traceback.format_exception(e))

    th = threading.Thread(target=sweep, daemon=True)
    th.start()
    try:
        # wait until a trial on the doomed node is in the middle of its probe's training, then remove the node
        staging = Path(cluster.head_node.get_session_dir_path()) / "artifacts"
        summaries = data / "experiments" / "exp-fault" / "summaries"
        deadline = time.time() + 90
        steps: dict[str, int] = {}
        while not steps and th.is_alive() and time.time() < deadline:
            time.sleep(0.05)
            steps = _steps_on(doomed, staging, summaries)
        cluster.remove_node(doomed)
        out["removed_at_s"] = time.perf_counter() - t0
        out["killed_mid_probe"] = steps  # probe_id -> the step it had reached
        th.join(timeout=150)
        out["sweep_finished"] = not th.is_alive()
    finally:
        ray.shutdown()
        cluster.shutdown()
    if "error" in result:
        out["error"] = result["error"]
    if "out" in result:
        import pyarrow.parquet as pq

        from squigglray.paths import ArtifactStore

        store = ArtifactStore(str(data))
        table = pq.read_table(store.full(store.aggregated("exp-fault", "probe_summaries.parquet")))
        out["ran"] = result["out"]["ran"]
        out["probe_ids"] = table.column("probe_id").to_pylist()
        out["summary_files"] = sorted(p.name for p in store.local_path(
            f"{store.experiment_dir('exp-fault')}/summaries").iterdir())
        out["manifest_rows"] = result["out"]["manifest"]["row_counts"]["probe_summaries"]
        tune_dir = store.local_path(f"{store.experiment_dir('exp-fault')}/tune")
        out["trial_errors"] = sorted(p.parent.name for p in Path(tune_dir).rglob("error.txt"))
    errors = sorted((data / "experiments" / "exp-fault" / "tune").rglob("error.txt")) if data.exists() else []
    out["error_texts"] = {p.parent.name: p.read_text()[-1500:] for p in errors}
    out["tune_runs"] = sorted(p.name for p in (data / "experiments" / "exp-fault" / "tune").iterdir()) \
        if data.exists() else []
    shutil.rmtree(tmp, ignore_errors=True)
    out["seconds"] = time.perf_counter() - t0
    return out


SCENARIOS = {"placement": placement, "probe_fault": probe_fault}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in SCENARIOS:
        print(f"usage: python tests/cluster_scenarios.py {{{','.join(SCENARIOS)}}}", file=sys.stderr)
        return 2
    out = SCENARIOS[argv[0]]()
    print("SCENARIO_RESULT " + json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
