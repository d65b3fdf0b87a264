"""Wall time of training with geometry capture (and probes) against the same training without.

    python bench/geometry_overhead.py                      # tiny model, the quickstart cadence, 300 steps
    python bench/geometry_overhead.py --steps 700          # the quickstart's full schedule
    python bench/geometry_overhead.py --estimate 350m      # no run: the analytic cost at a real scale

Same model init, same batches, same cadence (log-spaced below train.log_dense_until, then every
train.log_every steps); runs alternate plain / capture / capture+probes and the medians are
compared. The capture is the production callback (`GeometryCapture`, capture batch from probe A);
the probes are `ProbeCallback` on probes A and B. Target (issue 4): capture <= +15% wall time.
Fewer steps than the quickstart mean denser capture, so a shorter run overstates the overhead.

`--estimate PRESET` counts floating-point operations instead (a real-scale model does not train on
a CPU): training 6 N per token; a capture's extra forward of the capture batch 2 N per token; per
watched m x n matrix (n <= m) the exact spectrum as float64 Gram (2 m n^2) plus symmetric
eigenvalues (~9 n^3), or block power iteration (iterations x 4 m n x 8 float32); per hidden state
(t tokens x h) an SVD for the effective rank and linear CKA for the drift (~6 t h^2 float64). The
overhead is the captures' sum over the steps' sum at the quickstart cadence. Memory of the lag
copies: watched weights and gradients, and the hidden states of the capture batch.
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


def estimate(cfg: BaseTrainConfig, preset: str, tokens_per_step: int, capture_tokens: int) -> None:
    """Print the analytic capture overhead of `preset` (see the module docstring)."""
    from squigglray.geometry.metrics import POWER_BLOCK
    from squigglray.models.presets import REAL_VOCAB
    from squigglray.models.sizing import dims, param_count

    h, layers, kv, inter = dims(preset)
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (inter, h), "mlp.up_proj": (inter, h),
              "mlp.down_proj": (h, inter)}
    n_params = param_count(preset, REAL_VOCAB)
    steps = log_steps(cfg.train.steps, cfg.train.log_dense_until, cfg.train.log_every)
    train = 6 * n_params * tokens_per_step * cfg.train.steps
    print(f"{preset}: {n_params / 1e6:.0f}M parameters, {cfg.train.steps} steps of {tokens_per_step:,} tokens, "
          f"{len(steps)} captures of {capture_tokens:,} tokens; training {train:.2e} FLOP")
    for label, g in (("exact, every layer, CPU float32 copies", dict(spectral="exact", layer_stride=1)),
                     ("power (4 it.), every layer", dict(spectral="power", layer_stride=1)),
                     ("power (4 it.), every 4th layer, bf16 copies", dict(spectral="power", layer_stride=4))):
        watched = len([i for i in range(layers) if i % g["layer_stride"] == 0 or i == layers - 1])
        mats = [shapes[m] for m in cfg.geometry.modules if m in shapes]
        if g["spectral"] == "exact":
            per = sum(2 * max(m, n) * min(m, n) ** 2 + 9 * min(m, n) ** 3 for m, n in mats)
        else:
            per = sum(4 * 4 * m * n * POWER_BLOCK for m, n in mats)
        hidden = (watched + 2) * 6 * capture_tokens * h * h
        capture = 2 * n_params * capture_tokens + watched * per + hidden
        fp64 = hidden + (watched * per if g["spectral"] == "exact" else 0)
        weights = watched * sum(m * n for m, n in mats)
        half = g["layer_stride"] > 1  # the third row keeps gradients and hidden states in bfloat16
        copies = weights * 4 + weights * (2 if half else 4) + (watched + 2) * capture_tokens * h * (2 if half else 4)
        print(f"  {label:45s}: {capture:.2e} FLOP a capture ({fp64:.1e} in float64), overhead "
              f"{len(steps) * capture / train:6.2%}; lag copies {copies / 2**30:.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--estimate", metavar="PRESET", help="print the analytic overhead of PRESET instead of running")
    ap.add_argument("--tokens-per-step", type=int, default=256 * 2048, help="global batch, for --estimate")
    a = ap.parse_args()
    cfg = load_config(BaseTrainConfig, packaged_config("quickstart"), [f"train.steps={a.steps}", *a.overrides])
    if a.estimate:
        estimate(cfg, a.estimate, a.tokens_per_step, cfg.geometry.capture_batch_size * 2048)
        return
    pool = build_pool(cfg)
    tok = train_tokenizer(pool.texts(), cfg.model.vocab_size)
    sampler = CurriculumSampler(cfg, pool, tok)
    probe_a, probe_b = build_probes(cfg, tok, pool.problems())
    steps = log_steps(cfg.train.steps, cfg.train.log_dense_until, cfg.train.log_every)

    def callbacks(kind: str):
        if kind == "plain":
            return []
        geo = [GeometryCapture(steps, capture_batch(probe_a, cfg.geometry.capture_batch_size), PROV,
                               **cfg.geometry.capture_options())]
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
