"""CLModel parts around the reasoner (seed 003): concept conditioning, routing primitives, the
unified decoder, the typed state and the operator registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squigglray.clmodel.conditioning import ConceptConditioning
from squigglray.clmodel.config import TOOL_BACKED, CLModelConfig
from squigglray.clmodel.decoder import UnifiedDecoder
from squigglray.clmodel.ops import (GOAL_DONE, SUBGOAL_OPEN, TOOL_OK, LearnedOp, OpRegistry, TypedState, call_tool,
                                    outcome_index, tool_args)
from squigglray.clmodel.routing import (DEMOTE, N_FEATURES, N_STATS, PROMOTE, STAY, BranchTracker, EntryRouter,
                                        StepRouter, apply_move, gumbel_st, prompt_stats, route, step_features)
from squigglray.clmodel.types import RVQOutput
from squigglray.verify.result import ToolResult

CONFIGS = {
    "nano": CLModelConfig.nano(),
    "wide": CLModelConfig.nano(d_model=48, cond_heads=4, n_heads=4, num_quantizers=4, num_branches=4),
    "one_level_one_branch": CLModelConfig.nano(num_quantizers=1, num_branches=1),
}


def rvq_out(cfg: CLModelConfig, computed: torch.Tensor, seed: int = 0) -> RVQOutput:
    g = torch.Generator().manual_seed(seed)
    B, L = computed.shape
    per_level = torch.randn(B, L, cfg.rvq_dim, generator=g) * computed[..., None]
    return RVQOutput(z_q=per_level.sum(1), per_level=per_level, indices=torch.where(computed, 0, -1), computed=computed,
                     residual=torch.zeros(B, cfg.rvq_dim), loss=torch.zeros(()))


# -- conditioning ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_slots_one_per_level_plus_unmasked_null(name):
    cfg = CONFIGS[name]
    cond = ConceptConditioning(cfg)
    computed = torch.ones(2, cfg.num_quantizers, dtype=torch.bool)
    computed[1, 1:] = False
    slots, mask = cond.slots(rvq_out(cfg, computed))
    assert slots.shape == (2, cfg.num_slots, cfg.d_model) and mask.shape == (2, cfg.num_slots)
    assert mask.dtype == torch.bool and mask[:, -1].all() and torch.equal(mask[:, :-1], computed)
    H = torch.randn(2, 5, cfg.d_model)
    assert cond(H, slots, mask).shape == H.shape


def test_masked_slots_are_ignored_and_null_slot_keeps_attention_defined():
    cfg = CLModelConfig.nano()
    cond = ConceptConditioning(cfg)
    computed = torch.tensor([[True, False, False]])
    slots, mask = cond.slots(rvq_out(cfg, computed))
    other = slots.clone()
    other[:, 1:3] = 50.0
    H = torch.randn(1, 4, cfg.d_model)
    assert torch.allclose(cond(H, slots, mask), cond(H, other, mask))
    none = torch.zeros(1, cfg.num_slots, dtype=torch.bool)
    none[:, -1] = True
    assert torch.isfinite(cond(H, slots, none)).all()


def test_conditioning_gate_starts_weak_nonzero_and_strength_zero_is_identity():
    cfg = CLModelConfig.nano()
    cond = ConceptConditioning(cfg)
    slots, mask = cond.slots(rvq_out(cfg, torch.ones(2, 3, dtype=torch.bool)))
    H = torch.randn(2, 6, cfg.d_model)
    g = torch.tanh(cond.gate)
    assert (g > 0).all() and (g < 0.2).all()
    assert torch.equal(cond(H, slots, mask, strength=0.0), H)
    full, half = cond(H, slots, mask) - H, cond(H, slots, mask, strength=0.5) - H
    assert full.abs().sum() > 0 and torch.allclose(half, 0.5 * full, atol=1e-6)
    full.pow(2).sum().backward()
    assert cond.gate.grad.abs().sum() > 0 and cond.proj.weight.grad.abs().sum() > 0


# -- routing -----------------------------------------------------------------------------------
def test_prompt_stats_and_entry_router():
    cfg = CLModelConfig.nano()
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    stats = prompt_stats(mask)
    assert stats.shape == (2, N_STATS) and (stats[1] > stats[0]).all()
    entry = EntryRouter(cfg)
    h = torch.randn(2, cfg.d_model)
    logits = entry(h, stats)
    assert logits.shape == (2, cfg.num_branches)
    assert entry(h, stats, e1=torch.randn(2, cfg.d_model)).shape == (2, cfg.num_branches)
    logits.sum().backward()
    assert all(p.grad is not None for n, p in entry.named_parameters() if "norm_e" not in n)


def test_gumbel_st_eval_is_argmax_training_samples_and_both_pass_gradient():
    logits = torch.tensor([[0.0, 2.0, float("-inf")], [3.0, 0.0, 1.0]], requires_grad=True)
    a = gumbel_st(logits, training=False)
    assert torch.equal(a.detach(), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    (a * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert logits.grad.abs().sum() > 0
    torch.manual_seed(0)
    draws = torch.stack([gumbel_st(logits.detach(), training=True) for _ in range(300)])
    assert torch.equal(draws.sum(-1), torch.ones(300, 2)) and (draws[:, 0, 2] == 0).all(), "-inf is never drawn"
    assert 0 < draws[:, 0, 0].sum() < 300, "training samples both finite options"
    soft = gumbel_st(logits.detach(), hard=False, training=False)
    assert torch.allclose(soft.sum(-1), torch.ones(2)) and (soft[:, :2] > 0).all()


def test_moves_clamp_and_tracker_guards():
    cfg = CLModelConfig.nano(num_branches=3, hysteresis=2, max_promotions=1)
    branch = nn.functional.one_hot(torch.tensor([0, 1, 2]), 3).float()
    up = nn.functional.one_hot(torch.full((3,), PROMOTE), 3).float()
    down = nn.functional.one_hot(torch.full((3,), DEMOTE), 3).float()
    assert apply_move(branch, up).argmax(-1).tolist() == [1, 2, 2]
    assert apply_move(branch, down).argmax(-1).tolist() == [0, 0, 1]
    tr = BranchTracker.start(3, "cpu")
    active = torch.tensor([True, True, False])
    allowed = tr.allowed(torch.tensor([0, 1, 2]), active, cfg)
    assert allowed.tolist() == [[False, True, True], [True, True, True], [False, True, False]]
    tr.record(torch.tensor([PROMOTE, STAY, STAY]), cfg)
    assert tr.cooldown.tolist() == [2, 0, 0] and tr.promotions.tolist() == [1, 0, 0]
    mid, everyone = torch.tensor([1, 1, 1]), torch.ones(3, dtype=torch.bool)
    assert tr.allowed(mid, everyone, cfg)[0].tolist() == [False, True, False]
    tr.record(torch.tensor([STAY, STAY, STAY]), cfg)
    tr.record(torch.tensor([STAY, STAY, STAY]), cfg)
    assert tr.allowed(mid, everyone, cfg)[0].tolist() == [True, True, False], \
        "after the window: demotion again, promotion budget spent"


def test_step_features_and_route():
    cfg = CLModelConfig.nano(num_branches=3, hysteresis=0)
    B = 4
    branch = nn.functional.one_hot(torch.tensor([0, 1, 2, 1]), 3).float()
    values = torch.tensor([[0.0, 1.0, 5.0]]).repeat(B, 1)
    feats = step_features(torch.randn(B, 7), torch.randn(B, 7), values, branch, torch.zeros(B, 2), torch.ones(B, 3),
                          lambda_cost=0.25)
    assert feats.shape == (B, N_FEATURES)
    assert feats[:, 4].tolist() == [0.75, 3.75, -0.25, 3.75], "value gap V_{b+1} - V_b - lambda"
    router = StepRouter(cfg)
    torch.manual_seed(0)
    for _ in range(20):
        tr = BranchTracker.start(B, "cpu")
        new, move, logp = route(router, feats, branch, tr, torch.tensor([True, True, True, False]), cfg, training=True)
        assert logp.shape == (B, 3) and torch.allclose(logp.exp().sum(-1), torch.ones(B), atol=1e-4)
        assert move[3] == STAY and move[0] != DEMOTE and move[2] != PROMOTE
        assert torch.equal(new.argmax(-1), (branch.argmax(-1) + move - 1).clamp(0, 2))


# -- decoder -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rationale", [False, True])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_decoder_shapes_and_padding(name, rationale):
    cfg = CLModelConfig.from_dict({**CONFIGS[name].to_dict(), "rationale_head": rationale, "num_classes": 13})
    dec = UnifiedDecoder(cfg)
    H, s = torch.randn(2, 6, cfg.d_model, requires_grad=True), torch.randn(2, cfg.d_model)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    tok, seq, rat = dec(H, s, mask)
    assert tok.shape == (2, 6, 13) and seq.shape == (2, 13)
    assert (rat is not None) == rationale and (rat is None or rat.shape == (2, 6, 13))
    H2 = H.detach().clone()
    H2[0, 4:] = 99.0
    assert torch.allclose(dec(H2, s, mask)[1], seq), "the sequence head pools real tokens only"
    seq.sum().backward()
    assert H.grad[0, :4].abs().sum() > 0 and H.grad[0, 4:].abs().sum() == 0


# -- typed state and registry ------------------------------------------------------------------
def test_typed_state_scratch_wraps_and_stack_push_pop():
    cfg = CLModelConfig.nano(scratch_slots=2, stack_depth=2, d_state=4)
    st = TypedState.initial(torch.ones(2, 4), cfg, ["x", None])
    yes, no = torch.tensor([True, False]), torch.tensor([False, True])
    for k in range(3):
        st = st.write(torch.full((2, 4), float(k)), yes)
    assert st.mask.tolist() == [[True, True], [False, False]]
    assert st.scratch[0, :, 0].tolist() == [2.0, 1.0], "the oldest register is overwritten"
    st = st.push(torch.tensor([True, True]))
    assert st.sp.tolist() == [1, 1] and st.bool[:, SUBGOAL_OPEN].all()
    st = TypedState(**{**st.__dict__, "val": torch.full((2, 4), 7.0)})
    popped = st.pop(yes)
    assert popped.val[0].tolist() == [1.0] * 4 and popped.val[1].tolist() == [7.0] * 4
    assert popped.sp.tolist() == [0, 1] and popped.bool[:, SUBGOAL_OPEN].tolist() == [False, True]
    assert (popped.scratch[0, 1] == 7.0).all(), "the subgoal's result is readable after the return"
    empty = TypedState.initial(torch.ones(1, 4), cfg).pop(torch.tensor([True]))
    assert empty.sp.item() == 0 and (empty.val == 1).all() and not empty.mask.any()
    kept = popped.where(no, st)
    assert torch.equal(kept.val[0], st.val[0]) and torch.equal(kept.val[1], popped.val[1])
    flagged = st.with_flag(TOOL_OK, torch.tensor([True, True]), yes)
    assert flagged.bool[:, TOOL_OK].tolist() == [True, False] and not flagged.bool[:, GOAL_DONE].any()
    with pytest.raises(ValueError, match="tool_inputs"):
        TypedState.initial(torch.ones(2, 4), cfg, ["x"])


def test_registry_from_config_register_and_shared_modules():
    cfg = CLModelConfig.nano()
    reg = OpRegistry.from_config(cfg, base_dim=10)
    assert reg.names == list(cfg.ops) and all(reg.tools[o] == TOOL_BACKED.get(o) for o in cfg.ops)
    out = reg(torch.randn(3, 10))
    assert out.shape == (3, cfg.num_ops, cfg.d_state)
    shared = LearnedOp(reg.in_dim, cfg.d_state)
    reg.register("rewrite", shared, None)
    reg.register("solve", shared, "solve")
    assert reg.names[-1] == "solve" and reg.tools["solve"] == "solve" and len(reg.names) == cfg.num_ops + 1
    out = reg(torch.randn(3, 10))
    i, j = reg.names.index("rewrite"), reg.names.index("solve")
    assert not torch.allclose(out[:, i], out[:, j]), "one module, two ops: the op embedding tells them apart"


def test_tool_args_and_failures():
    assert tool_args("diff", "sin(y) + x*y", None) == {"expr": "sin(y) + x*y", "var": "x"}
    assert tool_args("integrate", "t**2 + E", None) == {"expr": "t**2 + E", "var": "t"}
    assert tool_args("equivalent", "2*x", "x + x") == {"a": "x + x", "b": "2*x"}
    assert tool_args("simplify", "x + x", "y") == {"expr": "x + x"}

    class Raises:
        def call(self, op, args):
            raise TimeoutError("slow")

    res = call_tool(Raises(), "simplify", {"expr": "x"})
    assert not res.ok and res.error_type == "error" and "TimeoutError" in res.error
    assert outcome_index(res) == 2
    assert outcome_index(ToolResult(op="x", ok=False, error_type="timeout")) == 3
    assert outcome_index(ToolResult(op="x", ok=True, result="1")) == 1
