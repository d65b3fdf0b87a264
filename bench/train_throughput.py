"""Tokens/s of squigglray's Trainer against a bare PyTorch loop on the same model and batches, and
of the Trainer inside a one-worker Ray Train run (the dynamics experiment's path).

    python bench/train_throughput.py                 # tiny preset, 40 steps per measured run
    python bench/train_throughput.py --preset nano --steps 100
    python bench/train_throughput.py --ray-train --threads 1   # also the Trainer in a one-CPU Ray Train worker

Both loops do the same work per step (forward, backward, clip, AdamW step). The bare loop gets its
batches pre-collated; the Trainer draws them from the curriculum sampler and runs its callbacks
(progress bar; the trainer keeps its log rows), so its overhead is all included. Runs alternate bare/ours after a
warm-up, and the ratio of medians is printed. Target: overhead <= 10%.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time

import numpy as np
import torch

from squigglray.config import build_config
from squigglray.models import build_model, train_tokenizer
from squigglray.training import BaseTrainConfig, Trainer
from squigglray.training.callbacks import ProgressCallback
from squigglray.training.data import CurriculumSampler, build_pool
from squigglray.training.trainer import lr_at, make_optimizer


def bare_loop(model, batches, cfg) -> float:
    opt = make_optimizer(model, cfg)
    model.train()
    t0 = time.perf_counter()
    for step, batch in enumerate(batches, 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def ours(model, sampler, cfg) -> float:
    from tqdm import tqdm

    sink = io.StringIO()
    bar = ProgressCallback(lambda **kw: tqdm(file=sink, **kw))
    t0 = time.perf_counter()
    Trainer(model, cfg, sampler.batch, [bar], phase_of=lambda s: sampler.phase_at(s).name).fit()
    return time.perf_counter() - t0


def in_ray_train(preset: str, steps: int, repeats: int, threads: int) -> float:
    """Median seconds of `ours` inside a one-worker Ray Train run with `threads` CPUs (the worker's
    start is not timed: each repeat runs after a warm-up in the same worker)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    def loop(config):
        torch.set_num_threads(config["threads"])
        cfg, sampler, fresh = setup(config["preset"], config["steps"])
        ours(fresh(), sampler, cfg.train.model_copy(update={"steps": 5}))  # warm-up
        times = []
        for _ in range(config["repeats"]):
            sampler.rng = np.random.default_rng(cfg.seed)
            times.append(ours(fresh(), sampler, cfg.train))
        with tempfile.TemporaryDirectory() as d:  # Train V2 keeps the metrics of reports with a checkpoint
            ray.train.report({"seconds": statistics.median(times)}, checkpoint=ray.train.Checkpoint.from_directory(d))

    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)
    try:
        result = TorchTrainer(loop, train_loop_config={"preset": preset, "steps": steps, "repeats": repeats,
                                                       "threads": threads},
                              scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": threads}),
                              run_config=ray.train.RunConfig(storage_path=tempfile.mkdtemp(prefix="train_throughput-")),
                              ).fit()
    finally:
        ray.shutdown()
    return result.metrics["seconds"]


def setup(preset: str, steps: int):
    """(config, sampler, a fresh model each call): the same batches and initial weights everywhere."""
    cfg = build_config(BaseTrainConfig, {}, [f"model.preset={preset}", f"train.steps={steps}",
                                             "data.pool_per_family_level=100"])
    pool = build_pool(cfg)
    tok = train_tokenizer(pool.texts(), cfg.model.vocab_size)
    return cfg, CurriculumSampler(cfg, pool, tok), lambda: build_model(preset, tok, cfg.model.max_seq_len, seed=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ray-train", action="store_true", help="also time the Trainer in a one-worker Ray Train run")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (and the Ray Train worker's CPUs); 0: torch's default")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg, sampler, fresh = setup(a.preset, a.steps)
    batches = [sampler.batch(s) for s in range(1, a.steps + 1)]
    tokens = sum(int((b["labels"] != -100).sum()) for b in batches)  # trace tokens; same batches in both loops

    def reset_sampler():
        sampler.rng = np.random.default_rng(cfg.seed)

    bare_loop(fresh(), batches[:5], cfg.train)  # warm-up
    t_bare, t_ours = [], []
    for _ in range(a.repeats):
        t_bare.append(bare_loop(fresh(), batches, cfg.train))
        reset_sampler()
        t_ours.append(ours(fresh(), sampler, cfg.train))
    tb, to = statistics.median(t_bare), statistics.median(t_ours)
    print(f"preset={a.preset} steps={a.steps} batch={cfg.train.batch_size} threads={torch.get_num_threads()}")
    print(f"bare PyTorch loop : {tokens / tb:10.0f} trace tokens/s  (median of {a.repeats}: {tb:.2f} s)")
    print(f"squigglray Trainer: {tokens / to:10.0f} trace tokens/s  (median of {a.repeats}: {to:.2f} s)")
    print(f"ratio ours/bare = {tb / to:.3f}  (overhead {100 * (to / tb - 1):+.1f}%; target <= +10%)")
    if a.ray_train:
        tr = in_ray_train(a.preset, a.steps, a.repeats, torch.get_num_threads())
        print(f"Trainer in Ray Train (1 worker, {torch.get_num_threads()} CPUs): {tokens / tr:10.0f} trace tokens/s  "
              f"(median of {a.repeats}: {tr:.2f} s)")
        print(f"ratio ray-train/bare = {tb / tr:.3f}  (overhead {100 * (tr / tb - 1):+.1f}%; target <= +15%)")


if __name__ == "__main__":
    main()
