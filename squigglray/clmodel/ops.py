"""The reasoner's typed state and its operator registry (seed 003, "Reasoner").

Why a typed state rather than one hidden vector: the planner needs places with fixed meanings -- a
continuous value, flags a tool can set (a tool's answer may enter only as a constant), scratch
registers that later steps read back, and a subgoal stack that promotion PUSHes and demotion POPs.
The tool's own working expression is a per-row Python string, because a CAS works on text.

Why a registry: every op has a learned implementation (so the model works, and is trained, with no
tool at all) and may also have a tool path (`TOOL_BACKED`); new ops or better learned twins are
swapped in by name without touching the reasoner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from squigglray.clmodel.config import TOOL_BACKED, CLModelConfig
from squigglray.verify.result import ToolClient, ToolResult

FLAGS = ("tool_called", "tool_ok", "goal_done", "subgoal_open")
TOOL_CALLED, TOOL_OK, GOAL_DONE, SUBGOAL_OPEN = range(len(FLAGS))
OUTCOMES = ("none", "ok", "fail", "timeout")  # what a tool call tells the state (as an embedding index)


def _rows(rows: Tensor, like: Tensor) -> Tensor:
    """(B,) bool viewed to broadcast over `like`'s trailing dims."""
    return rows.view(-1, *([1] * (like.dim() - 1)))


@dataclass
class TypedState:
    val: Tensor  # (B, d_state) continuous working value
    bool: Tensor  # (B, n_bool) torch.bool flags, indexed by FLAGS
    mask: Tensor  # (B, scratch_slots) bool: registers in use
    scratch: Tensor  # (B, scratch_slots, d_state)
    wp: Tensor  # (B,) long: next register to write; wraps, so the oldest register is overwritten
    stack: Tensor  # (B, stack_depth, d_state) saved parent contexts
    sp: Tensor  # (B,) long stack pointer (number of open subgoals)
    exprs: list[str | None]  # per row: the tool's current scratch expression
    inputs: list[str | None]  # per row: the original tool input ("verify" compares against it)

    @classmethod
    def initial(cls, val: Tensor, cfg: CLModelConfig, tool_inputs: list[str | None] | None = None) -> TypedState:
        if cfg.n_bool < len(FLAGS):
            raise ValueError(f"ReasonerV2 needs n_bool >= {len(FLAGS)} for the flags {FLAGS}")
        B, dev = val.shape[0], val.device
        inputs = list(tool_inputs) if tool_inputs is not None else [None] * B
        if len(inputs) != B:
            raise ValueError(f"tool_inputs has {len(inputs)} entries for a batch of {B}")
        return cls(val=val, bool=torch.zeros(B, cfg.n_bool, dtype=torch.bool, device=dev),
                   mask=torch.zeros(B, cfg.scratch_slots, dtype=torch.bool, device=dev),
                   scratch=val.new_zeros(B, cfg.scratch_slots, cfg.d_state),
                   wp=torch.zeros(B, dtype=torch.long, device=dev),
                   stack=val.new_zeros(B, cfg.stack_depth, cfg.d_state),
                   sp=torch.zeros(B, dtype=torch.long, device=dev), exprs=list(inputs), inputs=inputs)

    def where(self, rows: Tensor, other: TypedState) -> TypedState:
        """Row-wise choice: `self` where rows, else `other` -- how frozen and no-op rows keep their state."""
        new = {f.name: torch.where(_rows(rows, getattr(self, f.name)), getattr(self, f.name), getattr(other, f.name))
               for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}
        exprs = [a if r else b for r, a, b in zip(rows.tolist(), self.exprs, other.exprs)]
        return replace(self, **new, exprs=exprs)

    def with_flag(self, i: int, value: Tensor, rows: Tensor) -> TypedState:
        flags = self.bool.clone()
        flags[:, i] = torch.where(rows, value, flags[:, i])
        return replace(self, bool=flags)

    def write(self, x: Tensor, rows: Tensor) -> TypedState:
        """Write x (B, d_state) to each selected row's next scratch register (differentiable in x)."""
        sel = F.one_hot(self.wp, self.scratch.shape[1]).bool() & rows[:, None]
        return replace(self, scratch=torch.where(sel[..., None], x[:, None, :], self.scratch), mask=self.mask | sel,
                       wp=torch.where(rows, (self.wp + 1) % self.scratch.shape[1], self.wp))

    def push(self, rows: Tensor) -> TypedState:
        """PUSH_BRANCH: save the current value as the parent context (a full stack overwrites its top)."""
        depth = self.stack.shape[1]
        sel = F.one_hot(self.sp.clamp(max=depth - 1), depth).bool() & rows[:, None]
        sp = torch.where(rows, (self.sp + 1).clamp(max=depth), self.sp)
        st = replace(self, stack=torch.where(sel[..., None], self.val[:, None, :], self.stack), sp=sp)
        return st.with_flag(SUBGOAL_OPEN, sp > 0, rows)

    def pop(self, rows: Tensor) -> TypedState:
        """POP_BRANCH: return to the parent context; the subgoal's value becomes a scratch register, so
        the parent can read the result (call/return). Rows with an empty stack keep their value."""
        rows = rows & (self.sp > 0)
        top = (self.sp - 1).clamp(min=0)
        parent = self.stack.gather(1, top[:, None, None].expand(-1, 1, self.stack.shape[2])).squeeze(1)
        st = self.write(self.val, rows)
        sp = torch.where(rows, top, self.sp)
        st = replace(st, val=torch.where(rows[:, None], parent, self.val), sp=sp)
        return st.with_flag(SUBGOAL_OPEN, sp > 0, rows)


