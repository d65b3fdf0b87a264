"""Seed 001's baselines, convergence rule, loss-curve health labels and dataset-level thresholds.

Baselines, per example and mode (seed §5 "Establishing baselines first"):
- random: L(target | [BOS] + mode + K random slots at the embedding scale): "no information";
- single_token: L(target | [BOS] + one random vocabulary token): the minimal prompt;
- full_context: the best case with the information given as text: L(A | Q) for the answer, and
  L(Q | Q) (reproduce it from its own text) for the question.

Convergence (seed rule): final loss < 0.3 x random, or < 2 x full_context, on every mode. The
headline is stricter (Progressive Cramming: 99% teacher-forced accuracy can still mean ~0% greedy
exact match): teacher-forced token accuracy 1.0 and greedy exact match from (mode, c*).
"""

from __future__ import annotations

import numpy as np
import torch

from squigglray.dcm.config import DcmConfig
from squigglray.dcm.data import QAPair
from squigglray.dcm.optimizer import example_seed, init_slots
from squigglray.dcm.slots import Frozen, row_losses, slot_prompt

HEALTH = ("healthy", "plateau_then_drop", "oscillation", "flat", "diverging")

# Seed 001 "Dataset-level thresholds": metric -> (minimum viable, good, excellent)
THRESHOLDS = {
    "seed_rule_convergence_rate": (0.40, 0.70, 0.90),  # higher is better
    "mean_loss_ratio_vs_random": (0.40, 0.25, 0.15),  # lower is better
    "qa_balance_vs_full_context": (2.0, 1.5, 1.2),  # both modes' loss / full-context loss; lower is better
}


@torch.no_grad()
def baselines(fz: Frozen, cfg: DcmConfig, pairs: list[QAPair]) -> list[dict[str, dict[str, float]]]:
    """Per pair: {mode: {"random": L, "single_token": L, "full_context": L}}."""
    out = []
    scaled = cfg.model_copy(update={"init": "scaled_random"})
    for p in pairs:
        text = {"q": p.question, "a": p.answer}
        g = torch.Generator().manual_seed(example_seed(cfg.seed, p.pair_id, -1))
        token = int(torch.randint(0, fz.embed.shape[0], (1,), generator=g))
        random_slots = init_slots(fz, scaled, p.pair_id, -1)
        context = fz.encode(p.question, eos=False)  # both modes' full context is Q as text
        prompts, targets, keys = [], [], []
        for mode in cfg.modes:
            tgt = fz.encode(text[mode], cfg.eos)
            for name, prompt in (
                ("random", slot_prompt(fz, mode, random_slots)),
                ("single_token", torch.cat([fz.prefix(), fz.embed[token : token + 1].float()])),
                ("full_context", torch.cat([fz.prefix(), fz.embed[torch.tensor(context, device=fz.device)].float()])),
            ):
                if prompt.shape[0] == 0:  # no BOS and an empty context: nothing can predict the first token
                    continue
                prompts.append(prompt)
                targets.append(tgt)
                keys.append((mode, name))
        losses, _ = row_losses(fz, prompts, targets)
        res: dict[str, dict[str, float]] = {m: {} for m in cfg.modes}
        for (mode, name), loss in zip(keys, losses):
            res[mode][name] = float(loss)
        out.append(res)
    return out


def seed_converged(loss: dict[str, float], base: dict[str, dict[str, float]]) -> bool:
    return all(loss[m] < 0.3 * base[m]["random"] or loss[m] < 2.0 * base[m].get("full_context", float("inf"))
               for m in loss)


def health(curve: list[float]) -> str:
    """A label for a loss curve (seed 001 "Loss curve health indicators")."""
    x = np.asarray(curve, dtype=float)
    if len(x) < 4 or not np.all(np.isfinite(x)):
        return "diverging" if len(x) and not np.all(np.isfinite(x)) else "healthy"
    first, low, last = x[0], x.min(), x[-1]
    drop = first - low
    if drop < 0.05 * abs(first):
        return "flat"
    if last - low > 0.5 * drop and int(x.argmin()) < len(x) - 1:
        return "diverging"
    d = np.diff(x)
    ups = d[d > 0].sum()
    if ups > 0.5 * drop:
        return "oscillation"
    early = x[: max(2, len(x) // 4)]
    if early[0] - early.min() < 0.1 * drop:
        return "plateau_then_drop"
    return "healthy"


def level(metric: str, value: float) -> str:
    mv, good, exc = THRESHOLDS[metric]
    better = (lambda a, b: a > b) if metric == "seed_rule_convergence_rate" else (lambda a, b: a < b)
    if better(value, exc):
        return "excellent"
    if better(value, good):
        return "good"
    if better(value, mv):
        return "minimum viable"
    return "below"


def dataset_table(rows: list[dict]) -> dict[str, dict]:
    """Seed 001's dataset-level thresholds for a list of per-example rows (see run.py)."""
    if not rows:
        return {}
    conv = float(np.mean([r["seed_converged"] for r in rows]))
    ratio = float(np.mean([sum(r["loss"].values()) / max(sum(r["baselines"][m]["random"] for m in r["loss"]), 1e-9)
                           for r in rows]))
    balance = float(np.mean([max(r["loss"][m] / max(r["baselines"][m].get("full_context", 1e-9), 1e-9)
                                 for m in r["loss"]) for r in rows]))
    return {name: {"value": v, "level": level(name, v), "thresholds": dict(zip(("minimum viable", "good", "excellent"),
                                                                               THRESHOLDS[name]))}
            for name, v in (("seed_rule_convergence_rate", conv), ("mean_loss_ratio_vs_random", ratio),
                            ("qa_balance_vs_full_context", balance))}
