"""Two-speed causal Transformer encoder of CLModel (seed 003, "Encoder").

Why two speeds: every row runs the small Skim Encoder (`skim_layers` blocks), whose output drives the
early routing; only rows routed to a harder branch pay for the Heavy Encoder (`heavy_layers` blocks).
The heavy blocks are stacked on the skim output rather than being a second encoder, so a heavy row
reuses the skim's work (and its KV cache) instead of re-encoding the prompt: the model calls `skim()`,
routes, then `forward(heavy=rows, skim_out=...)`, and the skim blocks never run twice. Heavy blocks run
on the sub-batch of selected rows only; unselected rows keep the skim H.

Blocks are Llama-style: pre-RMSNorm, RoPE, SwiGLU, causal `scaled_dot_product_attention`. Each path
ends in its own RMSNorm (the skim's normalised H is also the heavy blocks' input, so a reused
`skim_out` carries everything the heavy path needs). Positions come from the mask (cumsum - 1), so
left or right padding never shifts a row's positions; pad keys are masked out, every query may attend
to itself (so a leading pad never gets an all-masked softmax row), and H is zero on padding: padding
never changes a row's outputs. h is the mean of H over the mask.

KV cache: with `use_cache=True` the output carries every layer's post-RoPE (k, v) over past + new
tokens, skim layers first, then the heavy layers, the latter only when every row ran heavy (heavy keys
for a subset of rows could not be continued consistently). So with partial heavy, or a skim-only
pass, the cache holds the skim layers only, and continuing it with heavy rows raises ValueError
(re-encode those rows without `past`). With `past`, `ids` are the new tokens only, `mask` covers past
+ new tokens, shape (B, T_past + T_new) (the usual convention, positions continue after each row's
cached valid tokens), and H, h cover the new tokens only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from squigglray.clmodel.config import CLModelConfig
from squigglray.clmodel.types import EncodeOutput, KVCache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of each head (Llama convention); cos/sin (B, 1, T, head_dim/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    """Pre-norm causal self-attention + SwiGLU feed-forward."""

    def __init__(self, d_model: int, n_heads: int, hidden: int):
        super().__init__()
        self.n_heads = n_heads
        self.attn_norm = RMSNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.ffn_norm = RMSNorm(d_model)
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, allowed: Tensor,
                past: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        B, T, D = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(B, T, 3, self.n_heads, D // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, head_dim)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        gate, up = self.gate_up(self.ffn_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up), (k, v)


def _pool(H: Tensor, mask: Tensor) -> Tensor:
    return H.sum(1) / mask.sum(1, keepdim=True).clamp_min(1).to(H.dtype)


class Encoder(nn.Module):
    """Skim blocks on every row, heavy blocks stacked on top for the selected rows (see module doc)."""

    def __init__(self, cfg: CLModelConfig):
        super().__init__()
        self.cfg = cfg
        d, hidden = cfg.d_model, round(cfg.ffn_mult * cfg.d_model)
        self.embed = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.pad_id)
        self.skim_blocks = nn.ModuleList(Block(d, cfg.n_heads, hidden) for _ in range(cfg.skim_layers))
        self.skim_norm = RMSNorm(d)
        self.heavy_blocks = nn.ModuleList(Block(d, cfg.n_heads, hidden) for _ in range(cfg.heavy_layers))
        self.heavy_norm = RMSNorm(d)

    def _prepare(self, ids: Tensor, mask: Tensor, past: KVCache | None):
        """New-token mask, RoPE cos/sin from mask-derived positions, and the (B, 1, T, T_past+T) allowed mask."""
        B, T = ids.shape
        t_past = past[0][0].shape[2] if past else 0
        mask = mask.to(device=ids.device, dtype=torch.bool)
        if mask.shape != (B, t_past + T):
            raise ValueError(f"mask must be (B, T_past + T_new) = {(B, t_past + T)}, got {tuple(mask.shape)}")
        pos = (mask.long().cumsum(1) - 1).clamp_min(0)[:, t_past:]
        head_dim = self.cfg.d_model // self.cfg.n_heads
        inv_freq = self.cfg.rope_theta ** -(torch.arange(0, head_dim, 2, device=ids.device) / head_dim)
        ang = (pos[..., None].float() * inv_freq)[:, None]  # angles in float32 whatever the model dtype
        dtype = self.embed.weight.dtype
        q_idx = torch.arange(T, device=ids.device)[:, None] + t_past
        k_idx = torch.arange(t_past + T, device=ids.device)[None, :]
        allowed = ((k_idx <= q_idx) & mask[:, None, :]) | (k_idx == q_idx)
        return mask[:, t_past:], ang.cos().to(dtype), ang.sin().to(dtype), allowed[:, None]

    @staticmethod
    def _run(blocks: nn.ModuleList, x: Tensor, cos, sin, allowed, past: KVCache | None) -> tuple[Tensor, KVCache]:
        cache = []
        for i, block in enumerate(blocks):
            x, kv = block(x, cos, sin, allowed, past[i] if past else None)
            cache.append(kv)
        return x, cache

    def skim(self, ids: Tensor, mask: Tensor, past: KVCache | None = None, use_cache: bool = False) -> EncodeOutput:
        """Skim layers on every row; `past` may also hold heavy entries (ignored: they go stale)."""
        n_skim = len(self.skim_blocks)
        new_mask, cos, sin, allowed = self._prepare(ids, mask, past)
        x, cache = self._run(self.skim_blocks, self.embed(ids), cos, sin, allowed, past[:n_skim] if past else None)
        H = self.skim_norm(x) * new_mask[..., None]
        heavy = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        return EncodeOutput(h=_pool(H, new_mask), H=H, heavy=heavy, cache=cache if use_cache else None)

    def forward(self, ids: Tensor, mask: Tensor, heavy: Tensor | bool | None = True, past: KVCache | None = None,
                use_cache: bool = False, skim_out: EncodeOutput | None = None) -> EncodeOutput:
        """`heavy`: (B,) bool rows to run the heavy layers on (True: all, False/None: none).
        `skim_out`: an already computed `skim(ids, mask, past, use_cache)` to continue from.
        With heavy_layers == 0 no row runs heavy and the skim output is returned."""
        B = ids.shape[0]
        if heavy is None or isinstance(heavy, bool):
            rows = torch.full((B,), bool(heavy), dtype=torch.bool, device=ids.device)
        else:
            rows = heavy.to(device=ids.device, dtype=torch.bool)
        base = skim_out if skim_out is not None else self.skim(ids, mask, past, use_cache)
        if use_cache and base.cache is None:
            raise ValueError("use_cache=True needs a skim_out computed with use_cache=True")
        cache = base.cache if use_cache else None
        if len(self.heavy_blocks) == 0 or not bool(rows.any()):
            return EncodeOutput(h=base.h, H=base.H, heavy=torch.zeros_like(rows), cache=cache)

        n_skim = len(self.skim_blocks)
        if past and len(past) < n_skim + len(self.heavy_blocks):
            raise ValueError("past holds no heavy-layer cache (a skim-only or partial-heavy pass): "
                             "re-encode the heavy rows without past")
        sel = rows.nonzero().squeeze(1)
        new_mask, cos, sin, allowed = self._prepare(ids, mask, past)
        heavy_past = [(k.index_select(0, sel), v.index_select(0, sel)) for k, v in past[n_skim:]] if past else None
        x, heavy_cache = self._run(self.heavy_blocks, base.H.index_select(0, sel), cos.index_select(0, sel),
                                   sin.index_select(0, sel), allowed.index_select(0, sel), heavy_past)
        sel_mask = new_mask.index_select(0, sel)
        H_sel = self.heavy_norm(x) * sel_mask[..., None]
        H = base.H.index_copy(0, sel, H_sel)
        h = base.h.index_copy(0, sel, _pool(H_sel, sel_mask))
        if use_cache:
            cache = list(base.cache[:n_skim]) + (heavy_cache if bool(rows.all()) else [])
        return EncodeOutput(h=h, H=H, heavy=rows, cache=cache)
