"""Seed 003's evaluation milestones that run on a CPU, for a trained CLModel.

- accuracy: action (teacher-forced state and free-running), STOP at the right step, argument
  pointer, sequence head (answer's last digit), with chance and majority-per-step baselines;
- quantizer health: per level perplexity, codes used, dead-code share (live codes never used), and
  split/merge stability (after splitting the busiest L1 code and merging the two closest used ones,
  the share of examples whose code moves anywhere but to the split's child or the merge's keeper);
- routing: entry-branch counts, entry branch = difficulty level, promotions/demotions, ping-pong (A -> B -> A inside the hysteresis
  window; must be 0), entry-router entropy, early-exit frequency;
- tools: calls per example, success rate, cache share, tool-budget hit rate;
- latency: median and p95 of one-example forwards, with and without tools.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections import Counter

import torch

from squigglray.clmodel.data import IGNORE, Example, collate
from squigglray.clmodel.model import CLModel


def _batches(examples: list[Example], size: int):
    for i in range(0, len(examples), size):
        yield examples[i:i + size]


def code_health(indices: torch.Tensor, live: int) -> dict:
    """Usage of one level's codes over a set of examples (indices -1 = not computed)."""
    ids = indices[indices >= 0].tolist()
    if not ids:
        return {"computed": 0, "perplexity": 0.0, "used_codes": 0, "dead_fraction": 1.0}
    counts = Counter(ids)
    p = torch.tensor(list(counts.values()), dtype=torch.float) / len(ids)
    return {"computed": len(ids), "perplexity": float(torch.exp(-(p * p.log()).sum())),
            "used_codes": len(counts), "dead_fraction": 1 - len(counts) / live}


@torch.no_grad()
def split_merge_stability(model: CLModel, examples: list[Example], batch_size: int = 64) -> dict:
    """Append-only ids in practice: remap level 1 on a copy of the model and re-quantize."""
    cfg = model.cfg
    trial = copy.deepcopy(model).eval()

    def level1() -> torch.Tensor:
        out = []
        for chunk in _batches(examples, batch_size):
            b = collate(chunk, cfg.steps, cfg.num_ops, cfg.pad_id)
            out.append(trial(b["ids"], b["mask"]).indices[0])
        return torch.cat(out)

    before = level1()
    counts = Counter(before.tolist())
    busiest = counts.most_common(1)[0][0]
    used = sorted(counts)
    child = trial.rvq.split(0, busiest)
    pair = None
    if len(used) >= 2:
        emb = trial.rvq.embed[0, used]
        dist = torch.cdist(emb, emb) + torch.eye(len(used)) * 1e9
        i, j = divmod(int(dist.argmin()), len(used))
        pair = (used[i], used[j])
        trial.rvq.merge(0, *pair)
    after = level1()
    expected = trial.rvq.resolve(0, before)
    moved = (after != expected) & ~((before == busiest) & (after == child))
    return {"split": [busiest, child], "merged": list(pair) if pair else None, "moved": float(moved.float().mean()),
            "old_ids_resolve_live": bool(trial.rvq.live[0][expected].all())}


def ping_pongs(branches: torch.Tensor, window: int) -> int:
    """Returns to a branch left less than `window` + 1 steps earlier (A -> B -> A)."""
    n = 0
    for row in branches.tolist():
        changes = [i for i in range(1, len(row)) if row[i] != row[i - 1]]
        n += sum(1 for a, b in zip(changes, changes[1:]) if b - a <= window and row[b] == row[a - 1])
    return n


def majority_baseline(train: list[Example], test: list[Example]) -> float:
    """Accuracy of always predicting the most common op at each step position."""
    by_pos: dict[int, Counter] = {}
    for e in train:
        for i, o in enumerate(e.ops):
            by_pos.setdefault(i, Counter())[o] += 1
    hits = total = 0
    for e in test:
        for i, o in enumerate(e.ops):
            hits += by_pos.get(i, Counter()).most_common(1)[0][0] == o if i in by_pos else 0
            total += 1
    return hits / max(1, total)


