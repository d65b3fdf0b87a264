"""Seed-invariance matching (seed 000 §4.3): alignment, families, and the permutation null."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from squigglray.events.invariance import (
    align,
    align_steps,
    count_structural,
    event_families,
    invariance_null,
    log_step_time,
    loss_time,
    step_frac_time,
    structural_candidates,
)
from squigglray.events.schema import COMPOSITE, EVENT_FAMILIES_SCHEMA, EVENTS_SCHEMA


def ev(seed: int, step: int, metric: str = "spectral_norm", layer: int = 0,
       module: str = "self_attn.q_proj", kind: str = "mean_shift", magnitude: float = 1.0,
       score: float = 2.0, run_id: str | None = None) -> dict:
    run_id = run_id or f"run{seed}"
    return {
        "event_id": f"{run_id}:{metric}:{layer}:{module}:{kind}:{step}", "run_id": run_id,
        "seed": seed, "metric": metric, "layer": layer, "module": module, "kind": kind,
        "step": step, "step_start": max(step - 1, 0), "step_end": step + 1, "step_frac": 0.0,
        "magnitude": magnitude, "score": score, "penalty": 1.0, "n_points": 64,
        "n_members": 1, "members": "[]", "diagnostics": "{}", "baseline_id": "",
        "dataset_slice_hash": "d", "config_hash": "c", "package_version": "0",
    }


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)


def families_of(rows: list[dict], t, tolerance: float = 0.05, n_seeds: int | None = None):
    fams = event_families(table(rows), np.asarray(t, dtype=float), tolerance, n_seeds)
    assert fams.schema.equals(EVENT_FAMILIES_SCHEMA)
    return fams.to_pylist()


def scalars(steps, loss, window_mean=None) -> pa.Table:
    n = len(steps)
    return pa.table({
        "step": pa.array(steps, pa.int64()), "loss": pa.array(loss, pa.float64()),
        "loss_window_mean": pa.array(window_mean if window_mean is not None else [math.nan] * n,
                                     pa.float64()),
        "run_id": ["r"] * n,
    })


# --------------------------------------------------------------------------- alignment


def test_log_and_frac_times_hand_computed():
    # log(1 + 9) / log(1 + 999) = log 10 / log 1000 = 1/3
    np.testing.assert_allclose(log_step_time([0, 9, 99, 999, 5000], 999),
                               [0.0, 1 / 3, 2 / 3, 1.0, 1.0])
    np.testing.assert_allclose(step_frac_time([0, 250, 1000, 2000], 1000), [0, 0.25, 1, 1])
    with pytest.raises(ValueError):
        log_step_time([1], 0)


def test_loss_time_warp_hand_computed():
    # running min of [4, 3, 5, 1] = [4, 3, 3, 1]; progress = (4 - L) / 3 = [0, 1/3, 1/3, 1]
    s = scalars([1, 10, 100, 1000], [4.0, 3.0, 5.0, 1.0])
    t = loss_time([1, 10, 55, 100, 550, 1000, 4000], s)
    np.testing.assert_allclose(t, [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    # the smoothed column wins where finite
    s2 = scalars([1, 10, 100, 1000], [9.0, 9.0, 9.0, 9.0], window_mean=[4.0, 3.0, 5.0, 1.0])
    np.testing.assert_allclose(loss_time([55, 550], s2), [1 / 3, 2 / 3])
    # a flat loss has no drop to measure: falls back to log-step time
    flat = scalars([1, 10, 999], [2.0, 2.0, 2.0])
    np.testing.assert_allclose(loss_time([9], flat), [1 / 3])


def test_align_modes_per_run():
    rows = [ev(0, 9, run_id="a"), ev(1, 99, run_id="b"), ev(0, 55, run_id="a")]
    events = table(rows)
    max_steps = {"a": 999, "b": 9999}
    np.testing.assert_allclose(align(events, None, max_steps),
                               [1 / 3, math.log(100) / math.log(10000), math.log(56) / math.log(1000)])
    np.testing.assert_allclose(align(events, None, max_steps, mode="step_frac"),
                               [9 / 999, 99 / 9999, 55 / 999])
    by_run = {"a": scalars([1, 10, 100, 1000], [4.0, 3.0, 5.0, 1.0]),
              "b": scalars([1, 198], [2.0, 1.0])}
    np.testing.assert_allclose(align(events, by_run, None, mode="loss"), [8 / 27, 98 / 197, 1 / 3])
    # max_steps inferred from the scalars when missing
    np.testing.assert_allclose(align(events, by_run, {"b": 9999}, mode="log_step")[0],
                               math.log(10) / math.log(1001))
    with pytest.raises(ValueError):
        align_steps([1], "bogus", max_steps=10)
    with pytest.raises(ValueError):
        align_steps([1], "loss", max_steps=10)


# --------------------------------------------------------------------------- families


def _accounts_for_every_event(fams, rows):
    ids = [e for f in fams for e in json.loads(f["event_ids"])]
    assert sorted(ids) == sorted(r["event_id"] for r in rows)


def test_planted_family_and_singleton_distractors():
    rng = np.random.default_rng(0)
    rows, t = [], []
    for seed, tt in zip(range(3), (0.50, 0.52, 0.53)):  # planted, spread 0.03 < 0.05
        rows.append(ev(seed, 1000 + seed))
        t.append(tt)
    # same type, far apart in time: each must stay alone
    for seed, tt in zip(range(3), (0.10, 0.25, 0.85)):
        rows.append(ev(seed, 50 + seed, score=5.0))
        t.append(tt)
    # other types at random times
    for i in range(12):
        rows.append(ev(i % 3, 2000 + i, metric="frobenius_norm", layer=i))
        t.append(float(rng.random()))
    fams = families_of(rows, t, n_seeds=3)
    _accounts_for_every_event(fams, rows)
    structural = [f for f in fams if f["structural"]]
    assert len(structural) == 1
    fam = structural[0]
    assert fam["support"] == 3 and fam["n_seeds"] == 3 and json.loads(fam["seeds"]) == [0, 1, 2]
    assert fam["t_center"] == pytest.approx(np.mean([0.50, 0.52, 0.53]))
    assert fam["t_spread"] == pytest.approx(0.03)
    assert fam["step_center"] == pytest.approx(1001.0)
    assert fam["family_id"].startswith("spectral_norm|0|self_attn.q_proj|mean_shift|1|")
    assert all(f["support"] == 1 and not f["structural"] for f in fams if f is not fam)
    assert len(structural_candidates(event_families(table(rows), np.asarray(t), 0.05))) == 1


def test_tolerance_respected():
    rows = [ev(0, 100), ev(1, 110)]
    assert [f["support"] for f in families_of(rows, [0.40, 0.46], 0.05)] == [1, 1]
    assert [f["support"] for f in families_of(rows, [0.40, 0.46], 0.07)] == [2]
    # a chain 0.50 - 0.54 - 0.58 never yields a family wider than the tolerance
    rows = [ev(0, 1), ev(1, 2, score=9.0), ev(2, 3)]
    fams = families_of(rows, [0.50, 0.54, 0.58], 0.05)
    _accounts_for_every_event(fams, rows)
    assert all(f["t_spread"] <= 0.05 + 1e-12 for f in fams)
    assert sorted(f["support"] for f in fams) == [1, 2]


def test_at_most_one_event_per_seed():
    rows = [ev(0, 100, score=1.0), ev(0, 101, score=3.0), ev(1, 102)]
    fams = families_of(rows, [0.500, 0.510, 0.505])
    _accounts_for_every_event(fams, rows)
    for f in fams:
        ids = json.loads(f["event_ids"])
        assert len({i.split(":")[0] for i in ids}) == len(ids)
    big = [f for f in fams if f["support"] == 2][0]
    assert rows[1]["event_id"] in json.loads(big["event_ids"])  # the stronger seed-0 event anchors


def test_signs_kinds_layers_do_not_mix_but_composites_ignore_sign():
    rows = [ev(0, 100, magnitude=1.0), ev(1, 100, magnitude=-1.0),
            ev(2, 100, kind="slope_change"), ev(3, 100, layer=1), ev(4, 100, module="hidden")]
    fams = families_of(rows, [0.5] * 5)
    assert len(fams) == 5 and all(f["support"] == 1 for f in fams)
    comp = [ev(0, 100, metric=COMPOSITE, module=COMPOSITE, kind="composite", magnitude=2.0, layer=3),
            ev(1, 101, metric=COMPOSITE, module=COMPOSITE, kind="composite", magnitude=-1.0, layer=3),
            ev(2, 102, metric=COMPOSITE, module=COMPOSITE, kind="composite", magnitude=1.0, layer=-2)]
    fams = families_of(comp, [0.5, 0.51, 0.5])
    assert sorted(f["support"] for f in fams) == [1, 2]
    pair = [f for f in fams if f["support"] == 2][0]
    assert pair["kind"] == "composite" and pair["layer"] == 3 and pair["sign"] == 1
    assert pair["mean_magnitude"] == pytest.approx(0.5)


def test_empty_events_give_empty_families():
    empty = table([])
    assert event_families(empty, np.zeros(0)).num_rows == 0
    res = invariance_null(empty, np.zeros(0), n_perm=10)
    assert res["observed"] == 0 and res["p_value"] == 1.0
    with pytest.raises(ValueError):
        event_families(table([ev(0, 1)]), np.zeros(2))


# --------------------------------------------------------------------------- null


def _multi_seed_events(rng, n_seeds: int, n_types: int, aligned: bool):
    rows, t = [], []
    centers = rng.random(n_types) * 0.9 + 0.05
    for seed in range(n_seeds):
        for k in range(n_types):
            tt = centers[k] + rng.uniform(-0.01, 0.01) if aligned else rng.random()
            rows.append(ev(seed, 10 * k + seed, metric="stable_rank_fro_spec", layer=k % 6,
                           module=("mlp.up_proj", "self_attn.v_proj", "hidden")[k // 6 % 3],
                           kind=("mean_shift", "slope_change")[k // 18 % 2]))
            t.append(tt)
    return table(rows), np.asarray(t)


def test_null_small_p_for_aligned_events():
    events, t = _multi_seed_events(np.random.default_rng(1), n_seeds=4, n_types=30, aligned=True)
    for mode in ("shift_type", "random"):
        res = invariance_null(events, t, 0.05, n_perm=100, mode=mode, seed=0)
        assert res["observed"] == 30
        assert res["p_value"] < 0.02 and res["null_rate"] == 0.0
        assert res["null_mean"] < 20 and res["null_quantiles"]["0.95"] < 30
        assert set(res["null_quantiles"]) == {"0.05", "0.5", "0.95"}
    # one rotation per seed: a pair of seeds drawn close together brings back every family,
    # so the null is heavy-tailed and p stays large even for perfect agreement (documented)
    per_seed = invariance_null(events, t, 0.05, n_perm=100, mode="shift", seed=0)
    assert per_seed["null_mean"] < per_seed["observed"] and per_seed["null_quantiles"]["0.95"] == 30
    with pytest.raises(ValueError):
        invariance_null(events, t, mode="bogus")
    assert invariance_null(events, t, n_perm=20, seed=3) == invariance_null(events, t, n_perm=20, seed=3)


def test_null_large_p_for_independent_events():
    p_values = []
    for data_seed in range(5):
        events, t = _multi_seed_events(np.random.default_rng(100 + data_seed), 4, 30, aligned=False)
        res = invariance_null(events, t, 0.05, n_perm=100, mode="shift_type", seed=data_seed)
        assert res["observed"] == count_structural(events, t, 0.05)
        p_values.append(res["p_value"])
    assert p_values[0] >= 0.05
    assert sum(p < 0.05 for p in p_values) <= 1 and np.median(p_values) > 0.2