class LearnedOp(nn.Module):
    """Default learned implementation: MLP([val; read of H/slots; argument token; op embedding]) -> update."""

    def __init__(self, in_dim: int, d_state: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 2 * d_state
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, d_state))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class OpRegistry(nn.Module):
    """Ops by name: a learned module each, an optional tool op name, and an op embedding.

    The embedding is fed to the learned module so one module may serve several names (register the
    same module twice) and still know which op it runs. The reasoner's heads are sized by
    `cfg.ops`, so the registry's names must equal them (checked by ReasonerV2)."""

    def __init__(self, base_dim: int, d_state: int, op_dim: int = 16):
        super().__init__()
        self.base_dim, self.d_state, self.op_dim = base_dim, d_state, op_dim
        self.names: list[str] = []
        self.learned = nn.ModuleDict()
        self.emb = nn.ParameterDict()
        self.tools: dict[str, str | None] = {}

    @classmethod
    def from_config(cls, cfg: CLModelConfig, base_dim: int, op_dim: int = 16) -> OpRegistry:
        reg = cls(base_dim, cfg.d_state, op_dim)
        for name in cfg.ops:
            reg.register(name, LearnedOp(base_dim + op_dim, cfg.d_state), TOOL_BACKED.get(name))
        return reg

    @property
    def in_dim(self) -> int:
        """Input width of a learned op: base features plus the op embedding."""
        return self.base_dim + self.op_dim

    def register(self, name: str, learned: nn.Module, tool: str | None = None) -> None:
        """Add an op, or replace an existing op's learned module and tool (its embedding is kept)."""
        if name not in self.names:
            self.names.append(name)
            self.emb[name] = nn.Parameter(torch.randn(self.op_dim) * 0.02)
        self.learned[name] = learned
        self.tools[name] = tool

    def forward(self, base: Tensor) -> Tensor:
        """Every op's learned update (B, num_ops, d_state): all are needed for the straight-through mix."""
        B = base.shape[0]
        return torch.stack([self.learned[n](torch.cat([base, self.emb[n].expand(B, -1)], -1)) for n in self.names], 1)


_SYMBOL = re.compile(r"(?<![A-Za-z0-9_])([A-Za-z])(?![A-Za-z0-9_(])")


def tool_args(tool_op: str, expr: str, original: str | None) -> dict:
    """The ToolBox argument dict: "equivalent" compares the original input with the current scratch;
    diff/integrate take a variable (x if present, else the first one-letter symbol)."""
    if tool_op == "equivalent":
        return {"a": original if original is not None else expr, "b": expr}
    if tool_op in ("diff", "integrate"):
        syms = [s for s in _SYMBOL.findall(expr) if s not in ("E", "I")]
        return {"expr": expr, "var": "x" if "x" in syms or not syms else syms[0]}
    return {"expr": expr}


def call_tool(tools: ToolClient, tool_op: str, args: dict) -> ToolResult:
    """One call with no graph: a raising client counts as a failed call, so no tool can crash a forward."""
    with torch.no_grad():
        try:
            return tools.call(tool_op, args)
        except Exception as e:  # noqa: BLE001 -- any client error is a tool failure, by design
            return ToolResult(op=tool_op, ok=False, error_type="error", error=f"{type(e).__name__}: {e}")


def outcome_index(res: ToolResult) -> int:
    if res.ok:
        return OUTCOMES.index("ok")
    return OUTCOMES.index("timeout" if res.error_type == "timeout" else "fail")
