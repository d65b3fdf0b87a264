"""FSDP2 (`train.parallel: fsdp`) and DDP on 2 gloo workers, and checkpoints that resume on another
number of workers: a 1-worker run's step-8 checkpoint continued by 2 workers, whose step-16
checkpoint (under FSDP whole states gathered from the shards) is continued by 1 worker again; every
step's loss, gradient norm and geometry match the uninterrupted 1-worker run within float tolerance.
(Ray Train's restart of a killed FSDP group: tests/test_dynamics_job.py.)"""

from __future__ import annotations

import pytest
import torch.multiprocessing as mp

from squigglray.config import build_config
from squigglray.paths import ArtifactStore
from squigglray.training import BaseTrainConfig, train_base

from metrics_scenario import free_port

FAST = [
    "model.preset=nano", "train.steps=24", "train.batch_size=8", "train.checkpoint_every=8", "train.threads=1",
    "data.pool_per_family_level=8", "data.families=[arithmetic, mod_power]", "train.log_dense_until=10",
    "train.log_every=2", "probes.a_per_family=2", "probes.b_per_family=2", "geometry.capture_batch_size=4",
]


def _rows(store: ArtifactStore, rid: str) -> tuple[list[dict], dict]:
    scalars = store.read_parquet(store.run_scalars(rid)).to_pylist()
    geometry = {(r["step"], r["layer"], r["module"], r["metric"]): r["value"]
                for r in store.read_parquet(store.geometry_state(rid)).to_pylist()}
    return scalars, geometry


def _close(a: tuple[list[dict], dict], b: tuple[list[dict], dict]) -> None:
    (s1, g1), (s2, g2) = a, b
    assert [r["step"] for r in s1] == [r["step"] for r in s2]
    for r1, r2 in zip(s1, s2):
        assert r2["tokens_seen"] == r1["tokens_seen"]
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-4), r1["step"]
        assert r2["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-2), r1["step"]
        assert r2["probe_a_loss"] == pytest.approx(r1["probe_a_loss"], rel=1e-3), r1["step"]
    assert g1.keys() == g2.keys()
    far = [k for k in g1 if g2[k] != pytest.approx(g1[k], rel=2e-2, abs=1e-3)]
    assert not far, far[:5]


@pytest.mark.parametrize("parallel", ["fsdp", "ddp"])
def test_two_workers_follow_one_and_checkpoints_resume_on_another_worker_count(parallel, tmp_path):
    cfg = build_config(BaseTrainConfig, {}, [*FAST, f"train.parallel={parallel}"])
    one = ArtifactStore(tmp_path / "one")
    rid = train_base(cfg, one, progress=False).provenance.run_id  # 1 worker, uninterrupted
    two = ArtifactStore(tmp_path / "two")
    ctx = mp.get_context("spawn")
    from fsdp_worker import train_worker

    port, ckpt = free_port(), one.full(f"{one.run_checkpoints(rid)}/step-000008")
    procs = [ctx.Process(target=train_worker, args=(rank, 2, port, cfg.model_dump_json(), two.uri, ckpt))
             for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    _close(_rows(one, rid), _rows(two, rid))  # 1 worker to step 8, then 2 FSDP workers
    back = ArtifactStore(tmp_path / "back")
    train_base(cfg, back, progress=False, resume_from=two.full(f"{two.run_checkpoints(rid)}/step-000016"))
    _close(_rows(one, rid), _rows(back, rid))  # ... whose step-16 checkpoint 1 worker continues
