"""Residual VQ: lazy levels, straight-through, EMA/freeze/dead codes, diversity, append-only ids, health."""

from __future__ import annotations

import math

import pytest
import torch

from squigglray.clmodel.config import CLModelConfig
from squigglray.clmodel.rvq import ResidualVQ

CFG = CLModelConfig.nano()
L, K, DIM = CFG.num_quantizers, CFG.codebook_size, CFG.rvq_dim


def _rvq(**kw):
    return ResidualVQ.from_config(CFG, **kw)


def _x(B=8, seed=0):
    return torch.randn(B, DIM, generator=torch.Generator().manual_seed(seed))


def _clustered(centers, n, g):
    pick = torch.randint(len(centers), (n,), generator=g)
    return centers[pick] + 0.05 * torch.randn(n, centers.shape[1], generator=g)


def test_from_config_and_lazy_level_shapes():
    rvq = _rvq().eval()
    assert (rvq.dim, rvq.codebook_size, rvq.capacity, rvq.num_quantizers) == (DIM, K, CFG.codebook_capacity, L)
    x = _x(4)
    out = rvq(x, levels=torch.tensor([1, 2, 3, 0]))  # 0 is raised to 1: VQ-L1 always
    assert out.z_q.shape == (4, DIM) and out.per_level.shape == (4, L, DIM) and out.indices.shape == (4, L)
    assert out.computed.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]]
    assert ((out.indices >= 0) == out.computed).all() and (out.per_level[~out.computed] == 0).all()
    torch.testing.assert_close(out.z_q, out.per_level.sum(1))
    torch.testing.assert_close(out.residual, x - out.z_q)
    assert out.loss.ndim == 0 and out.stats["perplexity"].shape == (L,)
    assert rvq(x, levels=2).computed.sum(1).tolist() == [2] * 4 and rvq(x).computed.all()
    rvq.active_levels = 2
    assert rvq(x).computed.sum(1).tolist() == [2] * 4 and rvq(x, levels=3).computed.sum(1).max() == 2
    with pytest.raises(ValueError):
        rvq.active_levels = 0


@pytest.mark.parametrize("train", [False, True])
def test_straight_through_and_loss_gradients_reach_x(train):
    rvq = _rvq().train(train)  # in training mode the EMA step updates the codebooks before backward
    x = _x(5).requires_grad_()
    out = rvq(x, levels=torch.tensor([1, 3, 2, 1, 3]))
    out.z_q.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # identity, whatever the row's depth
    x.grad = None
    out = rvq(x)
    (out.loss + out.per_level.sum()).backward()
    assert out.loss > 0 and x.grad.abs().sum() > 0


def test_codebooks_update_in_train_mode_only():
    rvq = _rvq()
    before = {k: v.clone() for k, v in rvq.state_dict().items()}
    rvq.eval()
    rvq(_x(32))
    assert all(torch.equal(before[k], v) for k, v in rvq.state_dict().items())
    rvq.train()
    rvq(_x(32))
    assert not torch.equal(before["embed"], rvq.embed) and rvq.usage(0).sum() == 32


def test_frozen_level_does_not_change():
    rvq = _rvq().train()
    rvq.freeze([0])
    assert rvq.frozen == {0}
    e0, e1 = rvq.embed[0].clone(), rvq.embed[1].clone()
    for s in range(3):
        rvq(_x(32, seed=s))
    assert torch.equal(rvq.embed[0], e0) and not torch.equal(rvq.embed[1], e1)
    rvq.unfreeze()
    assert rvq.frozen == set()
    with pytest.raises(ValueError):
        rvq.freeze([L])


def test_dead_code_is_recycled_onto_the_data():
    rvq = ResidualVQ(4, 8, 1, decay=0.5, dead_code_threshold=0.05, seed=0).train()
    g = torch.Generator().manual_seed(0)
    point = torch.full((4,), 5.0)
    dead_at_start = None
    for _ in range(8):
        out = rvq(point + 0.01 * torch.randn(16, 4, generator=g))
        dead_at_start = dead_at_start if dead_at_start is not None else set(range(8)) - set(out.indices[:, 0].tolist())
    assert dead_at_start  # the batch only ever used one code at first
    moved = (rvq.embed[0, sorted(dead_at_start)] - point).norm(dim=1)
    assert (moved < 0.1).all()  # replaced by vectors of the batch


