"""Batched per-example soft-prompt optimization: B examples as one [B, K, d] tensor.

Nothing couples the examples: each example's loss is the sum over its own rows (one per mode, and
per paraphrase variant), the total is the sum of those, the AdamW step is elementwise with a step
counter per example (so bias correction is per example), and there is no global gradient clipping.
An example whose every mode reaches `stop_accuracy` is frozen at the parameters that reached it:
it leaves the forward pass (finished examples stop costing compute) and its slots, moments and
step counter stop changing. So each example's trajectory equals optimizing it alone (tested).

Initialization is seeded by (seed, pair_id, restart), independent of the batch it lands in.
Examples that do not converge get `restarts` fresh initializations; the best attempt is kept.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import torch

from squigglray.dcm.config import DcmConfig
from squigglray.dcm.data import DatasetError, QAPair
from squigglray.dcm.slots import Frozen, row_losses, slot_prompts


@dataclass
class Targets:
    """One example's token targets: per mode the main target, plus paraphrase variants."""

    main: dict[str, list[int]]
    variants: dict[str, list[list[int]]] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, list[int], bool]]:
        out = [(m, t, True) for m, t in self.main.items()]
        return out + [(m, t, False) for m, ts in self.variants.items() for t in ts]


@dataclass
class SlotResult:
    pair_id: str
    k: int
    converged: bool  # every mode reached stop_accuracy (teacher-forced)
    converged_step: int | None
    steps: int  # steps run in the kept attempt
    restart: int  # which attempt was kept (0 = the first)
    seconds: float
    loss: dict[str, float]  # final per-mode loss of the main target
    token_acc: dict[str, float]
    curve: list[float]  # per step: the example's summed loss
    slots: torch.Tensor = field(repr=False)  # [K, d] fp32


def targets_for(fz: Frozen, pair: QAPair, cfg: DcmConfig) -> Targets:
    text = {"q": pair.question, "a": pair.answer}
    var = {"q": pair.q_variants, "a": pair.a_variants}
    main, variants = {}, {}
    for m in cfg.modes:
        ids = fz.encode(text[m], cfg.eos)
        if len(ids) > cfg.max_target_tokens:
            raise DatasetError(f"pair {pair.pair_id}: the {m} target has {len(ids)} tokens, over max_target_tokens "
                             f"({cfg.max_target_tokens})")
        main[m] = ids
        if var[m]:
            variants[m] = [fz.encode(v, cfg.eos) for v in var[m]]
    return Targets(main, variants)


