"""The dynamics report's tests on simulated experiments that look like real runs (events.simulate).

Fast versions of bench/calibration.py: a miscalibrated test (the old rotation nulls) fails the
null checks here, and a test with no power fails the planted checks. Each check draws its own
experiments from fixed seeds; bounds leave room for Monte-Carlo noise (40 experiments at a true
rate of 0.05 exceed 4 rejections with probability ~0.05; the old nulls reject in most).
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from squigglray.events import beyond_loss, correlation, invariance, multiple, simulate

ALPHA = 0.05


def rejections(p_values) -> int:
    return sum(p < ALPHA for p in p_values)


# --------------------------------------------------------------------------- H1 seed invariance


def h1_p(scenario: str, i: int, effect: int = 0, n_perm: int = 99) -> float:
    events, t = simulate.event_experiment(np.random.default_rng([11, i]), scenario, effect=effect)
    exclude = simulate.near_marks(t) if scenario == "schedule" else None
    return invariance.site_permutation_test(events, t, 0.05, n_perm=n_perm, seed=i, exclude=exclude)["p_value"]


@pytest.mark.parametrize("scenario", ["concentrated", "dependent", "schedule"])
def test_seed_invariance_holds_its_level_when_seeds_share_nothing(scenario):
    assert rejections(h1_p(scenario, i) for i in range(40)) <= 4


def test_seed_invariance_finds_planted_shared_events():
    assert rejections(h1_p("concentrated", i, effect=20) for i in range(10)) >= 8


def test_the_old_rotation_null_rejects_independent_seeds():
    """The bug this replaces: concentrated timing alone made 'H1 supported'."""
    p = []
    for i in range(8):
        events, t = simulate.event_experiment(np.random.default_rng([12, i]), "concentrated")
        p.append(invariance.invariance_null(events, t, 0.05, n_perm=30, seed=i)["p_value"])
    assert rejections(p) >= 6


def test_schedule_locked_events_reject_unless_left_out():
    events, t = simulate.event_experiment(np.random.default_rng(3), "schedule")
    kept = invariance.site_permutation_test(events, t, 0.05, n_perm=99, seed=0)
    assert kept["p_value"] < ALPHA  # the same series break at warmup end in every seed
    left_out = invariance.site_permutation_test(events, t, 0.05, n_perm=99, seed=0, exclude=simulate.near_marks(t))
    assert left_out["n_excluded"] > 0 and left_out["observed"] < kept["observed"]


def test_matched_events_equals_brute_force():
    rng = np.random.default_rng(5)
    type_id = rng.integers(0, 6, (3, 40))
    seed_index = rng.integers(0, 3, 40)
    t = rng.random(40)
    got = invariance.matched_events(type_id, seed_index, t, 0.05, 3)
    for d in range(3):
        brute = sum(any(type_id[d, j] == type_id[d, i] and seed_index[j] != seed_index[i]
                        and abs(t[j] - t[i]) <= 0.05 for j in range(40)) for i in range(40))
        assert got[d] == brute


def test_relabelling_moves_a_site_with_all_its_events_and_keeps_layer_structure():
    events, t = simulate.event_experiment(np.random.default_rng(6), "dependent")
    arrays = invariance._SiteArrays(events, t, "layer_module")
    sites = arrays.relabelled_sites(np.random.default_rng(0), 5)
    n_mod = len(arrays.modules)
    for d in range(5):
        for s in range(arrays.n_seeds):
            rows = arrays.seed_index == s
            pairs = set(zip(arrays.site[rows].tolist(), sites[d, rows].tolist()))
            assert len({a for a, _ in pairs}) == len(pairs)  # one image per site: a bijection on the seed's sites
            layer_map = {a // n_mod: b // n_mod for a, b in pairs}  # and layers map as whole layers
            assert all(layer_map[a // n_mod] == b // n_mod for a, b in pairs)
    with pytest.raises(ValueError):
        invariance.site_permutation_test(events, t, strata="bogus")


def test_family_p_values_single_out_the_planted_families():
    for n_seeds in (3, 6):
        events, t = simulate.event_experiment(np.random.default_rng(7), "concentrated", n_seeds, effect=15)
        families = invariance.event_families(events, t, 0.05).to_pylist()
        p = invariance.family_p_values(pa.Table.from_pylist(families), events, t, 0.05)
        q = multiple.bh_by_key(p)
        wide = [f["family_id"] for f in families if f["support"] >= max(3, n_seeds - 1)]  # mostly the planted
        chance = [f["family_id"] for f in families if f["support"] == 2]
        assert wide and chance and all(p[f["family_id"]] == 1.0 for f in families if f["support"] == 1)
        assert np.median([p[f] for f in wide]) < 0.01 < np.median([p[f] for f in chance])
        assert sum(q[f] <= 0.1 for f in chance) <= max(1, len(chance) // 20)
    # with 3 seeds a family's p is at best ~q_s^2 (about 0.01 here): BH over hundreds of families
    # cannot single it out; with 6 seeds it can
    assert sum(q[f] <= 0.1 for f in wide) >= len(wide) // 2


# --------------------------------------------------------------------------- H2 events before jumps


def h2_p(scenario: str, i: int, legacy: bool = False, **kw) -> float:
    jumps, events = simulate.jump_experiment(np.random.default_rng([21, i]), scenario, **kw)
    if scenario == "schedule":
        jumps = [j[~simulate.near_marks(j)] for j in jumps]
        events = [e[~simulate.near_marks(e)] for e in events]
    pairs, null, *_ = correlation.window_pairs_test(jumps, events, n_perm=199, seed=i,
                                                    clock_mix=1.0 if legacy else correlation.CLOCK_MIX)
    return (1 + int(np.sum(null >= pairs))) / 200


@pytest.mark.parametrize("scenario", ["concentrated", "dependent", "schedule"])
def test_probe_jump_test_holds_its_level(scenario):
    assert rejections(h2_p(scenario, i) for i in range(40)) <= 4


def test_probe_jump_test_finds_planted_links_and_the_old_null_did_not_hold():
    assert rejections(h2_p("uniform", i, effect=0.9, shock=8, n_events=20) for i in range(20)) >= 15
    assert rejections(h2_p("concentrated", i, legacy=True) for i in range(20)) >= 8


def test_quantile_clock_round_trip_and_rotation_keeps_the_density():
    times = np.random.default_rng(8).normal(0.6, 0.05, 400).clip(0, 1)
    clock = correlation.quantile_clock(times)
    x = np.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(correlation.rotated(x, np.zeros(1), clock)[0], x, atol=2e-3)
    spun = correlation.rotated(times, np.random.default_rng(9).random(200), clock).ravel()
    assert abs(np.mean(spun) - 0.6) < 0.03 and np.mean(np.abs(spun - 0.6) < 0.1) > 0.75


# --------------------------------------------------------------------------- H3 beyond loss


def h3_p(scenario: str, i: int, effect: float = 0.0) -> float:
    runs = simulate.interval_experiment(np.random.default_rng([31, i]), scenario, effect=effect)
    return beyond_loss.beyond_loss_test(runs, n_perm=49, seed=i)["p_value"]


@pytest.mark.parametrize("scenario", ["concentrated", "dependent", "schedule"])
def test_beyond_loss_holds_its_level_when_geometry_only_follows_loss(scenario):
    assert rejections(h3_p(scenario, i) for i in range(40)) <= 4


def test_beyond_loss_finds_geometry_that_carries_jumps():
    assert rejections(h3_p("concentrated", i, effect=2.0) for i in range(10)) >= 8


def test_beyond_loss_untestable_and_rows_from_real_tables():
    assert beyond_loss.beyond_loss_test([{"base": np.zeros((3, 4)), "geometry": np.zeros((3, 2)),
                                          "y": np.zeros(3)}])["p_value"] is None
    steps = [1, 2, 4, 8, 16, 32, 64, 84, 104]
    scalars = pa.table({"step": steps, "loss": np.linspace(3, 1, 9), "loss_window_mean": np.linspace(3, 1, 9),
                        "probe_b_answer_acc": [0, 0, 0, .1, .1, .5, .6, .6, .7]})
    geo = pa.table({"step": [s for s in steps for _ in range(2)], "layer": [0, 1] * 9,
                    "module": ["mlp.up_proj"] * 18, "metric": ["frobenius_norm"] * 18,
                    "value": [float(s) for s in steps for _ in range(2)]})
    rows = beyond_loss.interval_rows(scalars, geo, [30], 104, metrics=["frobenius_norm", "update_norm"])
    assert rows["base"].shape == (8, 5) and rows["geometry"].shape == (8, 2) and rows["metrics"][1] == "update_norm"
    np.testing.assert_allclose(rows["y"], np.diff([0, 0, 0, .1, .1, .5, .6, .6, .7]))
    assert rows["base"][:, 4].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]  # warmup end (30) falls in (16, 32]
    assert np.all(rows["geometry"][:, 1] == 0) and np.all(rows["geometry"][:, 0] > 0)


# --------------------------------------------------------------------------- multiple comparisons


def test_bh_qvalues_hand_computed_and_none_passes_through():
    # p sorted 0.01 0.02 0.03 0.5 (m = 4): p*m/rank = 0.04 0.04 0.04 0.5, then the running min from the top
    q = multiple.bh_qvalues([0.03, None, 0.01, 0.5, 0.02])
    assert q[1] is None
    np.testing.assert_allclose([q[0], q[2], q[3], q[4]], [0.04, 0.04, 0.5, 0.04])
    assert multiple.bh_qvalues([0.9, 0.95]) == [0.95, 0.95]  # q never below its own p's BH value, never > 1
    with pytest.raises(ValueError):
        multiple.bh_qvalues([1.5])


def test_bh_controls_fdr_on_uniform_nulls_with_some_signals():
    rng = np.random.default_rng(10)
    false = []
    for _ in range(200):
        p = np.concatenate([rng.random(45), rng.random(5) * 1e-4])
        sig = [i for i, v in enumerate(multiple.bh_qvalues(p.tolist())) if v <= 0.1]
        false.append(sum(i < 45 for i in sig) / max(1, len(sig)))
    assert np.mean(false) <= 0.1
    assert list(itertools.islice(multiple.bh_by_key({"a": 0.01, "b": None}).items(), 2)) == [("a", 0.01), ("b", None)]
