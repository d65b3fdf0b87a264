"""ruptures backend (EventConfig(method="ruptures")): planted breaks found, nulls quiet, schema, determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from squigglray.events import changepoints as cp
from squigglray.events import ruptures_backend as rb
from squigglray.events.schema import COMPOSITE, EVENTS_SCHEMA
from test_events_changepoints import MAX_STEPS, STEPS, U, geometry_table, planted, planted_scores, trend

RUP = cp.EventConfig(method="ruptures")


def rows_of(values, steps=STEPS, config=RUP, **kw):
    return cp.series_event_rows(steps, values, metric="m", layer=0, module="x", max_steps=MAX_STEPS, config=config,
                                **kw)


def u_of(row) -> float:
    return json.loads(row["diagnostics"])["log10_step"]


# measured on 90 series (3 seeds x 30): mean_shift 6 sigma recall 0.87 / precision 0.99,
# slope_change 16 sigma per decade recall 0.98 / precision 0.99 (module docstring table)
@pytest.mark.parametrize("kind,amp,min_recall,min_precision", [("mean_shift", 6.0, 0.7, 0.85),
                                                                ("slope_change", 16.0, 0.85, 0.85)])
def test_planted_breaks_found(kind, amp, min_recall, min_precision):
    recall, precision = planted_scores(rows_of, kind, amp, seeds=(1, 2))
    assert recall >= min_recall, (kind, recall)
    assert precision >= min_precision, (kind, precision)


def test_null_series_are_quiet():
    rng = np.random.default_rng(11)
    fired = total = 0
    for i in range(50):
        base = trend(i, rng, span=1.0) + 0.1 * rng.standard_normal(len(U))
        inc = np.diff(base)
        nulls = [
            rng.permutation(base),                                                            # shuffled values
            np.concatenate([[base[0]], base[0] + np.cumsum(rng.permutation(inc))]),           # shuffled increments
            np.concatenate([[base[0]], base[0] + np.cumsum(np.roll(inc, rng.integers(1, len(inc))))]),  # circular
            np.roll(rng.permutation(base), int(rng.integers(1, len(U)))),                     # circular, white
        ]
        for values in nulls:
            total += 1
            fired += bool(rows_of(values))
    assert total == 200 and fired / total <= 0.05, fired


def test_null_rate_function_with_ruptures():
    rates = cp.null_false_positive_rate(STEPS, RUP, n_series=60, seed=3)
    assert all(r <= 0.05 for r in rates.values()), rates


def test_rows_magnitude_sign_and_diagnostics():
    rng = np.random.default_rng(5)
    up = 10 * STEPS / STEPS[-1] + 8.0 * (U >= 1.5) + rng.standard_normal(len(U))
    (row,) = rows_of(up)
    diag = json.loads(row["diagnostics"])
    assert diag["detector"].startswith("ruptures-")
    assert row["kind"] == "mean_shift" and 4.0 < row["magnitude"] < 12.0
    assert row["step_start"] < row["step"] <= row["step_end"] and abs(u_of(row) - 1.5) < 0.15
    assert row["score"] >= 1 and row["penalty"] > 0 and row["n_points"] == len(STEPS)
    assert math.isclose(row["step_frac"], row["step"] / MAX_STEPS)
    down = 10 * (U - U[0]) + np.where(U > 1.5, -20.0 * (U - 1.5), 0.0) + 0.3 * rng.standard_normal(len(U))
    (row,) = rows_of(down)
    assert row["kind"] == "slope_change" and row["magnitude"] < 0
    assert rows_of(np.full(len(STEPS), 3.25)) == [] and rows_of(np.arange(5.0), steps=STEPS[:5]) == []


def test_config_method():
    assert cp.EventConfig().method == "regression" and cp.EventConfig().calibration()["method"] == "regression"
    assert RUP.calibration()["method"] == "ruptures"
    with pytest.raises(ValueError):
        cp.EventConfig(method="bogus")
    a = rb.calibrate_penalty(STEPS, RUP)
    rb._calibrate.cache_clear()
    assert rb.calibrate_penalty(STEPS, RUP) == a and list(a.penalty) == sorted(a.penalty)
    assert a.null_f["random_walk"]["q95"] > a.null_f["white"]["q95"]


def test_run_table_schema_and_determinism():
    geo = pa.concat_tables([geometry_table({"frobenius_norm": 1.5, "gradient_norm": 1.52}),
                            geometry_table({"update_norm": 2.2}, seed=1, run_id="run-b")])
    a = cp.detect_run_events(geo, MAX_STEPS, RUP)
    b = cp.detect_run_events(geo, MAX_STEPS, RUP)
    assert a.schema.equals(EVENTS_SCHEMA) and a.num_rows > 0 and a.equals(b)
    pa.Table.from_pylist(a.to_pylist(), schema=EVENTS_SCHEMA).validate(full=True)
    ids = a.column("event_id").to_pylist()
    assert len(ids) == len(set(ids))
    rows = a.to_pylist()
    singles = [r for r in rows if r["metric"] != COMPOSITE]
    assert {r["metric"] for r in singles} == {"frobenius_norm", "gradient_norm", "update_norm"}
    assert any(r["metric"] == COMPOSITE for r in rows)
    for r in rows:
        assert all(v is not None for v in r.values())
        if r["metric"] != COMPOSITE:
            assert json.loads(r["diagnostics"])["detector"] == rb.DETECTOR
            assert r["event_id"] == f"{r['run_id']}:{r['metric']}:{r['layer']}:{r['module']}:{r['kind']}:{r['step']}"


def test_scoring_baseline_freezes_the_ruptures_tables(tmp_path):
    from squigglray.paths import ArtifactStore

    store = ArtifactStore(str(tmp_path))
    base = cp.build_scoring_baseline([STEPS], RUP)
    assert base["detector"] == rb.DETECTOR
    cp.write_scoring_baseline(store, base)
    back = cp.read_scoring_baseline(store, base["baseline_id"])
    u = np.log10(STEPS)
    values = np.where(u > 1.6, 2.0, 0.0) + 0.05 * np.random.default_rng(0).standard_normal(len(STEPS))
    plain, frozen = rows_of(values), rows_of(values, baseline=back)
    assert plain and [r["step"] for r in plain] == [r["step"] for r in frozen]
    assert {r["baseline_id"] for r in frozen} == {base["baseline_id"]} and {r["baseline_id"] for r in plain} == {""}
    with pytest.raises(ValueError, match="another EventConfig"):
        rows_of(values, baseline=cp.build_scoring_baseline([STEPS]))  # the regression detector's tables
