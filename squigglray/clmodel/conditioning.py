"""Conditioning on the concept inventory (seed 003, "Conditioning module").

Replaces FiLM with cross-attention from every token to K concept slots (one per residual-VQ level,
plus a learned null slot), followed by a gated residual adapter. Why slots: each VQ level is a
separate concept (domain, op family, arguments), and attention lets a token pick the ones it needs.
Why the null slot: a row whose deeper levels are not computed yet (lazy VQ) still has something to
attend to, so attention is never over an empty set. Why the gate: conditioning strength must be
controllable -- it starts weak but nonzero (tanh(0.1)) so training can grow it without the new
module disturbing the encoder's features at initialisation, and strength=0 turns it off.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from squigglray.clmodel.config import CLModelConfig
from squigglray.clmodel.types import RVQOutput


class ConceptConditioning(nn.Module):
    def __init__(self, cfg: CLModelConfig):
        super().__init__()
        D = cfg.d_model
        self.proj = nn.Linear(cfg.rvq_dim, D)
        self.level_emb = nn.Parameter(torch.randn(cfg.num_quantizers, D) * 0.02)
        self.null = nn.Parameter(torch.randn(D) * 0.02)
        self.norm_q, self.norm_kv = nn.RMSNorm(D), nn.RMSNorm(D)
        self.attn = nn.MultiheadAttention(D, cfg.cond_heads, batch_first=True)
        self.adapter = nn.Sequential(nn.Linear(D, 2 * D), nn.SiLU(), nn.Linear(2 * D, D))
        self.gate = nn.Parameter(torch.full((D,), cfg.cond_gate_init))  # per channel, through tanh

    def slots(self, rvq_out: RVQOutput) -> tuple[Tensor, Tensor]:
        """(B, K, D) slots and (B, K) bool mask, K = num_quantizers + 1: slot l (0-based) is VQ level
        l+1 (masked where not computed), the last slot is the null slot (never masked)."""
        B = rvq_out.per_level.shape[0]
        levels = self.proj(rvq_out.per_level) + self.level_emb
        slots = torch.cat([levels, self.null.expand(B, 1, -1)], 1)
        mask = torch.cat([rvq_out.computed.bool(), rvq_out.computed.new_ones(B, 1, dtype=torch.bool)], 1)
        return slots, mask

    def forward(self, H: Tensor, slots: Tensor, slot_mask: Tensor, strength: float = 1.0) -> Tensor:
        """H + strength * tanh(gate) * adapter(cross-attention of tokens over the unmasked slots)."""
        if strength == 0:
            return H
        kv = self.norm_kv(slots)
        ctx, _ = self.attn(self.norm_q(H), kv, kv, key_padding_mask=~slot_mask, need_weights=False)
        return H + strength * torch.tanh(self.gate) * self.adapter(ctx)
