"""Two-speed encoder: shapes, padding invariance, heavy routing and skim reuse, KV-cache continuation."""

from __future__ import annotations

import pytest
import torch

from squigglray.clmodel.config import CLModelConfig
from squigglray.clmodel.encoder import Encoder

CFG = CLModelConfig.nano(heavy_layers=2)
D = CFG.d_model


@pytest.fixture
def enc():
    torch.manual_seed(0)
    return Encoder(CFG).eval()


def _ids(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, CFG.vocab_size, (B, T), generator=g)


def test_shapes_and_cache_layout(enc):
    ids, mask = _ids(3, 7), torch.ones(3, 7, dtype=torch.bool)
    s = enc.skim(ids, mask, use_cache=True)
    assert s.h.shape == (3, D) and s.H.shape == (3, 7, D) and s.heavy.dtype == torch.bool and not s.heavy.any()
    assert len(s.cache) == CFG.skim_layers
    hd = D // CFG.n_heads
    assert all(k.shape == v.shape == (3, CFG.n_heads, 7, hd) for k, v in s.cache)
    full = enc(ids, mask, heavy=True, use_cache=True)
    assert full.heavy.all() and len(full.cache) == CFG.skim_layers + CFG.heavy_layers
    part = enc(ids, mask, heavy=torch.tensor([True, False, True]), use_cache=True)
    assert part.heavy.tolist() == [True, False, True] and len(part.cache) == CFG.skim_layers  # partial: skim only
    none = enc(ids, mask, heavy=None)
    assert not none.heavy.any() and torch.equal(none.H, s.H) and none.cache is None


@pytest.mark.parametrize("heavy", [False, True])
def test_padding_does_not_change_a_row(enc, heavy):
    row = _ids(1, 5, seed=1)
    alone = enc(row, torch.ones(1, 5, dtype=torch.bool), heavy=heavy)
    other = _ids(1, 8, seed=2)
    pad = torch.full((1, 3), CFG.pad_id)
    for side in ("right", "left"):
        padded = torch.cat([row, pad], 1) if side == "right" else torch.cat([pad, row], 1)
        ids = torch.cat([padded, other])
        mask = ids != CFG.pad_id
        mask[1] = True
        out = enc(ids, mask, heavy=heavy)
        valid = mask[0]
        torch.testing.assert_close(out.H[0, valid], alone.H[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(out.h[0], alone.h[0], atol=1e-5, rtol=0)
        assert (out.H[0, ~valid] == 0).all()


def test_heavy_rows_differ_and_unselected_rows_keep_skim(enc):
    ids, mask = _ids(4, 6), torch.ones(4, 6, dtype=torch.bool)
    mask[2, 4:] = False
    skim = enc.skim(ids, mask)
    rows = torch.tensor([True, False, True, False])
    out = enc(ids, mask, heavy=rows)
    assert torch.equal(out.H[~rows], skim.H[~rows]) and torch.equal(out.h[~rows], skim.h[~rows])
    assert (out.H[rows] - skim.H[rows]).abs().amax() > 1e-3
    # heavy rows equal what an all-heavy pass gives for them (the sub-batch is independent of the others)
    torch.testing.assert_close(out.H[rows], enc(ids, mask, heavy=True).H[rows], atol=1e-6, rtol=0)


def test_skim_out_is_reused_not_recomputed(enc):
    ids, mask = _ids(2, 5), torch.ones(2, 5, dtype=torch.bool)
    calls = []
    hook = enc.skim_blocks[0].register_forward_hook(lambda *a: calls.append(1))
    skim = enc.skim(ids, mask)
    out = enc(ids, mask, heavy=torch.tensor([True, False]), skim_out=skim)
    hook.remove()
    assert len(calls) == 1
    torch.testing.assert_close(out.H, enc(ids, mask, heavy=torch.tensor([True, False])).H, atol=0, rtol=0)


@pytest.mark.parametrize("heavy", [False, True])
def test_kv_cache_continuation_matches_whole_sequence(enc, heavy):
    ids = _ids(2, 9, seed=3)
    mask = torch.ones(2, 9, dtype=torch.bool)
    ids[1, :2] = CFG.pad_id  # left padding in the prefix of row 1
    mask[1, :2] = False
    whole = enc(ids, mask, heavy=heavy)
    first = enc(ids[:, :5], mask[:, :5], heavy=heavy, use_cache=True)
    second = enc(ids[:, 5:7], mask[:, :7], heavy=heavy, past=first.cache, use_cache=True)
    third = enc(ids[:, 7:], mask, heavy=heavy, past=second.cache)
    H = torch.cat([first.H, second.H, third.H], 1)
    torch.testing.assert_close(H, whole.H, atol=1e-5, rtol=0)
    assert second.cache[0][0].shape[2] == 7


def test_partial_heavy_cache_cannot_continue_heavy(enc):
    ids, mask = _ids(2, 6), torch.ones(2, 6, dtype=torch.bool)
    first = enc(ids[:, :4], mask[:, :4], heavy=torch.tensor([True, False]), use_cache=True)
    skim_next = enc.skim(ids[:, 4:], mask, past=first.cache)  # skim-only continuation works
    torch.testing.assert_close(skim_next.H, enc.skim(ids, mask).H[:, 4:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="heavy"):
        enc(ids[:, 4:], mask, heavy=True, past=first.cache)
    with pytest.raises(ValueError, match="mask"):
        enc.skim(ids[:, 4:], mask[:, 4:], past=first.cache)


def test_gradients_reach_all_parameters(enc):
    enc.train()
    ids, mask = _ids(3, 6), torch.ones(3, 6, dtype=torch.bool)
    out = enc(ids, mask, heavy=torch.tensor([True, False, True]))
    w = torch.randn_like(out.H)
    ((out.H * w).sum() + out.h.sum()).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    enc.zero_grad(set_to_none=True)
    enc.skim(ids, mask).H.sum().backward()  # skim-only pass never touches the heavy parameters
    assert all(p.grad is None for n, p in enc.named_parameters() if n.startswith("heavy"))


def test_deterministic():
    ids, mask = _ids(2, 6), torch.ones(2, 6, dtype=torch.bool)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        e = Encoder(CFG).eval()
        outs.append(e(ids, mask, heavy=torch.tensor([False, True])).H)
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(e(ids, mask).H, e(ids, mask).H)
