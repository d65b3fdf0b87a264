"""Impact clusters of probe directions and expansion of the winning families at neighbouring knobs."""

from __future__ import annotations

import json

import numpy as np

from probe_factory import SKETCH_DIM, make_summary
from squigglray.families import get_family
from squigglray.probes.clusters import (
    EXPANSION_SCHEMA, cluster_families, expand_winners, family_directions, neighbour_knobs, rank_clusters,
)
from squigglray.probes.dis import score_summaries


def vec(*head: float) -> list[float]:
    return list(head) + [0.0] * (SKETCH_DIM - len(head))


def scored_two_groups():
    # cos 0.6 inside a group: one cluster at min_similarity 0.5, novelty 0.4 each
    spec = {"fam_a": (vec(1, 0.5), 0.01), "fam_b": (vec(1, -0.5), 0.01),  # group x, weak
            "fam_c": (vec(0, 0, 1, 0.5), 0.08), "fam_d": (vec(0, 0, 1, -0.5), 0.04),  # group y, strong
            "fam_e": (vec(0, 0, 0, 0, 1), 0.001)}  # alone and novel, but barely moves the model
    summaries = [make_summary(f, s, d, param_change=pc, repr_change=pc) for f, (d, pc) in spec.items()
                 for s in (0, 1)]
    return score_summaries(summaries + [make_summary("control:shuffled_labels", s, vec(0, 1)) for s in (0, 1)])


def test_two_groups_two_clusters_ranked_by_dis():
    scored = scored_two_groups()
    dirs = family_directions(scored)
    assert set(dirs) == {"fam_a", "fam_b", "fam_c", "fam_d", "fam_e"}
    assert all(abs(np.linalg.norm(v) - 1) < 1e-9 for v in dirs.values())
    labels = cluster_families(dirs)
    assert labels == {"fam_a": 0, "fam_b": 0, "fam_c": 1, "fam_d": 1, "fam_e": 2}
    assert cluster_families(dict(reversed(list(dirs.items())))) == labels
    assert cluster_families({"only": np.ones(3)}) == {"only": 0}
    ranked = rank_clusters(scored)
    assert [r["cluster"] for r in ranked] == [1, 0, 2] and [r["rank"] for r in ranked] == [1, 2, 3]
    top = ranked[0]
    assert top["families"] == ["fam_c", "fam_d"] and top["best_family"] == "fam_c" and top["size"] == 2
    assert top["dis_max"] > top["dis_mean"] and abs(top["cohesion"] - 0.6) < 1e-9
    assert ranked[2]["cohesion"] == 1.0 and ranked[2]["families"] == ["fam_e"]
    assert [r["dis_mean"] for r in ranked] == sorted((r["dis_mean"] for r in ranked), reverse=True)
    assert len(rank_clusters(scored, top_k=1)) == 1
    assert len(set(cluster_families(dirs, min_similarity=-1.0).values())) == 1


def test_neighbour_knobs_distinct_in_range_deterministic():
    fam = get_family("mod_power")
    base = fam.resolve_knobs("medium")
    nb = neighbour_knobs("mod_power", "medium", 12, seed=3)
    assert len(nb) == 12 and nb == neighbour_knobs("mod_power", "medium", 12, seed=3)
    assert nb != neighbour_knobs("mod_power", "medium", 12, seed=4)
    assert len({json.dumps(k, sort_keys=True) for k in nb}) == 12
    for k in nb:
        assert 1 <= len(k) <= 2
        full = fam.resolve_knobs("medium", k)
        assert full != base
        assert all(fam.knobs[n].lo <= v <= fam.knobs[n].hi and v != base[n] for n, v in k.items())
    small = neighbour_knobs("arithmetic", "medium", 10, seed=0)  # one knob, digits in [1, 3]
    assert sorted(k["digits"] for k in small) == [1, 3]


def test_expand_winners_schema_and_knobs():
    clusters = [{"rank": 1, "cluster": 4, "families": ["mod_power", "arithmetic"]},
                {"rank": 2, "cluster": 0, "families": ["gcd_lcm"]}]
    table = expand_winners(clusters, top=1, level="easy", neighbours_per_family=2, instances_per_neighbour=3, seed=7)
    assert table.schema == EXPANSION_SCHEMA
    rows = table.to_pylist()
    assert {r["family_id"] for r in rows} == {"mod_power", "arithmetic"} and {r["cluster"] for r in rows} == {4}
    assert [r["family_id"] for r in rows] == sorted((r["family_id"] for r in rows), key=["mod_power",
                                                                                      "arithmetic"].index)
    for r in rows:
        over = dict(kv.split("=") for kv in r["neighbour"].split("~", 1)[1].split(","))
        knobs = json.loads(r["knobs"])
        assert knobs == get_family(r["family_id"]).resolve_knobs("easy", {k: int(v) for k, v in over.items()})
        assert r["level"] == "easy" and isinstance(r["answer"], int)
    per_neighbour = {}
    for r in rows:
        per_neighbour[r["neighbour"]] = per_neighbour.get(r["neighbour"], 0) + 1
    assert set(per_neighbour.values()) == {3}
    again = expand_winners(clusters, top=1, level="easy", neighbours_per_family=2, instances_per_neighbour=3, seed=7)
    assert again.equals(table)
    assert expand_winners([], top=3, level="easy", neighbours_per_family=2, instances_per_neighbour=1,
                          seed=0).num_rows == 0
