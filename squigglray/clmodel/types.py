"""The values passed between CLModel's parts. Each part sits behind one of these, so any part can be
swapped for another that fills the same fields (seed 003: "swap implementations behind the same
interfaces")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

KVCache = list[tuple[Tensor, Tensor]]  # per layer: keys, values (B, heads, T_past, head_dim)


@dataclass
class EncodeOutput:
    h: Tensor  # (B, D) pooled over the mask
    H: Tensor  # (B, T, D) per token
    heavy: Tensor  # (B,) bool: rows that ran the heavy layers
    cache: KVCache | None = None  # when use_cache: keys/values of every layer (skim then heavy)


@dataclass
class RVQOutput:
    z_q: Tensor  # (B, dim) sum of the computed levels' codes (straight-through to the input)
    per_level: Tensor  # (B, L, dim) each level's code vector, zeros where not computed
    indices: Tensor  # (B, L) long code ids, -1 where a level was not computed
    computed: Tensor  # (B, L) bool
    residual: Tensor  # (B, dim) what is left after the computed levels (for lazy deeper levels)
    loss: Tensor  # scalar: commitment + diversity over the computed levels
    stats: dict[str, Any] = field(default_factory=dict)  # per-level perplexity/usage of this batch


@dataclass
class ReasonerOutput:
    H_reasoned: Tensor  # (B, T, D)
    s_final: Tensor  # (B, D)
    stop_logits: Tensor  # (B, steps)
    action_logits: Tensor  # (B, steps, num_ops)
    arg_logits: Tensor  # (B, steps, T) pointer over input tokens, -inf on padding
    tool_logits: Tensor  # (B, steps) use-the-tool flag
    invalid_logits: Tensor  # (B, steps, num_ops)
    value: Tensor  # (B, steps) value head of the active branch
    branch_logits: Tensor  # (B, steps, num_branches) step router's view, for aux losses
    branches: Tensor  # (B, steps) long: active branch at each step
    promotions: Tensor  # (B,) long
    demotions: Tensor  # (B,) long
    tool_calls: Tensor  # (B,) long
    log: list[dict] = field(default_factory=list)  # per tool call: row, step, op, ok, cached, elapsed_s


@dataclass
class CLModelOutput:
    logits_tok: Tensor  # (B, T, C)
    logits_seq: Tensor  # (B, C)
    vq_loss: Tensor  # scalar
    indices: list[Tensor]  # one (B,) long tensor per quantizer, -1 where the level was not computed
    stop_logits: Tensor  # (B, steps)
    action_logits: Tensor  # (B, steps, num_ops)
    debug: dict[str, Any] | None = None  # only with forward(debug=True)
