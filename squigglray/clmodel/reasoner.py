"""`ReasonerV2` (seed 003, "Reasoner"): a multi-step planner over a typed state with an operator
registry, optional no-grad tools, and a step router that promotes/demotes between branches.

One step (seed 003's STEP ROUTER LOOP):
  1. read H, the concept slots and the scratch registers with attention; heads give the policy over
     ops, an argument pointer over input tokens, the tool flag, STOP, invalid-op and per-branch values;
  2. every op's learned update is computed (the executed one is picked by a straight-through one-hot,
     so gradients reach the action head); the shadow lookahead re-reads STOP/value after the argmax
     op's update, without tools;
  3. the step router moves the branch by -1/0/+1 (hysteresis, budgets; PUSH/POP of the subgoal stack;
     lazy VQ levels are fetched through `need_level` on promotion);
  4. a tool-backed op may run its tool (budget, tool dropout), whose outcome enters only as a
     constant; the branch's adapter shapes the update; STOP (eval) freezes a row.

Outputs keep CLModel's public contract (`stop_logits`, `action_logits`, `H_reasoned`, `s_final`);
with debug=True a per-row, per-step trace is left in `self.last_trace` (the output's `log` holds
tool calls only, because trainers read it as such).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor, nn

from squigglray.clmodel.config import CLModelConfig
from squigglray.clmodel.ops import (FLAGS, GOAL_DONE, OUTCOMES, TOOL_CALLED, TOOL_OK, OpRegistry, TypedState,
                                    call_tool, outcome_index, tool_args)
from squigglray.clmodel.routing import (DEMOTE, MOVES, PROMOTE, BranchTracker, StepRouter, gumbel_st, route,
                                        step_features)
from squigglray.clmodel.types import ReasonerOutput
from squigglray.verify.result import ToolClient

IGNORE = -100
NeedLevel = Callable[[Tensor, int], tuple[Tensor, Tensor]]


def attend(q: Tensor, kv: Tensor, mask: Tensor) -> Tensor:
    """Single-query attention (B, D) over kv (B, N, D) where mask (B, N); an all-masked row reads zeros."""
    s = (kv @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(q.shape[-1])
    w = s.masked_fill(~mask, torch.finfo(s.dtype).min).softmax(-1) * mask
    return (w.unsqueeze(1) @ kv).squeeze(1)


class ReasonerV2(nn.Module):
    def __init__(self, cfg: CLModelConfig, registry: OpRegistry | None = None):
        super().__init__()
        S, D, nb, n = cfg.d_state, cfg.d_model, cfg.num_branches, cfg.num_ops
        self.cfg = cfg
        self.init_state = nn.Linear(2 * D, S)
        self.norm = nn.RMSNorm(S)
        self.q_tok, self.q_slot, self.q_scratch = nn.Linear(S, D), nn.Linear(S, D), nn.Linear(S, S)
        self.trunk = nn.Sequential(nn.Linear(2 * S + 2 * D + cfg.n_bool + nb, D), nn.SiLU())
        self.action, self.invalid = nn.Linear(D, n), nn.Linear(D, n)
        self.tool, self.stop, self.value = nn.Linear(D, 1), nn.Linear(D, 1), nn.Linear(D, nb)
        self.arg = nn.Linear(D, D)  # pointer query over the input tokens
        self.registry = registry if registry is not None else OpRegistry.from_config(cfg, base_dim=S + 2 * D)
        if self.registry.names != list(cfg.ops):
            raise ValueError(f"registry ops {self.registry.names} differ from cfg.ops {list(cfg.ops)}")
        self.outcome = nn.Embedding(len(OUTCOMES), S)  # a tool's answer enters the state only as this constant
        rank = max(4, S // 8)  # tiny per-branch sub-tower adapters
        self.adapters = nn.ModuleList(nn.Sequential(nn.Linear(S, rank, bias=False), nn.Linear(rank, S, bias=False))
                                      for _ in range(nb))
        self.router = StepRouter(cfg)
        self.out = nn.Linear(S, D)
        self.gate = nn.Parameter(torch.full((D,), 0.1))  # H_reasoned = H + tanh(gate) * s_final
        self._debug_steps: list[dict] | None = None  # set by a debug=True forward, read via last_trace

    def forward(self, H: Tensor, mask: Tensor, h: Tensor, slots: Tensor, slot_mask: Tensor, branch0: Tensor,
                e1: Tensor, need_level: NeedLevel | None = None, tools: ToolClient | None = None,
                tool_inputs: list[str | None] | None = None, op_targets: Tensor | None = None,
                tool_dropout: float = 0.0, debug: bool = False) -> ReasonerOutput:
        cfg, B, dev = self.cfg, H.shape[0], H.device
        mask, slot_mask = mask.bool(), slot_mask.bool()
        st = TypedState.initial(self.init_state(torch.cat([h, e1], -1)), cfg, tool_inputs)
        branch, tracker = branch0, BranchTracker.start(B, dev)
        slots, slot_mask = self._ensure_levels(torch.ones(B, dtype=torch.bool, device=dev), branch.argmax(-1),
                                               slots, slot_mask, need_level)
        stopped = torch.zeros(B, dtype=torch.bool, device=dev)
        calls = torch.zeros(B, dtype=torch.long, device=dev)
        rec: dict[str, list[Tensor]] = {k: [] for k in ("stop", "action", "arg", "tool", "invalid", "value", "blog",
                                                        "branch")}
        log: list[dict] = []
        self._debug_steps = [] if debug else None
        for t in range(cfg.steps):
            tgt = op_targets[:, t] if op_targets is not None else None
            v, rH, rS, ctx = self._read(st, H, mask, slots, slot_mask, branch)
            z = self.trunk(ctx)
            stop, action, invalid = self.stop(z).squeeze(-1), self.action(z), self.invalid(z)
            tool_logit, values = self.tool(z).squeeze(-1), self.value(z)
            arg_logits = (H @ self.arg(z).unsqueeze(-1)).squeeze(-1).div(math.sqrt(H.shape[-1]))
            arg_logits = arg_logits.masked_fill(~mask, float("-inf"))
            if not self.training:  # early exit: STOP fired or the goal was verified
                stopped = stopped | (stop.sigmoid() > 0.5) | st.bool[:, GOAL_DONE]
            active = ~stopped if tgt is None else ~stopped & (tgt != IGNORE)
            if tgt is None:
                op_hot = gumbel_st(action, cfg.gumbel_tau, hard=True, training=self.training)
            else:
                op_hot = nn.functional.one_hot(tgt.clamp(min=0), cfg.num_ops).to(action.dtype)
            exec_idx = op_hot.argmax(-1)
            arg_hot = gumbel_st(arg_logits, cfg.gumbel_tau, hard=True, training=self.training)
            arg = (arg_hot.unsqueeze(1) @ H).squeeze(1)
            op_out = self.registry(torch.cat([v, rH + rS, arg], -1))  # (B, num_ops, d_state)

            budget = torch.stack([(cfg.max_promotions - tracker.promotions) / max(1, cfg.max_promotions),
                                  (cfg.tool_budget - calls) / max(1, cfg.tool_budget),
                                  torch.full_like(calls, cfg.steps - t) / cfg.steps], -1).to(H.dtype)
            look = self._shadow(st.val, ctx, op_out, action, values, branch)
            feats = step_features(action, invalid, values, branch, look, budget, cfg.lambda_cost)
            new_branch, move, blog = route(self.router, feats, branch, tracker, active, cfg, self.training)
            slots, slot_mask = self._ensure_levels(move == PROMOTE, new_branch.argmax(-1), slots, slot_mask, need_level)
            nxt = st.push(move == PROMOTE).pop(move == DEMOTE)

            gate, outcome, nxt = self._tools(nxt, exec_idx, tool_logit, active, tools, tgt is not None, tool_dropout,
                                             calls, t, log)
            executed = op_hot.detach().gt(0.5).unsqueeze(-1)
            op_out = op_out + (gate[:, None, None] * executed) * (self.outcome(outcome)[:, None, :] - op_out)
            upd = (op_hot.unsqueeze(-1) * op_out).sum(1)
            upd = upd + sum(new_branch[:, b:b + 1] * ad(upd) for b, ad in enumerate(self.adapters))
            nxt = replace(nxt, val=nxt.val + upd).write(upd, active)
            st, branch = nxt.where(active, st), new_branch
            for k, x in zip(rec, (stop, action, arg_logits, tool_logit, invalid, (values * branch).sum(-1), blog,
                                  branch.argmax(-1))):
                rec[k].append(x)
            if debug:
                self._debug_steps.append({"step": t, "active": active, "op": exec_idx, "arg": arg_hot.argmax(-1),
                                          "branch": branch.argmax(-1), "move": move, "stop_p": stop.detach().sigmoid(),
                                          "flags": st.bool, "exprs": list(st.exprs), "val": st.val.detach()})
        s_final = self.out(self.norm(st.val))
        H_reasoned = H + torch.tanh(self.gate) * s_final.unsqueeze(1) * mask.unsqueeze(-1).to(H.dtype)
        seq = {k: torch.stack(x, 1) for k, x in rec.items()}
        return ReasonerOutput(
            H_reasoned=H_reasoned, s_final=s_final, stop_logits=seq["stop"], action_logits=seq["action"],
            arg_logits=seq["arg"], tool_logits=seq["tool"], invalid_logits=seq["invalid"], value=seq["value"],
            branch_logits=seq["blog"], branches=seq["branch"], promotions=tracker.promotions,
            demotions=tracker.demotions, tool_calls=calls, log=log)

    def _read(self, st: TypedState, H, mask, slots, slot_mask, branch):
        """Attention reads of tokens, concept slots and scratch; the context is [val; reads; flags; branch]."""
        v = self.norm(st.val)
        rH, rS = attend(self.q_tok(v), H, mask), attend(self.q_slot(v), slots, slot_mask)
        rX = attend(self.q_scratch(v), st.scratch, st.mask)
        return v, rH, rS, torch.cat([v, rH, rS, rX, st.bool.to(v.dtype), branch], -1)

    def _shadow(self, val: Tensor, ctx: Tensor, op_out: Tensor, action: Tensor, values: Tensor,
                branch: Tensor) -> Tensor:
        """Shadow one-step lookahead L_b (no tools): STOP probability and value change of the active
        branch after the argmax op's update, re-using this step's reads (cheap)."""
        S = val.shape[-1]
        best = op_out.gather(1, action.argmax(-1)[:, None, None].expand(-1, 1, S)).squeeze(1)
        z_next = self.trunk(torch.cat([self.norm(val + best), ctx[:, S:]], -1))
        dv = ((self.value(z_next) - values) * branch).sum(-1)
        return torch.stack([self.stop(z_next).squeeze(-1).sigmoid(), dv], -1)

    def _ensure_levels(self, rows: Tensor, bidx: Tensor, slots: Tensor, slot_mask: Tensor, need_level):
        """Lazy VQ: for rows whose branch reads a level that is missing, ask `need_level(rows, level)`
        (level is 1-based: VQ-L{level}, slot level-1) and use the returned slots from then on."""
        if need_level is None:
            return slots, slot_mask
        reads = (bidx + 1).clamp(max=self.cfg.num_quantizers)
        for level in range(2, self.cfg.num_quantizers + 1):
            want = rows & (reads >= level) & ~slot_mask[:, level - 1]
            if want.any():
                slots, slot_mask = need_level(want, level)
                slot_mask = slot_mask.bool()
        return slots, slot_mask

    def _tools(self, st: TypedState, exec_idx: Tensor, tool_logit: Tensor, active: Tensor, tools, teacher: bool,
               tool_dropout: float, calls: Tensor, step: int, log: list[dict]):
        """Run the tool path where allowed. Returns the straight-through tool gate (B,), the outcome
        index (B,) (a constant), and the state with flags/expressions updated. `calls` is updated in place."""
        B, names = exec_idx.shape[0], self.registry.names
        backed = torch.tensor([self.registry.tools[n] is not None for n in names], device=exec_idx.device)[exec_idx]
        has_input = torch.tensor([e is not None for e in st.exprs], dtype=torch.bool, device=exec_idx.device)
        open_ = backed & active & has_input & (tools is not None)
        if tool_dropout > 0:
            open_ = open_ & (torch.rand(B, device=exec_idx.device) >= tool_dropout)
        fire = open_ & (torch.ones_like(open_) if teacher else (tool_logit.detach() > 0))
        run = fire & (calls < self.cfg.tool_budget)
        outcome = torch.zeros(B, dtype=torch.long, device=exec_idx.device)
        ok, done, exprs = torch.zeros_like(run), torch.zeros_like(run), list(st.exprs)
        for r in (fire & ~run).nonzero().flatten().tolist():
            op = names[exec_idx[r]]
            log.append({"row": r, "step": step, "op": op, "tool_op": self.registry.tools[op], "ok": False,
                        "cached": False, "elapsed_s": 0.0, "error_type": "budget"})
        for r in run.nonzero().flatten().tolist():
            op = names[exec_idx[r]]
            tool_op = self.registry.tools[op]
            res = call_tool(tools, tool_op, tool_args(tool_op, exprs[r], st.inputs[r]))
            outcome[r], ok[r] = outcome_index(res), res.ok
            if res.ok and tool_op == "equivalent":
                done[r] = res.result is True
            elif res.ok and res.result is not None:
                exprs[r] = str(res.result)
            log.append({"row": r, "step": step, "op": op, "tool_op": tool_op, "ok": res.ok, "cached": res.cached,
                        "elapsed_s": res.elapsed_s, "error_type": res.error_type})
        calls += run.long()
        gate = run.to(tool_logit.dtype)
        if self.training and not teacher:  # straight-through: the tool head learns from the task loss too
            sig = tool_logit.sigmoid()
            gate = gate + open_.to(sig.dtype) * (sig - sig.detach())
        st = replace(st, exprs=exprs).with_flag(TOOL_CALLED, run, run).with_flag(TOOL_OK, ok, run)
        return gate, outcome, st.with_flag(GOAL_DONE, done, done)

    @property
    def last_trace(self) -> list[dict] | None:
        """The last debug=True forward, one dict per row and step after the step ran: executed op (None
        when the row did nothing), argument token, branch, router move, STOP prob, flags, the tool's
        scratch expression and val. Built on access, so debug forwards in training stay cheap."""
        if self._debug_steps is None:
            return None
        names = self.registry.names
        return [{"row": r, "step": d["step"], "op": names[d["op"][r]] if d["active"][r] else None,
                 "arg": int(d["arg"][r]), "branch": int(d["branch"][r]), "move": MOVES[d["move"][r]],
                 "stop_p": float(d["stop_p"][r]), "flags": dict(zip(FLAGS, d["flags"][r].tolist())),
                 "expr": d["exprs"][r], "val": d["val"][r]} for d in self._debug_steps for r in range(len(d["exprs"]))]
