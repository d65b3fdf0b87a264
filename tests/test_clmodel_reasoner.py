"""ReasonerV2 (seed 003): output shapes, gradient paths, routing guards (hysteresis, promotion budget,
lazy VQ), tool ops (budget, dropout, failures, no grad), determinism, early stop, teacher forcing."""

from __future__ import annotations

import pytest
import sympy as sp
import torch
from torch import nn

from squigglray.clmodel.config import TOOL_BACKED, CLModelConfig
from squigglray.clmodel.conditioning import ConceptConditioning
from squigglray.clmodel.reasoner import ReasonerV2
from squigglray.clmodel.routing import DEMOTE, PROMOTE, EntryRouter, gumbel_st, prompt_stats
from squigglray.clmodel.types import RVQOutput
from squigglray.verify.result import ToolResult


class SympyTools:
    """A real, in-process ToolClient on SymPy; it records every call and whether autograd was on."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.grad_enabled: list[bool] = []

    def call(self, op: str, args: dict) -> ToolResult:
        self.calls.append((op, dict(args)))
        self.grad_enabled.append(torch.is_grad_enabled())
        try:
            if op == "equivalent":
                out = bool(sp.simplify(sp.sympify(args["a"]) - sp.sympify(args["b"])) == 0)
            elif op in ("diff", "integrate"):
                out = str(getattr(sp, op)(sp.sympify(args["expr"]), sp.Symbol(args["var"])))
            elif op == "evaluate":
                out = str(sp.N(sp.sympify(args["expr"])))
            else:
                out = str(getattr(sp, op)(sp.sympify(args["expr"])))
        except (sp.SympifyError, SyntaxError, TypeError) as e:
            return ToolResult(op=op, ok=False, error_type="bad_input", error=str(e))
        return ToolResult(op=op, ok=True, result=out)


class BrokenTools:
    """A client whose transport is down: every call raises."""

    def __init__(self):
        self.n = 0

    def call(self, op: str, args: dict) -> ToolResult:
        self.n += 1
        raise ConnectionError("verifier unreachable")


class ScriptedRouter(nn.Module):
    """A step router with a fixed preference per call (e.g. promote, demote, promote, ...); when that
    move is forbidden it stays (stay ranks second)."""

    def __init__(self, moves: list[int]):
        super().__init__()
        self.moves, self.t = moves, 0

    def forward(self, features, branch):
        logits = torch.tensor([-5.0, 0.0, -5.0]).repeat(features.shape[0], 1)
        logits[:, self.moves[self.t % len(self.moves)]] = 5.0
        self.t += 1
        return logits


def inputs(cfg: CLModelConfig, B: int = 3, T: int = 7, seed: int = 0, levels: int | None = None):
    g = torch.Generator().manual_seed(seed)
    D = cfg.d_model
    H = torch.randn(B, T, D, generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, -2:] = False
    slots = torch.randn(B, cfg.num_slots, D, generator=g)
    slot_mask = torch.ones(B, cfg.num_slots, dtype=torch.bool)
    if levels is not None:
        slot_mask[:, levels:cfg.num_quantizers] = False
    branch0 = nn.functional.one_hot(torch.zeros(B, dtype=torch.long), cfg.num_branches).float()
    return dict(H=H, mask=mask, h=H.mean(1), slots=slots, slot_mask=slot_mask, branch0=branch0, e1=slots[:, 0])


def targets(cfg: CLModelConfig, rows: list[list[str | None]]) -> torch.Tensor:
    return torch.tensor([[cfg.ops.index(o) if o is not None else -100 for o in r] for r in rows])


CONFIGS = {
    "nano": CLModelConfig.nano(),
    "more_ops_steps": CLModelConfig.nano(steps=7, num_branches=4, num_quantizers=4,
                                         ops=CLModelConfig().ops + ("solve", "induct", "case_merge")),
    "one_level_one_branch": CLModelConfig.nano(num_quantizers=1, num_branches=1, steps=2),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("training", [True, False])
def test_every_output_has_its_shape(name, training):
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    r = ReasonerV2(cfg).train(training)
    x = inputs(cfg)
    B, T, D = x["H"].shape
    out = r(**x, tools=SympyTools(), tool_inputs=["x**2 + 2*x + 1", None, "sin(x)**2 + cos(x)**2"])
    S, n, nb = cfg.steps, cfg.num_ops, cfg.num_branches
    expect = {"H_reasoned": (B, T, D), "s_final": (B, D), "stop_logits": (B, S), "action_logits": (B, S, n),
              "arg_logits": (B, S, T), "tool_logits": (B, S), "invalid_logits": (B, S, n), "value": (B, S),
              "branch_logits": (B, S, nb), "branches": (B, S), "promotions": (B,), "demotions": (B,),
              "tool_calls": (B,)}
    for field, shape in expect.items():
        assert tuple(getattr(out, field).shape) == shape, field
    assert torch.isinf(out.arg_logits[0, :, -2:]).all() and torch.isfinite(out.arg_logits[1]).all()
    assert ((out.branches >= 0) & (out.branches < nb)).all()
    assert out.branch_logits.exp().sum(-1).allclose(torch.ones(B, S), atol=1e-4)
    assert len(out.log) == int(out.tool_calls.sum()) + sum(e["error_type"] == "budget" for e in out.log)
    for e in out.log:
        assert set(e) == {"row", "step", "op", "tool_op", "ok", "cached", "elapsed_s", "error_type"}


def test_gradients_reach_every_head_router_and_conditioning_gate():
    cfg = CLModelConfig.nano(ops=("simplify", "expand", "factor", "parse"), hysteresis=0, steps=4)
    torch.manual_seed(3)
    r, cond, entry = ReasonerV2(cfg).train(), ConceptConditioning(cfg), EntryRouter(cfg)
    x = inputs(cfg, B=4)
    rvq = RVQOutput(z_q=torch.randn(4, cfg.rvq_dim), per_level=torch.randn(4, cfg.num_quantizers, cfg.rvq_dim),
                    indices=torch.zeros(4, cfg.num_quantizers, dtype=torch.long),
                    computed=torch.ones(4, cfg.num_quantizers, dtype=torch.bool), residual=torch.zeros(4, cfg.rvq_dim),
                    loss=torch.zeros(()))
    slots, slot_mask = cond.slots(rvq)
    H = cond(x["H"], slots, slot_mask)
    entry_logits = entry(x["h"], prompt_stats(x["mask"]))
    branch0 = gumbel_st(entry_logits, hard=True, training=True)
    out = r(H, x["mask"], x["h"], slots, slot_mask, branch0, slots[:, 0], tools=SympyTools(),
            tool_inputs=["x**2 - 1", "(x+1)*(x-1)", "x*y + x", "2*x + 3*x"])
    # only the downstream outputs: every head must matter through the straight-through paths
    (out.H_reasoned.pow(2).mean() + out.s_final.pow(2).mean()).backward()
    for name, mod in {"action": r.action, "stop": r.stop, "arg": r.arg, "tool": r.tool, "invalid": r.invalid,
                      "value": r.value, "step router": r.router, "entry router": entry}.items():
        grads = [p.grad for p in mod.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    assert cond.gate.grad is not None and cond.gate.grad.abs().sum() > 0


def test_step_router_learns_through_the_branch_adapters():
    """One step: the routed branch reaches s_final only through the branch-weighted adapter."""
    cfg = CLModelConfig.nano(steps=1, hysteresis=0)
    torch.manual_seed(4)
    r = ReasonerV2(cfg).train()
    r(**inputs(cfg)).s_final.pow(2).sum().backward()
    assert any(p.grad.abs().sum() > 0 for p in r.router.parameters())


def _changes(branches: torch.Tensor, b0: torch.Tensor) -> list[list[int]]:
    seq = torch.cat([b0[:, None], branches], 1)
    return [(row[1:] != row[:-1]).nonzero().flatten().tolist() for row in seq]


@pytest.mark.parametrize("hysteresis", [0, 2])
def test_hysteresis_prevents_ping_pong(hysteresis):
    cfg = CLModelConfig.nano(steps=8, hysteresis=hysteresis, max_promotions=8)
    r = ReasonerV2(cfg).eval()
    r.router = ScriptedRouter([PROMOTE, DEMOTE])  # wants A -> B -> A -> B ...
    nn.init.constant_(r.stop.bias, -30.0)  # no early exit
    x = inputs(cfg)
    out = r(**x)
    for steps in _changes(out.branches, torch.zeros(3, dtype=torch.long)):
        gaps = [b - a for a, b in zip(steps, steps[1:])]
        if hysteresis:
            assert len(steps) >= 2 and all(g > hysteresis for g in gaps), steps
        else:  # the guard is what stops it: without a window the router ping-pongs every step
            assert steps == list(range(cfg.steps))
    moves = [len(c) for c in _changes(out.branches, torch.zeros(3, dtype=torch.long))]
    assert (out.promotions + out.demotions).tolist() == moves


@pytest.mark.parametrize("max_promotions", [1, 2])
def test_promotion_budget_holds(max_promotions):
    cfg = CLModelConfig.nano(steps=6, hysteresis=0, max_promotions=max_promotions, num_branches=4, num_quantizers=4)
    r = ReasonerV2(cfg).eval()
    r.router = ScriptedRouter([PROMOTE])
    nn.init.constant_(r.stop.bias, -30.0)
    out = r(**inputs(cfg))
    assert (out.promotions == max_promotions).all() and (out.branches[:, -1] == max_promotions).all()
    assert (out.demotions == 0).all()


def test_need_level_is_called_on_promotion_with_rows_and_level():
    cfg = CLModelConfig.nano(steps=4, hysteresis=0, max_promotions=2)
    r = ReasonerV2(cfg).eval()
    r.router = ScriptedRouter([PROMOTE])
    nn.init.constant_(r.stop.bias, -30.0)
    x = inputs(cfg, levels=1)
    x["slot_mask"][1, 1] = True  # row 1 starts in branch 1 with its level 2 computed
    x["branch0"] = nn.functional.one_hot(torch.tensor([0, 1, 2]), 3).float()
    x["slot_mask"][2, 1:3] = True  # row 2 starts at the top branch with every level
    calls = []
    held = {"slots": x["slots"].clone(), "mask": x["slot_mask"].clone()}

    def need_level(rows, level):
        calls.append((rows.tolist(), level))
        held["mask"][rows, level - 1] = True
        held["slots"][rows, level - 1] = 100.0  # visibly new concepts
        return held["slots"].clone(), held["mask"].clone()

    out = r(**x, need_level=need_level)
    assert calls == [([True, False, False], 2), ([False, True, False], 3), ([True, False, False], 3)]
    assert out.branches.tolist()[0][:2] == [1, 2]
    r.router = ScriptedRouter([PROMOTE])
    assert not torch.allclose(r(**x).s_final, out.s_final), "the returned slots must be read from then on"


def test_tool_ops_call_only_tool_backed_ops_within_budget():
    cfg = CLModelConfig.nano(steps=6, tool_budget=3)
    r = ReasonerV2(cfg).train()
    tools = SympyTools()
    plan = [["simplify", "parse", "expand", "factor", "verify", "compute"],
            ["parse", "rewrite", "differentiate", None, None, None],
            ["simplify", "expand", None, None, None, None]]
    out = r(**inputs(cfg), tools=tools, tool_inputs=["x**2 + 2*x + 1", "x**3 + y", None], op_targets=targets(cfg, plan))
    assert out.tool_calls.tolist() == [3, 1, 0]
    assert [op for op, _ in tools.calls] == ["simplify", "expand", "diff", "factor"]  # step by step, row by row
    assert tools.calls[2][1] == {"expr": "x**3 + y", "var": "x"}
    called = [(e["row"], e["step"], e["op"], e["tool_op"]) for e in out.log if e["error_type"] != "budget"]
    assert sorted(called) == [(0, 0, "simplify", "simplify"), (0, 2, "expand", "expand"), (0, 3, "factor", "factor"),
                              (1, 2, "differentiate", "diff")]
    spent = [(e["row"], e["step"]) for e in out.log if e["error_type"] == "budget"]
    assert spent == [(0, 4), (0, 5)] and all(TOOL_BACKED[e["op"]] == e["tool_op"] for e in out.log)


def test_tool_dropout_one_makes_no_calls():
    cfg = CLModelConfig.nano(steps=4)
    tools = SympyTools()
    out = ReasonerV2(cfg).train()(**inputs(cfg), tools=tools, tool_inputs=["x + x"] * 3, tool_dropout=1.0,
                                  op_targets=targets(cfg, [["simplify"] * 4] * 3))
    assert tools.calls == [] and (out.tool_calls == 0).all() and out.log == []


def test_tool_failure_sets_tool_ok_false_and_does_not_crash():
    cfg = CLModelConfig.nano(steps=2)
    tgt = targets(cfg, [["simplify", "factor"]] * 3)
    r = ReasonerV2(cfg).eval()
    nn.init.constant_(r.stop.bias, -30.0)  # no early exit
    broken = BrokenTools()
    out = r(**inputs(cfg), tools=broken, tool_inputs=["x + x"] * 3, op_targets=tgt, debug=True)
    assert broken.n == 6 and all(not e["ok"] and e["error_type"] == "error" for e in out.log)
    assert all(not row["flags"]["tool_ok"] and row["flags"]["tool_called"] for row in r.last_trace)
    out = r(**inputs(cfg), tools=SympyTools(), tool_inputs=["x + x", "(((", "x**2 - 1"], op_targets=tgt, debug=True)
    ok = {(row["row"], row["step"]): row["flags"]["tool_ok"] for row in r.last_trace}
    assert ok == {(0, 0): True, (0, 1): True, (1, 0): False, (1, 1): False, (2, 0): True, (2, 1): True}
    assert [e["error_type"] for e in out.log if e["row"] == 1] == ["bad_input", "bad_input"]
    assert r.last_trace[-1]["expr"] == "(x - 1)*(x + 1)", "the tool's result becomes the row's scratch expression"


def test_tool_results_carry_no_gradient():
    cfg = CLModelConfig.nano(steps=3, tool_budget=3)
    tgt = targets(cfg, [["simplify", "simplify", "verify"]] * 3)
    grads = {}
    for dropout in (0.0, 1.0):
        torch.manual_seed(0)
        r = ReasonerV2(cfg).train()
        with torch.no_grad():  # the policy's argmax (read by the shadow lookahead) is a non-tool op
            r.action.bias[cfg.ops.index("parse")] = 30.0
        tools = SympyTools()
        out = r(**inputs(cfg), tools=tools, tool_inputs=["x + x"] * 3, op_targets=tgt, tool_dropout=dropout, debug=True)
        out.s_final.sum().backward()
        grads[dropout] = sum(p.grad.abs().sum() for p in r.registry.learned["simplify"].parameters())
        assert not any(tools.grad_enabled), "tools run under no_grad"
        assert all(row["flags"]["goal_done"] == (dropout == 0 and row["step"] == 2) for row in r.last_trace)
    assert grads[0.0] == 0, "where the tool ran, the op's output is the tool's constant"
    assert grads[1.0] > 0, "where the tool is dropped, the learned twin runs and learns"


def test_verify_success_sets_goal_done_and_stops_eval():
    cfg = CLModelConfig.nano(steps=4)
    r = ReasonerV2(cfg).eval()
    nn.init.constant_(r.stop.bias, -30.0)
    tools = SympyTools()
    plan = [["factor", "verify", "expand", "simplify"]] * 3
    out = r(**inputs(cfg), tools=tools, tool_inputs=["2*x + 2"] * 3, op_targets=targets(cfg, plan), debug=True)
    assert [op for op, _ in tools.calls] == ["factor"] * 3 + ["equivalent"] * 3
    assert all(row["op"] is None for row in r.last_trace if row["step"] >= 2), "verified rows exit early"
    assert out.tool_calls.tolist() == [2, 2, 2]


def test_eval_is_deterministic():
    cfg = CLModelConfig.nano(steps=5)
    torch.manual_seed(1)
    r = ReasonerV2(cfg).eval()
    x = inputs(cfg)
    a = r(**x, tools=SympyTools(), tool_inputs=["x*x", None, "x + 1"])
    b = r(**x, tools=SympyTools(), tool_inputs=["x*x", None, "x + 1"])
    for f in ("H_reasoned", "s_final", "stop_logits", "action_logits", "branches", "tool_calls", "value"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    r.train()
    c, d = r(**x), r(**x)
    assert not torch.equal(c.s_final, d.s_final), "training samples (Gumbel noise)"


def test_early_stop_freezes_state_in_eval_only():
    cfg = CLModelConfig.nano(steps=4)
    r = ReasonerV2(cfg).eval()
    x = inputs(cfg)
    nn.init.constant_(r.stop.bias, 30.0)
    out = r(**x, debug=True)
    v0 = r.init_state(torch.cat([x["h"], x["e1"]], -1))
    assert out.stop_logits.shape == (3, cfg.steps) and (out.stop_logits > 0).all()
    assert all(row["op"] is None and torch.equal(row["val"], v0[row["row"]].detach()) for row in r.last_trace)
    assert torch.allclose(out.s_final, r.out(r.norm(v0)))
    nn.init.constant_(r.stop.bias, -30.0)
    r(**x, debug=True)
    assert all(row["op"] is not None for row in r.last_trace)
    nn.init.constant_(r.stop.bias, 30.0)
    r.train()(**x, debug=True)
    assert all(row["op"] is not None for row in r.last_trace), "training never freezes (every step is supervised)"


def test_teacher_forcing_executes_target_ops():
    cfg = CLModelConfig.nano(steps=4)
    torch.manual_seed(2)
    r = ReasonerV2(cfg).train()
    plan = [["parse", "compute", "conclude", None], ["case_split", None, "bound_estimate", "verify"],
            [None, None, None, None]]
    r(**inputs(cfg), op_targets=targets(cfg, plan), debug=True)
    got = [[None] * cfg.steps for _ in plan]
    vals = {}
    for row in r.last_trace:
        got[row["row"]][row["step"]] = row["op"]
        vals[row["row"], row["step"]] = row["val"]
    assert got == plan
    assert torch.equal(vals[1, 0], vals[1, 1]) and not torch.equal(vals[1, 1], vals[1, 2]), "-100 keeps the state"
