"""Train CLModel on the project's families: staged RVQ warm-up (L1 -> Lk), then a joint fine-tune.

    squigglray clmodel train --set train.joint_steps=100     # CPU, about a minute

Losses (seed 003's auxiliary set): token denoising (15% of tokens replaced by the pad token; the
token head restores them), sequence (the answer's last digit), VQ commitment + diversity, action
policy and STOP against the op traces, argument pointer, invalid-op, branch prediction (the entry
router predicts the problem's difficulty level, capped at the deepest branch), value (per branch, the episode's step accuracy), tool
flag (did the tool succeed), and VQ index prediction from the encoder.

Stages: `warmup_steps` per level with rvq.active_levels = k and the earlier levels' codebooks frozen,
then `joint_steps` with every level live and the learning rate scaled by `joint_lr_mult`. The entry
router trains at `entry_lr_mult` of the learning rate (seed 003: "Entry Router (slow LR)").
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from squigglray.clmodel.config import LOSS_NAMES, CLModelConfig, TrainSection
from squigglray.clmodel.data import IGNORE, Example, collate, family_op_sets
from squigglray.clmodel.model import CLModel

def total_steps(cfg: CLModelConfig, t: TrainSection) -> int:
    return t.warmup_steps * cfg.num_quantizers + t.joint_steps


def stage_at(step: int, cfg: CLModelConfig, t: TrainSection) -> tuple[str, int]:
    """('warmup', k) for levels 1..k live (k-1 frozen), or ('joint', num_quantizers)."""
    if step < t.warmup_steps * cfg.num_quantizers:
        return "warmup", step // t.warmup_steps + 1
    return "joint", cfg.num_quantizers


def _apply_stage(model: CLModel, stage: str, k: int) -> None:
    model.rvq.active_levels = k
    model.rvq.unfreeze(list(range(model.cfg.num_quantizers)))
    if stage == "warmup" and k > 1:
        model.rvq.freeze(list(range(k - 1)))


def corrupt(ids: torch.Tensor, mask: torch.Tensor, prob: float, pad_id: int, gen: torch.Generator):
    """Replace `prob` of the real tokens by pad_id; targets are IGNORE except at corrupted places."""
    hit = (torch.rand(ids.shape, generator=gen) < prob) & mask
    return torch.where(hit, torch.full_like(ids, pad_id), ids), torch.where(hit, ids, torch.full_like(ids, IGNORE))


def losses(model: CLModel, out, batch: dict, tok_targets: torch.Tensor) -> dict[str, torch.Tensor]:
    cfg = model.cfg
    r, dbg = out.debug["reasoner"], out.debug
    ops, valid = batch["ops"], batch["ops"] != IGNORE
    L: dict[str, torch.Tensor] = {}
    L["tok"] = F.cross_entropy(out.logits_tok.flatten(0, 1), tok_targets.flatten(), ignore_index=IGNORE)
    L["seq"] = F.cross_entropy(out.logits_seq, batch["seq"])
    L["vq"] = out.vq_loss
    L["action"] = F.cross_entropy(out.action_logits.flatten(0, 1), ops.flatten(), ignore_index=IGNORE)
    stop_valid = batch["stop"] != IGNORE
    L["stop"] = F.binary_cross_entropy_with_logits(out.stop_logits[stop_valid], batch["stop"][stop_valid])
    args = batch["args"]
    if (args != IGNORE).any():
        arg_logits = r.arg_logits.masked_fill(~torch.isfinite(r.arg_logits), -1e9)
        L["arg"] = F.cross_entropy(arg_logits.flatten(0, 1), args.flatten(), ignore_index=IGNORE)
    inv = r.invalid_logits[valid]
    L["invalid"] = F.binary_cross_entropy_with_logits(inv, batch["invalid"].unsqueeze(1).expand_as(r.invalid_logits)[valid])
    L["branch"] = F.cross_entropy(dbg["entry_logits"], batch["level"].clamp(max=cfg.num_branches - 1))
    with torch.no_grad():
        right = ((out.action_logits.argmax(-1) == ops) & valid).sum(1).float() / valid.sum(1).clamp(min=1)
    L["value"] = F.mse_loss(r.value[valid], right.unsqueeze(1).expand_as(r.value)[valid])
    tool_rows = [(e["row"], e["step"], float(bool(e["ok"]))) for e in r.log if e.get("error_type") != "budget"]
    if tool_rows:
        rows, steps, ok = (torch.tensor(x) for x in zip(*tool_rows))
        L["tool"] = F.binary_cross_entropy_with_logits(r.tool_logits[rows.long(), steps.long()], ok.float())
    idx = out.debug["rvq"].indices
    L["index"] = sum(F.cross_entropy(lg, idx[:, lv], ignore_index=-1) for lv, lg in enumerate(dbg["index_logits"])
                     if (idx[:, lv] >= 0).any()) / cfg.num_quantizers
    return L


def train(model: CLModel, examples: list[Example], t: TrainSection, seed: int, tools=None,
          on_log: Callable[[dict[str, Any]], None] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train in place; returns one row per `log_every` steps (losses, stage, lr, seconds)."""
    from tqdm.auto import tqdm

    cfg = model.cfg
    if t.threads:
        torch.set_num_threads(t.threads)
    weights = {n: 1.0 for n in LOSS_NAMES} | {"index": 0.1, "branch": 0.1, "value": 0.5} | t.loss_weights
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    op_sets = family_op_sets(examples)
    entry = {id(p) for p in model.entry_router.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in entry], "lr_mult": 1.0},
              {"params": list(model.entry_router.parameters()), "lr_mult": t.entry_lr_mult}]
    opt = torch.optim.AdamW([{**g, "lr": t.lr * g["lr_mult"]} for g in groups], lr=t.lr, weight_decay=t.weight_decay)
    n_total = total_steps(cfg, t)
    history, order, pos, t0, stage = [], [], 0, time.time(), None
    model.train()
    bar = tqdm(range(n_total), desc="clmodel", disable=not progress, leave=False)
    for step in bar:
        now = stage_at(step, cfg, t)
        if now != stage:
            stage = now
            _apply_stage(model, *stage)
        base = t.lr * (t.joint_lr_mult if stage[0] == "joint" else 1.0)
        cosine = 0.5 * (1 + torch.cos(torch.tensor(step / max(1, n_total) * torch.pi))).item()
        for g in opt.param_groups:
            g["lr"] = base * g["lr_mult"] * max(0.1, cosine)
        if pos + t.batch_size > len(order):
            order, pos = list(range(len(examples))), 0
            rng.shuffle(order)
        batch = collate([examples[i] for i in order[pos:pos + t.batch_size]], cfg.steps, cfg.num_ops, cfg.pad_id, op_sets)
        pos += t.batch_size
        ids, tok_targets = corrupt(batch["ids"], batch["mask"], t.mask_prob, cfg.pad_id, gen)
        out = model(ids, batch["mask"], tools=tools, tool_inputs=batch["tool_inputs"], op_targets=batch["ops"],
                    tool_dropout=t.tool_dropout, debug=True)
        parts = losses(model, out, batch, tok_targets)
        loss = sum(weights[k] * v for k, v in parts.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % t.log_every == 0 or step == n_total - 1:
            row = {"step": step, "stage": f"{stage[0]}-L{stage[1]}", "loss": loss.item(), "lr": base,
                   "seconds": time.time() - t0, **{f"loss_{k}": v.item() for k, v in parts.items()},
                   "tool_calls": int(out.debug["reasoner"].tool_calls.sum()),
                   **{f"perplexity_L{lv + 1}": float(model.rvq.perplexity(lv)) for lv in range(cfg.num_quantizers)}}
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", stage=row["stage"])
            if on_log:
                on_log(row)
    model.eval()
    return history

