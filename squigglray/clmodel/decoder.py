"""`UnifiedDecoder` (seed 003): the token and sequence heads on the reasoned representation, plus an
optional rationale head for process supervision.

With C = cfg.num_classes = vocab_size (the default) the token head is a next-token head over the one
vocabulary that the tokenizer, the sequence head and the rationale head all share -- hence
"unified": no task needs its own output space.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from squigglray.clmodel.config import CLModelConfig


class UnifiedDecoder(nn.Module):
    def __init__(self, cfg: CLModelConfig):
        super().__init__()
        D, C = cfg.d_model, cfg.num_classes
        self.tok = nn.Sequential(nn.RMSNorm(D), nn.Linear(D, C))
        self.seq = nn.Sequential(nn.RMSNorm(2 * D), nn.Linear(2 * D, C))
        # off by default so default checkpoints and outputs stay unchanged
        self.rationale = nn.Sequential(nn.RMSNorm(D), nn.Linear(D, C)) if cfg.rationale_head else None

    def forward(self, H_reasoned: Tensor, s_final: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(B,T,C) token logits, (B,C) sequence logits from [s_final; masked mean of H_reasoned], and
        (B,T,C) rationale logits or None."""
        m = mask.to(H_reasoned.dtype).unsqueeze(-1)
        pooled = (H_reasoned * m).sum(1) / m.sum(1).clamp_min(1.0)
        logits_seq = self.seq(torch.cat([s_final, pooled], -1))
        rationale = self.rationale(H_reasoned) if self.rationale is not None else None
        return self.tok(H_reasoned), logits_seq, rationale
