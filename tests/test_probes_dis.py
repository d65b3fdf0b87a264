"""DIS factors on hand-built probe summaries: bounds, controls, seeds, novelty, baselines, stability."""

from __future__ import annotations

import math
import random

import pytest

from probe_factory import SKETCH_DIM, make_summary
from squigglray.probes.dis import build_direction_baseline, dis_rank_stability, family_table, score_summaries


def e(i: int, sign: float = 1.0) -> list[float]:
    v = [0.0] * SKETCH_DIM
    v[i] = sign
    return v


def controls(seeds=(0, 1), direction=None, **kw):
    return [make_summary("control:shuffled_labels", s, direction or e(7), **kw) for s in seeds]


def by_id(scored):
    return {s.probe_id: s.dis for s in scored}


def test_identical_directions_not_novel_orthogonal_novel():
    same = [make_summary(f, s, e(0)) for f in ("fam_a", "fam_b") for s in (0, 1)]
    d = by_id(score_summaries(same + controls()))
    assert d["fam_a.seed0"].novelty == pytest.approx(0.0, abs=1e-9)
    assert d["fam_b.seed1"].novelty == pytest.approx(0.0, abs=1e-9)
    assert d["fam_a.seed0"].nearest == "fam_b" and d["fam_a.seed0"].max_similarity == pytest.approx(1.0)
    orth = [make_summary("fam_a", s, e(0)) for s in (0, 1)] + [make_summary("fam_b", s, e(1)) for s in (0, 1)]
    d = by_id(score_summaries(orth + controls()))
    assert d["fam_a.seed0"].novelty == pytest.approx(1.0) and d["fam_b.seed1"].novelty == pytest.approx(1.0)
    # a control is compared with the families (not with other controls)
    assert d["control-shuffled_labels.seed0"].novelty == pytest.approx(1.0)


def test_opposite_updates_across_seeds_are_incoherent():
    flip = [make_summary("fam_a", 0, e(0), step_coherence=0.64), make_summary("fam_a", 1, e(0, -1.0),
                                                                              step_coherence=0.64)]
    d = by_id(score_summaries(flip + controls()))
    assert d["fam_a.seed0"].seed_coherence == pytest.approx(-1.0)
    assert d["fam_a.seed0"].coherence == 0.0 and d["fam_a.seed0"].dis == 0.0
    aligned = [make_summary("fam_a", s, e(0), step_coherence=0.64) for s in (0, 1)]
    d = by_id(score_summaries(aligned + controls()))
    assert d["fam_a.seed1"].coherence == pytest.approx(math.sqrt(0.64))
    single = by_id(score_summaries([make_summary("fam_a", 0, e(0), step_coherence=0.3)] + controls()))
    assert single["fam_a.seed0"].seed_coherence is None and single["fam_a.seed0"].coherence == pytest.approx(0.3)


def test_magnitude_relative_to_same_seed_controls():
    probes = [make_summary("fam_a", 0, e(0), param_change=0.02, repr_change=0.01),
              make_summary("fam_a", 1, e(0), param_change=0.08, repr_change=0.04),
              make_summary("fam_b", 1, e(1), param_change=0.02, repr_change=0.01)]
    ctrl = [make_summary("control:shuffled_labels", 0, e(7), param_change=0.02, repr_change=0.01),
            make_summary("control:random_family", 0, e(6), param_change=0.02, repr_change=0.01),
            make_summary("control:shuffled_labels", 1, e(7), param_change=0.08, repr_change=0.04)]
    d = by_id(score_summaries(probes + ctrl))
    assert d["fam_a.seed0"].magnitude == pytest.approx(0.5)  # equals its seed's controls
    assert d["fam_a.seed1"].magnitude == pytest.approx(0.5)  # 4x larger, but so is seed 1's control
    assert d["fam_a.seed1"].control_param_change == pytest.approx(0.08)
    assert d["fam_b.seed1"].param_ratio == pytest.approx(0.25) and d["fam_b.seed1"].magnitude < 0.5
    big = by_id(score_summaries([make_summary("fam_a", 0, e(0), param_change=0.06, repr_change=0.03)]
                                + controls((0,))))
    assert big["fam_a.seed0"].magnitude == pytest.approx(0.75) and big["fam_a.seed0"].repr_ratio == pytest.approx(3)
    # a seed without controls falls back to all controls
    other = by_id(score_summaries([make_summary("fam_a", 5, e(0))] + ctrl))
    assert other["fam_a.seed5"].control_param_change == pytest.approx(0.04)


