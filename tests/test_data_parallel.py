"""Data-parallel training in the domain layer: two gloo workers (each drawing the same global batch
and training on its half, `CurriculumSampler.shard`) follow the same loss curve as one worker on the
whole batch. Ray Train runs the same loop in its workers (issue 24)."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch.multiprocessing as mp

FAST = ["model.preset=nano", "train.steps=8", "train.batch_size=8", "data.pool_per_family_level=8",
        "data.families=[arithmetic, mod_power, stair_climb]", "train.log_dense_until=8", "train.log_every=4",
        "train.lr=3e-3"]


def _train(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from squigglray.config import build_config
    from squigglray.models import build_model, train_tokenizer
    from squigglray.training import BaseTrainConfig, Trainer
    from squigglray.training.data import CurriculumSampler, build_pool

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = build_config(BaseTrainConfig, {}, FAST)
    pool = build_pool(cfg)
    tok = train_tokenizer(pool.texts(), 400)
    sampler = CurriculumSampler(cfg, pool, tok)
    trainer = Trainer(build_model("nano", tok, 256, seed=0), cfg.train,
                      sampler.shard(rank, world) if world > 1 else sampler.batch)
    trainer.fit()
    if rank == 0:
        with open(out, "w") as f:
            json.dump([(r["loss"], r["grad_norm"], r["tokens_seen"]) for r in trainer.history], f)
    if world > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_follow_the_one_worker_loss_curve(tmp_path):
    curves = {}
    for world in (1, 2):
        out = str(tmp_path / f"world{world}.json")
        mp.spawn(_train, args=(world, _free_port(), out), nprocs=world, join=True)
        with open(out) as f:
            curves[world] = json.load(f)
    one, two = curves[1], curves[2]
    assert len(one) == len(two) >= 4
    for (l1, g1, t1), (l2, g2, t2) in zip(one, two):
        assert t1 == t2  # the same global tokens every step
        assert l2 == pytest.approx(l1, rel=1e-4) and g2 == pytest.approx(g1, rel=1e-3)
    assert one[-1][0] < one[0][0]  # it learned, so the comparison is not of two flat curves