def test_ema_moves_codes_toward_the_data_and_usage_is_healthy():
    g = torch.Generator().manual_seed(1)
    centers = 2 * torch.randn(64, DIM, generator=g)
    rvq = ResidualVQ(DIM, 64, 1, seed=0)
    held = _clustered(centers, 2048, g)

    def err():
        rvq.eval()
        out = rvq(held)
        rvq.train()
        return float((held - out.z_q).pow(2).sum(1).mean()), out

    e0, _ = err()
    for _ in range(50):
        rvq(_clustered(centers, 512, g))
    e1, out = err()
    assert e1 < e0 / 3
    assert out.indices[:, 0].unique().numel() > 32 and out.stats["perplexity"][0] > 20
    h = rvq.health()[0]
    assert h["used_codes"] > 32 and h["live_codes"] == 64 and h["perplexity"] > 20 and h["dead_fraction"] < 0.5


def test_diversity_loss_larger_for_collapsed_usage():
    rvq = ResidualVQ(DIM, 16, 1, commitment_weight=0.0, diversity_weight=1.0).eval()
    codes = rvq.embed[0, :16] * 10  # spread the codes so soft assignments are nearly hard
    rvq.embed[0, :16] = codes
    uniform = rvq(codes.clone()).loss
    collapsed = rvq(codes[:1].repeat(16, 1)).loss
    assert uniform.abs() < 0.05 and collapsed > math.log(16) - 0.1


def test_extend_equals_full_computation():
    rvq = _rvq()
    rvq.train()
    for s in range(5):  # some non-trivial codebooks
        rvq(_x(64, seed=s))
    rvq.eval()
    x = _x(6, seed=9).requires_grad_()
    full = rvq(x)
    ext = rvq.extend(rvq(x, levels=1), rows=torch.ones(6, dtype=torch.bool), upto=L)
    assert torch.equal(ext.indices, full.indices)
    for a, b in [(ext.z_q, full.z_q), (ext.per_level, full.per_level), (ext.residual, full.residual),
                 (ext.loss, full.loss)]:
        torch.testing.assert_close(a, b)
    rows = torch.tensor([True, False, True, False, False, True])
    part = rvq.extend(rvq(x, levels=torch.tensor([1, 2, 1, 1, 2, 2])), rows=rows, upto=3)
    assert torch.equal(part.indices[rows], full.indices[rows])
    assert part.computed.sum(1).tolist() == [3, 2, 3, 1, 2, 3] and (part.indices[3, 1:] == -1).all()
    part.z_q.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_split_merge_resolve_append_only_and_state_dict():
    rvq = _rvq().eval()
    x = _x(4)
    saved = rvq(x).indices[:, 0]
    a = rvq.split(0, 3)
    b = rvq.split(0, 3)
    assert (a, b) == (K, K + 1) and rvq.live[0, a] and int(rvq.next_id[0]) == K + 2
    assert (rvq.embed[0, a] - rvq.embed[0, 3]).norm() < 0.1 * rvq.embed[0, 3].norm()
    rvq.merge(0, keep=2, drop=3)
    rvq.merge(0, keep=5, drop=2)  # chains: 3 -> 2 -> 5
    assert not rvq.live[0, 3] and not rvq.live[0, 2]
    assert rvq.resolve(0, torch.tensor([3, 2, a, -1, 7])).tolist() == [5, 5, a, -1, 7]
    probe = torch.stack([rvq.embed[0, 3], rvq.embed[0, 2]])
    assert not set(rvq(probe, levels=1).indices[:, 0].tolist()) & {2, 3}  # retired codes are never assigned
    c = rvq.split(0, 5)
    assert c == K + 2  # ids are never reused or renumbered
    assert rvq.resolve(0, saved).tolist() == [5 if int(i) in (2, 3) else int(i) for i in saved]
    with pytest.raises(ValueError):
        rvq.merge(0, keep=5, drop=3)  # already retired
    other = ResidualVQ.from_config(CFG, seed=1)
    other.load_state_dict(rvq.state_dict())
    other.eval()
    assert torch.equal(other(x).indices, rvq(x).indices)
    assert torch.equal(other.resolve(0, torch.tensor([3])), torch.tensor([5])) and other.live.equal(rvq.live)
    small = ResidualVQ(4, 2, 1, capacity=3)
    small.split(0, 0)
    with pytest.raises(RuntimeError):
        small.split(0, 0)


def test_deterministic_with_same_seed():
    def run(seed):
        rvq = _rvq(seed=seed).train()
        outs = [rvq(_x(32, seed=s)).indices for s in range(4)]
        return rvq.state_dict(), outs

    (s1, o1), (s2, o2), (s3, _) = run(0), run(0), run(1)
    assert all(torch.equal(s1[k], s2[k]) for k in s1) and all(torch.equal(a, b) for a, b in zip(o1, o2))
    assert not torch.equal(s1["embed"], s3["embed"])
