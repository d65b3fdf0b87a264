"""Confirmation experiment (seed 000 roadmap step 5): fine-tune the base on a DIS-curated corpus and on
a random corpus of the same token budget, several seeds each, and compare them on the holdout probe B.

Corpus choice (`corpus_targets`, both arms role "corpus", level `config.data.level`):
- `corpus:dis`: the `top_families` families with the highest mean DIS (family rows of
  `dis.family_table`, never controls), round-robin in DIS order.
- `corpus:random`: a random sample of the candidate pool: every next instance comes from a family
  drawn uniformly (`random.Random(stable_seed("corpus:random", seed))`) among all families probed
  in the experiment. Same level and instance draw: only the curation differs.
- Instances: fresh draws (`families.sample`) with the instance seed `stable_seed("corpus", data.instance_seed,
  seed)`, never the probe targets' seed, skipping every problem of eval probes A/B, repeated problems,
  and instances over `finetune.max_seq_len` (the adapter would drop them, so they would not count).
- Token budget: prompt+trace tokens as `training.data.encode` counts them (BOS/EOS included); default =
  the DIS arm's first `data.n_instances` instances. Each arm takes instances in its order and stops at
  the last one that keeps it <= budget, so the arms differ by less than one instance's length.

The spread reported by `confirmation_result` is over fine-tune seeds (data order; LoRA init too only when
`lora.init_seed` is null) for one corpus draw per arm, not over corpus draws.
"""

from __future__ import annotations

import math
import random

import numpy as np

from squigglray.families import sample
from squigglray.families.base import stable_seed
from squigglray.probes.dis import family_table
from squigglray.probes.plan import ProbePlan, Target, round_robin
from squigglray.schemas.probes import CORPUS_PREFIX, ProbeSummary
from squigglray.training.data import encode

ARMS = ("dis", "random")
METRICS = {"probe_b_answer_acc": ("probe_b", "answer_acc"), "probe_b_loss": ("probe_b", "loss"),
           "probe_a_answer_acc": ("probe_a", "answer_acc"), "probe_a_loss": ("probe_a", "loss")}
PAIRED = ("probe_b_answer_acc_after", "probe_b_loss_after")  # before is the same base: after = delta


def _stream(family: str, level: str, seed: int, exclude: set[str], tokenizer, max_len: int, chunk: int = 16,
            limit: int = 4096):
    """(instance, tokens) of one family in index order, skipping excluded, repeated and too long problems."""
    seen = set(exclude)
    for start in range(0, limit, chunk):
        for x in sample(family, chunk, seed=seed, difficulty=level, start=start):
            n = len(encode(tokenizer, x).ids)
            if x.problem not in seen and n <= max_len:
                seen.add(x.problem)
                yield x, n


def _take(items, budget: int | None, n: int | None = None):
    out, tokens = [], 0
    for x, k in items:
        if (n is not None and len(out) >= n) or (budget is not None and tokens + k > budget):
            break
        out.append(x)
        tokens += k
    return out, tokens


def _random_mix(streams: dict, rng: random.Random):
    live = dict(streams)
    while live:
        fam = rng.choice(sorted(live))
        item = next(live[fam], None)
        if item is None:
            del live[fam]
        else:
            yield item


def corpus_targets(scored: list[ProbeSummary], plan: ProbePlan, tokenizer, top_families: int,
                   budget_tokens: int | None, seed: int) -> dict[str, Target]:
    """Targets 'corpus:dis' and 'corpus:random' of (about) equal token budget; see the module docstring."""
    if any(s.dis is None for s in scored):
        raise ValueError("corpus_targets needs scored summaries (dis filled)")
    ranked = [r["family_id"] for r in family_table(scored) if r["role"] == "family"]
    if not 1 <= top_families <= len(ranked):
        raise ValueError(f"top_families must be in 1..{len(ranked)} (families probed), got {top_families}")
    d = plan.config.data
    inst_seed = stable_seed("corpus", d.instance_seed, seed) % (2**31)
    exclude = {x.instance.problem for x in plan.eval_a + plan.eval_b}

    def stream(f):
        return _stream(f, d.level, inst_seed, exclude, tokenizer, plan.config.finetune.max_seq_len)

    curated = round_robin(stream(f) for f in ranked[:top_families])
    drawn = {"dis": _take(curated, budget_tokens, None if budget_tokens is not None else d.n_instances)}
    budget = budget_tokens if budget_tokens is not None else drawn["dis"][1]
    mixed = _random_mix({f: stream(f) for f in ranked}, random.Random(stable_seed("corpus:random", seed)))
    drawn["random"] = _take(mixed, budget)
    empty = [a for a, (xs, _) in drawn.items() if not xs]
    if empty:
        raise ValueError(f"corpus arms {empty} are empty: budget {budget} tokens is below one instance")
    return {CORPUS_PREFIX + a: Target(family_id=CORPUS_PREFIX + a, role="corpus", level=d.level,
                                      instances=drawn[a][0]) for a in ARMS}