def example_seed(seed: int, pair_id: str, restart: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{pair_id}:{restart}".encode()).digest()[:8], "big") >> 1


def init_slots(fz: Frozen, cfg: DcmConfig, pair_id: str, restart: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(example_seed(cfg.seed, pair_id, restart))
    if cfg.init == "tokens":
        ids = torch.randint(0, fz.embed.shape[0], (cfg.k,), generator=g)
        return fz.embed[ids.to(fz.device)].float().clone() * cfg.init_scale
    noise = torch.randn(cfg.k, fz.dim, generator=g).to(fz.device)
    return noise * fz.emb_std * cfg.init_scale


def adamw_step(p: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: torch.Tensor,
               rows: torch.Tensor, cfg: DcmConfig) -> None:
    """Decoupled AdamW on p[rows] with grad for those rows only; per-row step counts t."""
    o = cfg.optim
    t[rows] += 1
    steps = t[rows].float()[:, None, None]
    m[rows] = o.beta1 * m[rows] + (1 - o.beta1) * grad
    v[rows] = o.beta2 * v[rows] + (1 - o.beta2) * grad * grad
    m_hat = m[rows] / (1 - o.beta1 ** steps)
    v_hat = v[rows] / (1 - o.beta2 ** steps)
    p[rows] = p[rows] * (1 - o.lr * o.weight_decay) - o.lr * m_hat / (v_hat.sqrt() + o.eps)


def _attempt(fz: Frozen, cfg: DcmConfig, pairs: list[QAPair], targets: list[Targets], restart: int,
             progress=None) -> list[SlotResult]:
    """One attempt for a batch of examples: optimize until each converges or `steps` run out."""
    n = len(pairs)
    slots = torch.stack([init_slots(fz, cfg, p.pair_id, restart) for p in pairs])
    m, v = torch.zeros_like(slots), torch.zeros_like(slots)
    t = torch.zeros(n, dtype=torch.long, device=slots.device)
    active = list(range(n))
    curves: list[list[float]] = [[] for _ in pairs]
    last_loss: list[dict] = [{} for _ in pairs]
    last_acc: list[dict] = [{} for _ in pairs]
    done_step: list[int | None] = [None] * n
    seconds = [0.0] * n
    t0 = time.perf_counter()
    for step in range(1, cfg.optim.steps + 1):
        if not active:
            break
        leaf = slots[active].detach().requires_grad_(True)
        tgts, owner, main = [], [], []
        for j, b in enumerate(active):
            for mode, ids, is_main in targets[b].rows():
                tgts.append(ids)
                owner.append((j, mode))
                main.append(is_main)
        losses, accs = row_losses(fz, slot_prompts(fz, [m for _, m in owner], leaf[[j for j, _ in owner]]), tgts)
        per_example = torch.zeros(len(active), device=slots.device).index_add(
            0, torch.tensor([j for j, _ in owner], device=slots.device), losses)
        finished = set()
        for j, value in enumerate(per_example.detach().tolist()):
            curves[active[j]].append(value)
        for (j, mode), loss, acc, is_main in zip(owner, losses.detach().tolist(), accs.tolist(), main):
            if is_main:
                last_loss[active[j]][mode] = loss
                last_acc[active[j]][mode] = acc
        for j, b in enumerate(active):
            if all(a >= cfg.optim.stop_accuracy for a in last_acc[b].values()):
                finished.add(j)
                done_step[b] = step
                seconds[b] = time.perf_counter() - t0
        keep = [j for j in range(len(active)) if j not in finished]
        if keep:
            weight = torch.zeros(len(active), device=slots.device)
            weight[keep] = 1.0
            (per_example * weight).sum().backward()
            rows = torch.tensor([active[j] for j in keep], device=slots.device)
            with torch.no_grad():
                adamw_step(slots, leaf.grad[keep], m, v, t, rows, cfg)
        active = [active[j] for j in keep]
        if progress is not None:
            progress(step, len(active))
    elapsed = time.perf_counter() - t0
    return [SlotResult(pair_id=p.pair_id, k=cfg.k, converged=done_step[b] is not None, converged_step=done_step[b],
                       steps=done_step[b] or cfg.optim.steps, restart=restart,
                       seconds=seconds[b] if done_step[b] else elapsed, loss=last_loss[b], token_acc=last_acc[b],
                       curve=curves[b], slots=slots[b].detach().clone())
            for b, p in enumerate(pairs)]


def _better(new: SlotResult, old: SlotResult | None) -> bool:
    if old is None:
        return True
    if new.converged != old.converged:
        return new.converged
    return sum(new.loss.values()) < sum(old.loss.values())


def optimize(fz: Frozen, cfg: DcmConfig, pairs: list[QAPair], progress=None) -> list[SlotResult]:
    """Every pair, in batches of cfg.batch_size, with restarts for the ones that did not converge."""
    targets = {p.pair_id: targets_for(fz, p, cfg) for p in pairs}
    best: dict[str, SlotResult] = {}
    todo = list(pairs)
    for restart in range(cfg.optim.restarts + 1):
        for i in range(0, len(todo), cfg.batch_size):
            batch = todo[i : i + cfg.batch_size]
            for r in _attempt(fz, cfg, batch, [targets[p.pair_id] for p in batch], restart, progress):
                if _better(r, best.get(r.pair_id)):
                    best[r.pair_id] = r
        todo = [p for p in todo if not best[p.pair_id].converged]
        if not todo:
            break
    return [best[p.pair_id] for p in pairs]