def test_zero_changes_give_ratio_one():
    d = by_id(score_summaries([make_summary("fam_a", 0, e(0), param_change=0.0, repr_change=0.0)]
                              + controls((0,), param_change=0.0, repr_change=0.0)))
    assert d["fam_a.seed0"].param_ratio == 1.0 and d["fam_a.seed0"].magnitude == pytest.approx(0.5)


def test_random_inputs_stay_in_unit_interval_and_keep_order():
    rng = random.Random(0)
    summaries = [make_summary(f, s, [rng.gauss(0, 1) for _ in range(SKETCH_DIM)], param_change=rng.uniform(0, 1),
                              repr_change=rng.uniform(0, 1), step_coherence=rng.uniform(-0.2, 1.2))
                 for f in ("fam_a", "fam_b", "fam_c", "control:shuffled_labels") for s in range(3)]
    rng.shuffle(summaries)
    scored = score_summaries(summaries)
    assert [s.probe_id for s in scored] == [s.probe_id for s in summaries]
    assert all(s.dis is None for s in summaries)  # copies, inputs untouched
    for s in scored:
        for x in (s.dis.dis, s.dis.magnitude, s.dis.coherence, s.dis.novelty):
            assert 0.0 <= x <= 1.0
        assert s.dis.dis == pytest.approx(s.dis.magnitude * s.dis.coherence * s.dis.novelty)
        assert s.dis.param_ratio >= 0 and s.dis.n_seeds == 3 and s.dis.seed_coherence is not None
    assert len({s.dis.scoring_set_hash for s in scored}) == 1
    rows = family_table(scored)
    assert [r["dis_mean"] for r in rows] == sorted((r["dis_mean"] for r in rows), reverse=True)
    assert {r["role"] for r in rows} == {"family", "control"} and all(r["dis_std"] >= 0 for r in rows)
    assert rows[0]["probe_a_loss_delta"] == pytest.approx(-0.1)


def test_errors_mixed_hashes_no_controls_and_sketch_mismatch():
    with pytest.raises(ValueError, match="config hashes.*fam_a.seed0.*fam_b.seed0"):
        score_summaries([make_summary("fam_a", 0), make_summary("fam_b", 0, config_hash="x" * 64)] + controls())
    with pytest.raises(ValueError, match="DIS needs control probes"):
        score_summaries([make_summary("fam_a", 0), make_summary("fam_b", 0, e(1))])
    base = build_direction_baseline([make_summary("fam_a", 0)], "round1")
    with pytest.raises(ValueError, match="sketch"):
        score_summaries([make_summary("fam_b", 0, e(1))] + controls(), baseline={**base, "sketch_seed": 9})


def test_baseline_similarity_lowers_novelty():
    round1 = [make_summary("fam_a", s, e(0)) for s in (0, 1)] + controls()
    base = build_direction_baseline(round1, "round1")
    assert base["kind"] == "probe_directions" and set(base["directions"]) == {"fam_a"}
    round2 = [make_summary("fam_b", s, [1.0, 1.0] + [0.0] * (SKETCH_DIM - 2)) for s in (0, 1)] + controls()
    plain = by_id(score_summaries(round2))["fam_b.seed0"]
    vs = by_id(score_summaries(round2, baseline=base))["fam_b.seed0"]
    assert plain.novelty == pytest.approx(1.0) and plain.baseline_similarity is None
    assert vs.baseline_similarity == pytest.approx(math.sqrt(0.5)) and vs.novelty == pytest.approx(1 - math.sqrt(0.5))
    assert vs.nearest == "baseline:fam_a" and vs.baseline_id == "round1"


def test_rank_stability_consistent_order_and_too_few_seeds():
    fams = {"fam_a": 0.01, "fam_b": 0.02, "fam_c": 0.04, "fam_d": 0.08}
    summaries = [make_summary(f, s, e(i), param_change=pc, repr_change=pc / 2)
                 for i, (f, pc) in enumerate(fams.items()) for s in range(4)] + controls(range(4))
    res = dis_rank_stability(summaries)
    assert res["groups"] == [[0, 2], [1, 3]] and res["n_families"] == 4
    assert res["spearman"] == pytest.approx(1.0)
    assert set(res["family_dis"]["A"]) == set(fams)
    one = dis_rank_stability([make_summary(f, 0, e(i)) for i, f in enumerate(fams)] + controls((0,)))
    assert one["spearman"] is None and "2 seeds" in one["note"]
    two = dis_rank_stability([make_summary(f, s, e(i)) for i, f in enumerate(["fam_a", "fam_b"]) for s in (0, 1)]
                             + controls())
    assert two["spearman"] is None and "3 families" in two["note"]
