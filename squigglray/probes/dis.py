"""DIS (Directional Impact Score) of micro-finetune probes: DIS = Magnitude x Coherence x Novelty.

Every factor compares a probe with others, so probes are scored together, after the sweep:

    Magnitude  r = sqrt(param_ratio * repr_ratio),  magnitude = r / (1 + r)
               param_ratio = param_change / mean(param_change of the controls C_s)   (repr likewise)
               C_s = control probes with the probe's seed (all controls if that seed has none);
               0.5 means "moves the model as much as a control does".
    Coherence  step = clip(step_coherence, 0, 1)
               seed = mean_{i<j} cos(dir_i, dir_j) over the family's seeds (None with one seed)
               coherence = sqrt(step * max(0, seed))  (seed given)  else  step
               so updates that flip direction between seeds score 0.
    Novelty    D_f = unit(mean of the family's unit directions)
               sim = max cos(D_f, D_g) over other families g (a control: over all families), 0 if none
               base = max cos(D_f, baseline direction) when a baseline is given (previous round)
               novelty = 1 - max(0, sim, base)
    DIS        magnitude * coherence * novelty, each factor and DIS clamped to [0, 1].

Control probes are scored too, as references; a "family" for coherence/novelty is one family_id
(one control kind for controls). Directions are the probe signature's `dir.*` sketch of dW.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from itertools import combinations

import numpy as np

from squigglray.schemas.probes import DisScore, ProbeSummary

EPS = 1e-12
BASELINE_KIND = "probe_directions"


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > EPS else np.zeros_like(v)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(_unit(a), _unit(b)))


def _ratio(x: float, mean: float) -> float:
    if abs(x) < EPS and abs(mean) < EPS:
        return 1.0
    return max(0.0, x) / max(mean, EPS)


def _by_family(summaries: list[ProbeSummary]) -> dict[str, list[ProbeSummary]]:
    groups: dict[str, list[ProbeSummary]] = defaultdict(list)
    for s in sorted(summaries, key=lambda s: (s.family_id, s.seed, s.probe_id)):
        groups[s.family_id].append(s)
    return dict(groups)


def mean_directions(summaries: list[ProbeSummary]) -> dict[str, np.ndarray]:
    """family_id -> unit mean of its probes' unit directions (zero vector when they cancel)."""
    return {f: _unit(np.mean([_unit(np.asarray(p.direction(), float)) for p in ps], axis=0))
            for f, ps in _by_family(summaries).items()}


def _check_uniform(summaries: list[ProbeSummary]) -> tuple[int, int]:
    """One sweep only: one config hash and one sketch, else the directions are not comparable."""
    for name, key in (("config hashes", lambda s: s.provenance.config_hash),
                      ("sketches (dim, seed)", lambda s: (s.geometry.sketch_dim, s.geometry.sketch_seed))):
        seen: dict = {}
        for s in summaries:
            seen.setdefault(key(s), s.probe_id)
        if len(seen) > 1:
            raise ValueError(f"DIS scores one sweep at a time; mixed {name}: "
                             + ", ".join(f"{k} (e.g. {pid})" for k, pid in seen.items()))
    return summaries[0].geometry.sketch_dim, summaries[0].geometry.sketch_seed


def _check(summaries: list[ProbeSummary], baseline: dict | None) -> None:
    dim, seed = _check_uniform(summaries)
    if not any(s.role == "control" for s in summaries):
        raise ValueError("DIS needs control probes (role 'control', family_id 'control:<kind>') to normalize "
                         "magnitude; none among " + ", ".join(s.probe_id for s in summaries[:5]))
    if baseline is not None:
        if baseline.get("kind") != BASELINE_KIND:
            raise ValueError(f"baseline kind must be {BASELINE_KIND!r}, got {baseline.get('kind')!r}")
        if (baseline.get("sketch_dim"), baseline.get("sketch_seed")) != (dim, seed):
            raise ValueError(f"baseline {baseline.get('baseline_id')!r} has sketch (dim, seed) = "
                             f"{(baseline.get('sketch_dim'), baseline.get('sketch_seed'))}, probes have {(dim, seed)}")


