"""Seed 001's one-at-a-time procedure, kept as the yardstick for the batched optimizer.

Per example: torch's AdamW on c and the seed's `generator_loss_fn` per mode (labels -100 on the
prompt, the model's own shifted loss over every position). The batched optimizer must reach the
same losses from the same initialization (tested), and `bench/dcm_batching.py` times both.
"""

from __future__ import annotations

import torch

from squigglray.dcm.config import DcmConfig
from squigglray.dcm.data import QAPair
from squigglray.dcm.optimizer import init_slots, targets_for
from squigglray.dcm.slots import Frozen, slot_prompt


def generator_loss(fz: Frozen, target: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    full = torch.cat([prompt.to(fz.embed.dtype), fz.embed[target]])[None]  # fp32 slots, a bf16 model on GPU
    labels = torch.full((1, full.shape[1]), -100, dtype=torch.long, device=fz.device)
    labels[0, prompt.shape[0]:] = target
    return fz.model(inputs_embeds=full, labels=labels).loss


def optimize_one(fz: Frozen, cfg: DcmConfig, pair: QAPair) -> tuple[list[float], torch.Tensor]:
    """`cfg.optim.steps` steps on one example, no early stop: per step its loss summed over modes
    (before that step's update), and the final slots."""
    if pair.q_variants or pair.a_variants:
        raise ValueError(f"pair {pair.pair_id}: seed 001's loop has no paraphrase variants")
    o = cfg.optim
    c = init_slots(fz, cfg, pair.pair_id, 0).requires_grad_(True)
    opt = torch.optim.AdamW([c], lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
    targets = {m: torch.tensor(t, device=fz.device) for m, t in targets_for(fz, pair, cfg).main.items()}
    curve = []
    for _ in range(o.steps):
        loss = sum(generator_loss(fz, t, slot_prompt(fz, m, c)) for m, t in targets.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss.item())
    return curve, c.detach()