@torch.no_grad()
def evaluate(model: CLModel, examples: list[Example], train_examples: list[Example] | None = None,
             tools=None, batch_size: int = 64, latency_n: int = 32) -> dict:
    cfg = model.cfg
    model.eval()
    acc = Counter()
    idx_all, b0_all, branches_all, entropies = [], [], [], []
    promo = demo = early = rows = tool_calls = tool_ok = tool_cached = budget_hits = 0
    for chunk in _batches(examples, batch_size):
        b = collate(chunk, cfg.steps, cfg.num_ops, cfg.pad_id)
        valid = b["ops"] != IGNORE
        tf = model(b["ids"], b["mask"], op_targets=b["ops"], debug=True)
        r = tf.debug["reasoner"]
        acc["action_tf"] += int(((tf.action_logits.argmax(-1) == b["ops"]) & valid).sum())
        acc["steps"] += int(valid.sum())
        n_steps = valid.sum(1)
        stop_at = torch.where(tf.stop_logits > 0, torch.arange(cfg.steps), cfg.steps).min(1).values
        acc["stop"] += int((stop_at == n_steps - 1).sum())
        arg_ok = b["args"] != IGNORE
        acc["arg"] += int(((r.arg_logits.argmax(-1) == b["args"]) & arg_ok).sum())
        acc["arg_total"] += int(arg_ok.sum())
        acc["seq"] += int((tf.logits_seq.argmax(-1) == b["seq"]).sum())
        free = model(b["ids"], b["mask"], tools=tools, tool_inputs=b["tool_inputs"], debug=True)
        fr = free.debug["reasoner"]
        pred = free.action_logits.argmax(-1)
        acc["action_free"] += int(((pred == b["ops"]) & valid).sum())
        acc["trace_exact"] += int((((pred == b["ops"]) | ~valid).all(1)).sum())
        idx_all.append(torch.stack(free.indices, 1))
        b0_all += free.debug["branch0"].tolist()
        acc["entry_level"] += int((free.debug["branch0"] == b["level"].clamp(max=cfg.num_branches - 1)).sum())
        branches_all.append(fr.branches)
        p = free.debug["entry_logits"].softmax(-1)
        entropies += (-(p * p.clamp_min(1e-12).log()).sum(-1)).tolist()
        promo += int(fr.promotions.sum())
        demo += int(fr.demotions.sum())
        early += int((torch.where(free.stop_logits > 0, torch.arange(cfg.steps), cfg.steps).min(1).values < cfg.steps - 1).sum())
        rows += len(chunk)
        tool_calls += int(fr.tool_calls.sum())
        budget_hits += int((fr.tool_calls >= cfg.tool_budget).sum())
        called = [e for e in fr.log if e.get("error_type") != "budget"]
        tool_ok += sum(bool(e["ok"]) for e in called)
        tool_cached += sum(bool(e.get("cached")) for e in called)
    indices = torch.cat(idx_all)
    branches = torch.cat(branches_all)
    steps = max(1, acc["steps"])
    out = {
        "examples": rows,
        "accuracy": {
            "action_teacher_forced": acc["action_tf"] / steps, "action_free_running": acc["action_free"] / steps,
            "trace_exact": acc["trace_exact"] / rows, "stop": acc["stop"] / rows,
            "argument": acc["arg"] / max(1, acc["arg_total"]), "sequence": acc["seq"] / rows,
            "action_chance": 1 / cfg.num_ops,
            "action_majority": majority_baseline(train_examples or examples, examples),
            "sequence_chance": 0.1,
        },
        "quantizer": {f"L{lv + 1}": code_health(indices[:, lv], int(model.rvq.live[lv].sum())) for lv in range(cfg.num_quantizers)},
        "split_merge": split_merge_stability(model, examples, batch_size),
        "routing": {
            "entry_branch_counts": dict(sorted(Counter(b0_all).items())),
            "entry_branch_is_difficulty": acc["entry_level"] / rows,
            "promotions_per_example": promo / rows, "demotions_per_example": demo / rows,
            "ping_pong": ping_pongs(branches, cfg.hysteresis),
            "entry_entropy": statistics.fmean(entropies), "entry_entropy_max": math.log(cfg.num_branches),
            "early_exit_rate": early / rows,
        },
        "tools": {
            "calls_per_example": tool_calls / rows, "ok_rate": tool_ok / max(1, tool_calls),
            "cached_rate": tool_cached / max(1, tool_calls), "budget_hit_rate": budget_hits / rows,
        } if tools is not None else None,
        "latency_ms": latency(model, examples[:latency_n], tools),
    }
    return out


@torch.no_grad()
def latency(model: CLModel, examples: list[Example], tools=None) -> dict:
    """One-example forwards (after one warm-up): median/p95 in ms, without and with tools."""
    cfg = model.cfg
    res = {}
    for name, tl in (("no_tools", None), ("tools", tools)):
        if name == "tools" and tools is None:
            continue
        times = []
        for i, e in enumerate(examples):
            b = collate([e], cfg.steps, cfg.num_ops, cfg.pad_id)
            t0 = time.perf_counter()
            model(b["ids"], b["mask"], tools=tl, tool_inputs=b["tool_inputs"])
            if i:
                times.append((time.perf_counter() - t0) * 1000)
        if times:
            times.sort()
            res[name] = {"median": statistics.median(times), "p95": times[min(len(times) - 1, int(0.95 * len(times)))]}
    return res