def score_summaries(summaries: list[ProbeSummary], baseline: dict | None = None) -> list[ProbeSummary]:
    """Copies of `summaries` (same order) with `.dis` filled; see the module docstring."""
    if not summaries:
        return []
    _check(summaries, baseline)
    controls = [s for s in summaries if s.role == "control"]
    by_seed: dict[int, list[ProbeSummary]] = defaultdict(list)
    for c in controls:
        by_seed[c.seed].append(c)
    groups = _by_family(summaries)
    seed_coh = {}
    for f, ps in groups.items():
        dirs = [np.asarray(p.direction(), float) for p in ps]
        pairs = [_cos(a, b) for a, b in combinations(dirs, 2)]
        seed_coh[f] = float(np.mean(pairs)) if pairs else None
    dirs_f = mean_directions(summaries)
    families = [f for f, ps in groups.items() if ps[0].role == "family"]
    base_dirs = {f"baseline:{k}": np.asarray(v, float) for k, v in (baseline or {}).get("directions", {}).items()}
    set_hash = hashlib.sha256(json.dumps(sorted((s.probe_id, s.provenance.config_hash)
                                                for s in summaries)).encode()).hexdigest()
    novelty_of = {}
    for f in groups:
        sims = {g: _cos(dirs_f[f], dirs_f[g]) for g in families if g != f}
        base = {k: _cos(dirs_f[f], v) for k, v in base_dirs.items()}
        best = max([*sims.items(), *base.items()], key=lambda kv: kv[1], default=(None, -1.0))
        novelty_of[f] = (max(sims.values(), default=0.0), max(base.values(), default=None) if baseline else None,
                         best[0], 1.0 - max(0.0, best[1]))
    out = []
    for p in summaries:
        cs = by_seed.get(p.seed) or controls
        cp = float(np.mean([_finite(c.geometry.param_change) for c in cs]))
        cr = float(np.mean([_finite(c.geometry.repr_change) for c in cs]))
        pr, rr = _ratio(_finite(p.geometry.param_change), cp), _ratio(_finite(p.geometry.repr_change), cr)
        r = math.sqrt(pr * rr)
        magnitude = _clamp(r / (1.0 + r))
        step = _clamp(_finite(p.geometry.step_coherence))
        sc = seed_coh[p.family_id]
        coherence = _clamp(math.sqrt(step * max(0.0, sc)) if sc is not None else step)
        max_sim, base_sim, nearest, novelty = novelty_of[p.family_id]
        novelty = _clamp(novelty)
        dis = DisScore(
            dis=_clamp(magnitude * coherence * novelty), magnitude=magnitude, coherence=coherence, novelty=novelty,
            param_ratio=pr, repr_ratio=rr, control_param_change=cp, control_repr_change=cr, step_coherence=step,
            seed_coherence=sc, n_seeds=len({q.seed for q in groups[p.family_id]}), max_similarity=max_sim,
            nearest=nearest, baseline_id=baseline.get("baseline_id") if baseline else None,
            baseline_similarity=base_sim, scoring_set_hash=set_hash)
        out.append(p.model_copy(update={"dis": dis}))
    return out


def build_direction_baseline(summaries: list[ProbeSummary], baseline_id: str) -> dict:
    """Family mean directions in the `baseline` format, so a later round scores novelty against this one."""
    fams = [s for s in summaries if s.role == "family"]
    if not fams:
        raise ValueError("a direction baseline needs family probes")
    dim, seed = _check_uniform(fams)
    return {"baseline_id": baseline_id, "kind": BASELINE_KIND, "sketch_dim": dim, "sketch_seed": seed,
            "directions": {f: [float(x) for x in v] for f, v in mean_directions(fams).items()}}


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else 0.0


def family_table(scored: list[ProbeSummary]) -> list[dict]:
    """One row per family_id (controls too), best mean DIS first: the sweep's leaderboard."""
    rows = []
    for f, ps in _by_family(scored).items():
        if any(p.dis is None for p in ps):
            raise ValueError(f"family_table needs scored summaries; {f} has probes without .dis")
        d = [p.dis for p in ps]
        m = [p.metrics for p in ps]
        rows.append({
            "family_id": f, "role": ps[0].role, "n_seeds": d[0].n_seeds,
            "dis_mean": _mean([x.dis for x in d]), "dis_std": float(np.std([x.dis for x in d])),
            "magnitude": _mean([x.magnitude for x in d]), "coherence": _mean([x.coherence for x in d]),
            "novelty": _mean([x.novelty for x in d]), "seed_coherence": d[0].seed_coherence,
            "nearest": d[0].nearest, "max_similarity": d[0].max_similarity,
            "probe_a_loss_delta": _mean([x.probe_a.loss_after - x.probe_a.loss_before for x in m]),
            "probe_b_loss_delta": _mean([x.probe_b.loss_after - x.probe_b.loss_before for x in m]),
        })
    return sorted(rows, key=lambda r: (-r["dis_mean"], r["family_id"]))


def dis_rank_stability(summaries: list[ProbeSummary]) -> dict:
    """Split-half check: do two disjoint seed groups rank the families alike (Spearman of family DIS)?"""
    seeds = sorted({s.seed for s in summaries})
    groups = [seeds[0::2], seeds[1::2]]
    result = {"groups": groups, "n_families": 0, "spearman": None, "family_dis": {"A": {}, "B": {}}, "note": ""}
    if len(seeds) < 2:
        result["note"] = f"needs at least 2 seeds to split, got {len(seeds)}"
        return result
    for name, group in zip("AB", groups):
        scored = score_summaries([s for s in summaries if s.seed in group])
        per: dict[str, list[float]] = defaultdict(list)
        for p in scored:
            if p.role == "family":
                per[p.family_id].append(p.dis.dis)
        result["family_dis"][name] = {f: _mean(v) for f, v in sorted(per.items())}
    a, b = result["family_dis"]["A"], result["family_dis"]["B"]
    common = sorted(set(a) & set(b))
    result["n_families"] = len(common)
    if len(common) < 3:
        result["note"] = f"needs at least 3 families scored in both groups, got {len(common)}"
    elif len({a[f] for f in common}) < 2 or len({b[f] for f in common}) < 2:
        result["note"] = "one group gives every family the same DIS: rank correlation undefined"
    else:
        from scipy.stats import spearmanr

        result["spearman"] = float(spearmanr([a[f] for f in common], [b[f] for f in common]).statistic)
        result["note"] = f"Spearman of family DIS between seed groups {groups[0]} and {groups[1]}"
    return result
