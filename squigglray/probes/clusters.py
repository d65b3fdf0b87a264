"""Impact clusters and expansion (seed 000 roadmap steps 3-4).

Families whose probes push the model the same way (cosine of their mean `dir.*` update directions)
are grouped, so one mechanism found by several families counts once; clusters are ranked by DIS
and the winners are expanded with neighbouring knob settings: "same mechanism, varied surface".

EXPANSION_SCHEMA, one row per sampled instance, ordered by cluster rank, family (the cluster's DIS
order), neighbour (neighbour_knobs order), instance index:
    cluster      int64   cluster label from cluster_families
    family_id    string
    neighbour    string  "<family>~<knob>=<v>[,<knob>=<v>]": the overrides applied to `level`
    knobs        string  JSON (sorted keys) of the full resolved knobs the instance was drawn with
    instance_id  string
    problem      string
    answer       int64
    trace        string
    level        string  the difficulty level the overrides modify
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from itertools import combinations

import numpy as np
import pyarrow as pa

from squigglray.families import get_family, list_families, sample
from squigglray.families.base import stable_seed
from squigglray.probes.dis import family_table, mean_directions
from squigglray.schemas.probes import ProbeSummary

EXPANSION_SCHEMA = pa.schema([
    ("cluster", pa.int64()), ("family_id", pa.string()), ("neighbour", pa.string()), ("knobs", pa.string()),
    ("instance_id", pa.string()), ("problem", pa.string()), ("answer", pa.int64()), ("trace", pa.string()),
    ("level", pa.string()),
])


def family_directions(scored: list[ProbeSummary]) -> dict[str, np.ndarray]:
    """Unit mean update direction per family (controls left out: they are references, not candidates)."""
    return mean_directions([s for s in scored if s.role == "family"])


def cluster_families(directions: dict[str, np.ndarray], min_similarity: float = 0.5) -> dict[str, int]:
    """Average-linkage clusters on cosine distance, cut at 1 - min_similarity; labels 0.. by sorted name."""
    names = sorted(directions)
    if len(names) <= 1:
        return {n: 0 for n in names}
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    x = np.stack([np.asarray(directions[n], float) for n in names])
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 1e-12)
    dist = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2
    raw = fcluster(linkage(squareform(dist, checks=False), method="average"),
                   t=1.0 - min_similarity, criterion="distance")
    relabel: dict[int, int] = {}
    return {n: relabel.setdefault(int(c), len(relabel)) for n, c in zip(names, raw)}


def rank_clusters(scored: list[ProbeSummary], min_similarity: float = 0.5, top_k: int = 10) -> list[dict]:
    """Clusters of families by mean family DIS (mean over seeds), best first; the top_k of them."""
    dirs = family_directions(scored)
    fdis = {r["family_id"]: r["dis_mean"] for r in family_table(scored) if r["role"] == "family"}
    members: dict[int, list[str]] = defaultdict(list)
    for f, c in cluster_families(dirs, min_similarity).items():
        members[c].append(f)
    rows = []
    for c, fams in members.items():
        fams = sorted(fams, key=lambda f: (-fdis[f], f))
        sims = [float(np.dot(dirs[a], dirs[b])) for a, b in combinations(fams, 2)]
        vals = [fdis[f] for f in fams]
        rows.append({"cluster": c, "families": fams, "size": len(fams), "dis_mean": float(np.mean(vals)),
                     "dis_max": max(vals), "best_family": fams[0],
                     "cohesion": float(np.mean(sims)) if sims else 1.0})
    rows.sort(key=lambda r: (-r["dis_mean"], r["cluster"]))
    return [{"rank": i + 1, **r} for i, r in enumerate(rows[:top_k])]


def neighbour_knobs(family_id: str, level: str, n: int, seed: int) -> list[dict[str, int]]:
    """Up to n distinct overrides that change one or two knobs of `level` to nearby in-range values."""
    fam = get_family(family_id)
    base = fam.resolve_knobs(level)
    cands = {}
    for name, knob in sorted(fam.knobs.items()):
        v = base[name]
        vals = {v - 1, v + 1, round(v * 0.5), round(v * 0.75), round(v * 1.5), v * 2}
        cands[name] = sorted(x for x in vals if knob.lo <= x <= knob.hi and x != v)
    options = [{k: x} for k, xs in cands.items() for x in xs]
    options += [{a: x, b: y} for a, b in combinations(sorted(cands), 2) for x in cands[a] for y in cands[b]]
    random.Random(stable_seed("neighbour_knobs", family_id, level, seed)).shuffle(options)
    return options[:max(0, n)]


def neighbour_name(family_id: str, knobs: dict[str, int]) -> str:
    return f"{family_id}~" + ",".join(f"{k}={v}" for k, v in sorted(knobs.items()))


def expand_winners(clusters: list[dict], top: int, level: str, neighbours_per_family: int,
                   instances_per_neighbour: int, seed: int) -> pa.Table:
    """Instances of the top clusters' families at neighbouring knob settings (EXPANSION_SCHEMA)."""
    rows = []
    registered = set(list_families())
    for cl in clusters[:top]:
        for fam in cl["families"]:
            if fam not in registered:  # a slice's heuristic bucket has no knobs to expand
                continue
            for over in neighbour_knobs(fam, level, neighbours_per_family, seed):
                try:
                    insts = sample(fam, instances_per_neighbour, seed=seed, difficulty=level, knobs=over)
                except Exception:  # noqa: BLE001 - some families assert on parameter combinations: skip it
                    continue
                rows += [{"cluster": cl["cluster"], "family_id": fam, "neighbour": neighbour_name(fam, over),
                          "knobs": json.dumps(x.knobs, sort_keys=True), "instance_id": x.instance_id,
                          "problem": x.problem, "answer": x.answer, "trace": x.trace, "level": level}
                         for x in insts]
    return pa.Table.from_pylist(rows, schema=EXPANSION_SCHEMA)
