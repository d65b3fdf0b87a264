"""The real-scale dynamics path in minutes, with no internet: OpenMathReasoning-format shards
(generated), a slice of them, the 350M preset streamed through Ray Data into Ray Train workers with
geometry capture on, then events and the report; prints tokens/s, peak GPU memory and the capture's
overhead, and exits non-zero when anything fails.

    scripts/gpu_check.sh                       # a lent GPU: examples/dynamics_350m.yaml, bf16, 1 worker
    scripts/gpu_check.sh --device cpu          # the same code path at reduced width, 2 gloo workers (the suite runs it)

On cuda: the full 350m preset at context 2,048, a few steps of 16 rows (bf16 autocast), one seed on
the one GPU. On cpu: the preset's structure at width 64 and context 256, 2 data-parallel workers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

REDUCED = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 192}


def settings(device: str, steps: int) -> tuple[list[str], dict]:
    """(config overrides, DynamicsOptions fields) of the check on `device`."""
    common = [f"train.steps={steps}", "train.log_dense_until=4", "train.log_every=2", "train.warmup_steps=2",
              f"train.device={device}", "probes.a_per_family=2", "probes.b_per_family=2", "geometry.capture_batch_size=4"]
    if device == "cpu":
        return common + [f"model.shape={json.dumps(REDUCED)}", "model.max_seq_len=256", "model.vocab_size=512",
                         "train.global_batch_tokens=2048", "train.micro_batch_size=2", "train.precision=fp32",
                         "data.stream_memory_mb=16", "probes.max_new_tokens=16"], {"seeds": [0], "workers_per_trial": 2}
    return common + ["train.global_batch_tokens=32768", "train.micro_batch_size=8", "train.precision=bf16"], \
        {"seeds": [0], "workers_per_trial": 1, "gpus_per_trial": 1}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--steps", type=int, default=0, help="0: 12 on cuda, 6 on cpu")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "examples/dynamics_350m.yaml"))
    ap.add_argument("--data-dir", default="", help="default: a temporary folder")
    a = ap.parse_args(argv)
    from squigglray.config import load_config
    from squigglray.data.config import SliceConfig
    from squigglray.data.omr_sample import write_omr_shards
    from squigglray.jobs.dynamics import DynamicsOptions, run_dynamics
    from squigglray.jobs.slice import build_slice
    from squigglray.paths import ArtifactStore
    from squigglray.training import BaseTrainConfig

    root = Path(a.data_dir or tempfile.mkdtemp(prefix="gpu_check-"))
    write_omr_shards(root / "omr", 1200, shards=2, seed=0, words=120)
    manifest = build_slice(SliceConfig.model_validate({
        "name": "gpu-check", "seed": 0, "quotas": {"train": 400, "probe_a": 4, "holdout": 8}, "fill": {"min_train": 0},
        "sources": [{"kind": "omr", "path": str(root / "omr")}]}), str(root / "data"), log=lambda *_: None)
    overrides, options = settings(a.device, a.steps or (12 if a.device == "cuda" else 6))
    cfg = load_config(BaseTrainConfig, a.config, ["data.parquet=null", f"data.slice={manifest.slice_id}", *overrides])
    out = run_dynamics(cfg, DynamicsOptions(checkpoint_every=cfg.train.steps // 2, n_perm=20, **options),
                       str(root / "data"))
    store = ArtifactStore(root / "data")
    rid = out["runs"][0]
    res = store.read_json(f"runs/{rid}/resources.json")
    peak = f"{res['peak_memory_gib']:.1f} GiB" if res["peak_memory_gib"] is not None else "n/a (cpu)"
    print(f"gpu_check {a.device}: {cfg.model.preset} {'(reduced width) ' if cfg.model.shape else ''}from slice "
          f"{manifest.slice_id}, {res['world_size']} worker(s), {cfg.train.steps} steps")
    print(f"  tokens/s {res['tokens_per_s']:,.0f} (all workers' trained tokens after the first logged step)")
    print(f"  peak memory {peak}; capture overhead {100 * res['capture_overhead']:+.1f}% "
          f"({res['capture_seconds']:.2f} s at a capture every {cfg.train.log_every} steps); "
          f"probes {res['probe_seconds']:.2f} s")
    print(f"  events {store.read_parquet(store.events_candidates(rid)).num_rows}; "
          f"report {store.full(store.experiment_dir(out['experiment_id']))}/report.md")
    return {**res, "run_id": rid, "experiment_id": out["experiment_id"], "data_dir": str(root)}


if __name__ == "__main__":
    main()
