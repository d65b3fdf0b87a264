"""Wall time of training with geometry capture (and probes) against the same training without.

    python bench/geometry_overhead.py                      # tiny model, the quickstart cadence, 300 steps
    python bench/geometry_overhead.py --steps 700          # the quickstart's full schedule

Same model init, same batches, same cadence (log-spaced below train.log_dense_until, then every
train.log_every steps); runs alternate plain / capture / capture+probes and the medians are
compared. The capture is the production callback (`GeometryCapture`, capture batch from probe A);
the probes are `ProbeCallback` on probes A and B. Target (issue 4): capture <= +15% wall time.
Fewer steps than the quickstart mean denser capture, so a shorter run overstates the overhead.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from squigglray.config import load_config
from squigglray.eval.probes import ProbeCallback, build_probes, capture_batch
from squigglray.geometry import GeometryCapture
from squigglray.config import packaged_config
from squigglray.models import build_model, train_tokenizer
from squigglray.training import BaseTrainConfig, Trainer
from squigglray.training.cadence import log_steps
from squigglray.training.data import CurriculumSampler, build_pool

PROV = {"run_id": "bench", "seed": 0, "dataset_slice_hash": "-", "config_hash": "-", "package_version": "-"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    cfg = load_config(BaseTrainConfig, packaged_config("quickstart"), [f"train.steps={a.steps}", *a.overrides])
    pool = build_pool(cfg)
    tok = train_tokenizer(pool.texts(), cfg.model.vocab_size)
    sampler = CurriculumSampler(cfg, pool, tok)
    probe_a, probe_b = build_probes(cfg, tok, pool.problems())
    steps = log_steps(cfg.train.steps, cfg.train.log_dense_until, cfg.train.log_every)

    def callbacks(kind: str):
        if kind == "plain":
            return []
        geo = [GeometryCapture(steps, capture_batch(probe_a, cfg.geometry.capture_batch_size), PROV,
                               modules=cfg.geometry.modules)]
        return geo if kind == "geometry" else [*geo, ProbeCallback([probe_a, probe_b])]

    def run(kind: str) -> float:
        sampler.rng = np.random.default_rng(cfg.seed)
        model = build_model(cfg.model.preset, tok, cfg.model.max_seq_len, seed=0)
        t0 = time.perf_counter()
        Trainer(model, cfg.train, sampler.batch, callbacks(kind)).fit()
        return time.perf_counter() - t0

    kinds = ("plain", "geometry", "geometry+probes")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(a.repeats):
        for k in kinds:
            times[k].append(run(k))
            print(f"run {k}: {times[k][-1]:.1f} s", flush=True)  # runs take minutes: report each as it ends
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"preset={cfg.model.preset} steps={cfg.train.steps} batch={cfg.train.batch_size} "
          f"threads={torch.get_num_threads()} captures={len(steps)} (dense until {cfg.train.log_dense_until}, "
          f"then every {cfg.train.log_every}); probe A n={len(probe_a.items)}, probe B n={len(probe_b.items)}")
    for k in kinds:
        print(f"{k:16s}: {med[k]:7.1f} s  (runs: {', '.join(f'{t:.1f}' for t in times[k])})")
    print(f"ratio geometry/plain        = {med['geometry'] / med['plain']:.3f}  (target <= 1.15)")
    print(f"ratio geometry+probes/plain = {med['geometry+probes'] / med['plain']:.3f}")


if __name__ == "__main__":
    main()