def corpus_stats(targets: dict[str, Target], tokenizer) -> dict[str, dict]:
    """arm -> families (first-seen order), instances, tokens (as the budget counts them), slice hash."""
    return {k: {"families": list(dict.fromkeys(x.family_id for x in t.instances)), "n_instances": len(t.instances),
                "tokens": sum(len(encode(tokenizer, x).ids) for x in t.instances), "slice_hash": t.slice_hash}
            for k, t in targets.items()}


def _values(s: ProbeSummary) -> dict[str, float]:
    out = {}
    for name, (probe, m) in METRICS.items():
        pm = getattr(s.metrics, probe)
        out[f"{name}_after"] = getattr(pm, f"{m}_after")
        out[f"{name}_delta"] = getattr(pm, f"{m}_after") - getattr(pm, f"{m}_before")
    return out


def _stats(xs: list[float]) -> dict:
    n = len(xs)
    return {"mean": float(np.mean(xs)) if n else None, "std": float(np.std(xs, ddof=1)) if n > 1 else None, "n": n}


def _paired(dis: dict[int, dict], rnd: dict[int, dict], key: str) -> dict:
    from scipy.stats import t

    seeds = sorted(set(dis) & set(rnd))
    diffs = [dis[s][key] - rnd[s][key] for s in seeds]
    out = {"seeds": seeds, "diffs": diffs, **_stats(diffs), "ci95": None, "excludes_zero": None}
    if len(diffs) >= 2:
        half = float(t.ppf(0.975, len(diffs) - 1)) * out["std"] / math.sqrt(len(diffs))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
        out["excludes_zero"] = out["ci95"][0] > 0 or out["ci95"][1] < 0
    return out


def _verdict(paired: dict) -> str:
    n = paired[PAIRED[0]]["n"]
    if n < 2:
        return f"too few paired seeds (n={n}) for an interval: no conclusion"
    parts = []
    for key, what, sign in ((PAIRED[0], "holdout answer accuracy", 1), (PAIRED[1], "holdout loss", -1)):
        p = paired[key]
        lo, hi = p["ci95"]
        text = f"{what} DIS-random {p['mean']:+.4f} (95% CI {lo:+.4f}..{hi:+.4f}): "
        parts.append(text + (f"DIS corpus {'better' if sign * p['mean'] > 0 else 'worse'} (interval excludes 0"
                             + (", zero spread over seeds)" if p["std"] == 0 else ")")
                             if p["excludes_zero"] else "no detectable difference at this scale"))
    return f"n={n} paired seeds; " + "; ".join(parts)


def confirmation_result(summaries: list[ProbeSummary]) -> dict:
    """Per-arm mean/std over seeds, the paired DIS-minus-random difference on probe B, and a verdict."""
    per = {a: {s.seed: _values(s) for s in summaries if s.family_id == CORPUS_PREFIX + a} for a in ARMS}
    missing = [a for a in ARMS if not per[a]]
    if missing:
        raise ValueError(f"no summaries of corpus arm(s) {missing}")
    keys = list(next(iter(per["dis"].values())))
    arms = {a: {"seeds": sorted(v), "metrics": {k: _stats([v[s][k] for s in sorted(v)]) for k in keys}}
            for a, v in per.items()}
    paired = {k: _paired(per["dis"], per["random"], k) for k in PAIRED}
    return {"arms": arms, "paired": paired, "verdict": _verdict(paired),
            "config_hashes": sorted({s.provenance.config_hash for s in summaries})}


def _fmt(st: dict) -> str:
    if st["mean"] is None:
        return "n/a"
    return f"{st['mean']:.4f}" + (f" ± {st['std']:.4f}" if st["std"] is not None else "")


def confirmation_markdown(result: dict) -> str:
    arms, paired = result["arms"], result["paired"]
    lines = ["## Confirmation: DIS-curated vs random corpus", "",
             "| metric (mean ± std over seeds) | corpus:dis | corpus:random |", "|---|---|---|"]
    for k in arms["dis"]["metrics"]:
        lines.append(f"| {k} | {_fmt(arms['dis']['metrics'][k])} | {_fmt(arms['random']['metrics'][k])} |")
    lines += ["", "| paired DIS - random | mean | std | n | 95% CI |", "|---|---|---|---|---|"]
    for k, p in paired.items():
        ci = f"[{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}]" if p["ci95"] else "n/a"
        std = f"{p['std']:.4f}" if p["std"] is not None else "n/a"
        mean = f"{p['mean']:+.4f}" if p["mean"] is not None else "n/a"
        lines.append(f"| {k} | {mean} | {std} | {p['n']} | {ci} |")
    lines += ["", f"**Verdict:** {result['verdict']}", ""]
    for arm, c in result.get("corpus", {}).items():
        lines.append(f"- {arm}: {', '.join(c['families'])}; {c['n_instances']} instances, {c['tokens']} tokens")
    n = paired[PAIRED[0]]["n"]
    lines += ["", f"_Not a general claim: a small model, {n} seed(s), one corpus draw per arm; the spread is over "
              "fine-tune seeds only._", ""]
    return "\n".join(lines)
