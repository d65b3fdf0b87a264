"""Change points and composites: planted breaks found, nulls quiet, schema, determinism, baselines."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pyarrow as pa
import pytest

from squigglray.events import changepoints as cp
from squigglray.events.composite import composite_rows
from squigglray.events.schema import COMPOSITE, EVENTS_SCHEMA
from squigglray.paths import ArtifactStore

PROV = {"run_id": "run-a", "seed": 3, "dataset_slice_hash": "slice", "config_hash": "cfg", "package_version": "0.t"}
MAX_STEPS = 800


def cadence(max_steps: int, dense_until: int = 64, every: int = 25, per_decade: int = 8) -> np.ndarray:
    """Same schedule as squigglray.training.cadence.log_steps (not imported: it pulls in torch)."""
    n = int(math.ceil(per_decade * math.log10(max(dense_until, 10))))
    steps = {int(round(dense_until ** (i / n))) for i in range(n + 1)}
    steps.update(range(every * max(1, math.ceil(dense_until / every)), max_steps + 1, every))
    steps.add(max_steps)
    return np.array(sorted(s for s in steps if 1 <= s <= max_steps))


STEPS = cadence(MAX_STEPS)  # 44 captures
U = np.log10(STEPS.astype(float))


def trend(i: int, rng: np.random.Generator, span: float = 10.0) -> np.ndarray:
    """Steady trend of range `span`: linear in step (even i) or in log step (odd i), random sign."""
    t = STEPS / STEPS[-1] if i % 2 == 0 else (U - U[0]) / (U[-1] - U[0])
    return span * t * rng.choice([-1.0, 1.0])


def planted(kind: str, amp: float, n: int, seed: int):
    """Series with one planted break (unit noise) at log step u* in the middle of the log range."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        u_star = U[0] + (U[-1] - U[0]) * rng.uniform(0.25, 0.65)
        sign = rng.choice([-1.0, 1.0])
        brk = (U >= u_star) * amp if kind == "mean_shift" else np.maximum(0.0, U - u_star) * amp
        yield u_star, sign, trend(i, rng) + sign * brk + rng.standard_normal(len(U))


def rows_of(values, steps=STEPS, **kw):
    return cp.series_event_rows(steps, values, metric="m", layer=0, module="x", max_steps=MAX_STEPS, **kw)


def u_of(row) -> float:
    return json.loads(row["diagnostics"])["log10_step"]


def planted_scores(detect, kind, amp, seeds):
    """Recall (a right-kind, right-sign event within 3 grid points) and precision over planted series."""
    tol = 3 * (U[-1] - U[0]) / (min(48, len(U)) - 1)
    hits = n_events = near_events = n = 0
    for seed in seeds:
        for u_star, sign, values in planted(kind, amp, 30, seed):
            rows = detect(values)
            n += 1
            n_events += len(rows)
            near = [r for r in rows if abs(u_of(r) - u_star) <= tol]
            near_events += len(near)
            hits += any(r["kind"] == kind and np.sign(r["magnitude"]) == sign for r in near)
    return hits / n, near_events / max(n_events, 1)


@pytest.mark.parametrize("kind,amp", [("mean_shift", 6.0), ("slope_change", 16.0)])
def test_planted_breaks_found(kind, amp):
    recall, precision = planted_scores(rows_of, kind, amp, seeds=(1, 2, 3))
    assert recall >= 0.8, (kind, recall)
    assert precision >= 0.8, (kind, precision)


def test_magnitude_is_standardized_and_signed():
    rng = np.random.default_rng(5)
    up = 10 * STEPS / STEPS[-1] + 8.0 * (U >= 1.5) + rng.standard_normal(len(U))
    (row,) = rows_of(up)
    assert row["kind"] == "mean_shift" and 5.0 < row["magnitude"] < 11.0
    assert row["step_start"] < row["step"] <= row["step_end"] and row["step"] == STEPS[U >= 1.5][0]
    assert row["score"] > 1 and row["penalty"] > 0 and row["n_points"] == len(STEPS)
    assert math.isclose(row["step_frac"], row["step"] / MAX_STEPS)
    down = 10 * (U - U[0]) + np.where(U > 1.5, -20.0 * (U - 1.5), 0.0) + 0.3 * rng.standard_normal(len(U))
    (row,) = rows_of(down)
    assert row["kind"] == "slope_change" and row["magnitude"] < 0
    assert abs(json.loads(row["diagnostics"])["coef"] + 20.0 / np.std(down)) < 0.2 * 20.0 / np.std(down)


def test_null_series_are_quiet():
    rng = np.random.default_rng(11)
    fired = total = 0
    for i in range(50):
        base = trend(i, rng, span=1.0) + 0.1 * rng.standard_normal(len(U))
        nulls = [
            rng.permutation(base),                                                   # shuffled values
            np.concatenate([[base[0]], base[0] + np.cumsum(rng.permutation(np.diff(base)))]),  # same drift
            trend(i, rng, span=5.0) + rng.standard_normal(len(U)),                   # trend + noise
            np.cumsum(rng.standard_normal(len(U))),                                  # pure random walk
        ]
        for values in nulls:
            total += 1
            fired += bool(rows_of(values))
    assert total == 200 and fired / total <= 0.05, fired


def test_null_rate_function_matches_target():
    rates = cp.null_false_positive_rate(STEPS, n_series=100, seed=3)
    assert set(rates) == {"shuffled_values", "shuffled_increments", "trend_noise"}
    assert all(r <= 0.05 for r in rates.values()), rates


def test_steady_trend_gives_no_mean_shift_ladder():
    rng = np.random.default_rng(2)
    s = STEPS.astype(float)
    shapes = [s, np.log(s), np.sqrt(s), s ** -0.5, -np.exp(-s / 200.0)]
    for shape in shapes:
        for noise in (0.0, 1e-3, 1e-2):
            y = 100 * (shape - shape.min()) / (shape.max() - shape.min()) + noise * 100 * rng.standard_normal(len(s))
            rows = rows_of(y)
            assert not [r for r in rows if r["kind"] == "mean_shift"], (shape[:3], noise, rows)
            assert len(rows) <= 1, (shape[:3], noise, rows)


def test_constant_short_and_dirty_series():
    assert rows_of(np.full(len(STEPS), 3.25)) == []
    assert rows_of(np.arange(5.0), steps=STEPS[:5]) == []
    rng = np.random.default_rng(0)
    values = 5 * (U - U[0]) + 6.0 * (U >= 1.5) + 0.5 * rng.standard_normal(len(U))
    dirty_steps = np.concatenate([STEPS, STEPS[:3], [0, 7]])          # duplicates, a step 0
    dirty_values = np.concatenate([values, values[:3], [1.0, np.nan]])  # and a NaN
    rows = rows_of(dirty_values, steps=dirty_steps)
    assert rows and all(math.isfinite(r["magnitude"]) and math.isfinite(r["score"]) for r in rows)


# ----------------------------------------------------------------------------- run level
def geometry_table(breaks: dict[str, float], seed: int = 0, run_id: str = "run-a", layers=(0, 1),
                   modules=("self_attn.q_proj", "mlp.down_proj")) -> pa.Table:
    """Long geometry table: a few metrics; `breaks` maps a metric to the log10 step of its jump."""
    rng = np.random.default_rng(seed)
    metrics = ["frobenius_norm", "gradient_norm", "stable_rank_fro_spec", "update_norm"]
    rows = []
    for metric in metrics:
        for layer in layers:
            for module in modules:
                steps = STEPS[1:] if metric == "update_norm" else STEPS   # absent at the first capture
                u = np.log10(steps.astype(float))
                y = 5 + 3 * steps / steps[-1] + 0.05 * rng.standard_normal(len(steps))
                if metric in breaks:
                    y = y + 2.0 * (u >= breaks[metric])
                for st, val in zip(steps, y):
                    rows.append({"run_id": run_id, "step": int(st), "layer": layer, "module": module,
                                 "metric": metric, "value": float(val), "seed": PROV["seed"],
                                 "dataset_slice_hash": "slice", "config_hash": "cfg", "package_version": "0.t",
                                 "capture_batch_hash": "b"})
    return pa.Table.from_pylist(rows)


def test_composite_when_metrics_break_together():
    table = cp.detect_run_events(geometry_table({"frobenius_norm": 1.5, "gradient_norm": 1.52}), MAX_STEPS)
    rows = table.to_pylist()
    comps = [r for r in rows if r["metric"] == COMPOSITE]
    singles = {r["event_id"]: r for r in rows if r["metric"] != COMPOSITE}
    assert len(comps) == 1
    c = comps[0]
    members = json.loads(c["members"])
    assert c["kind"] == "composite" and c["module"] == COMPOSITE and c["n_members"] == len(members) == 8
    assert {singles[m]["metric"] for m in members} == {"frobenius_norm", "gradient_norm"}
    assert c["layer"] == -2 and math.isclose(c["score"], sum(singles[m]["score"] for m in members))
    assert math.isclose(c["magnitude"], np.mean([abs(singles[m]["magnitude"]) for m in members]))
    diag = json.loads(c["diagnostics"])
    assert len(diag) == 8
    for key, d in diag.items():
        metric, layer, module = key.split("|")
        assert metric in ("frobenius_norm", "gradient_norm") and int(layer) in (0, 1) and module
        assert {"magnitude", "score", "step"} <= set(d)
    assert c["step_start"] <= c["step"] <= c["step_end"]
    assert c["event_id"] == f"run-a:{COMPOSITE}:-2:{COMPOSITE}:composite:{c['step']}"


def test_no_composite_when_breaks_far_apart():
    table = cp.detect_run_events(geometry_table({"frobenius_norm": 1.0, "gradient_norm": 2.0}), MAX_STEPS)
    metrics = table.column("metric").to_pylist()
    assert COMPOSITE not in metrics
    assert metrics.count("frobenius_norm") == 4 and metrics.count("gradient_norm") == 4


def test_composite_rules_on_rows():
    def row(metric, layer, u, score=2.0, mag=3.0):
        step = int(round(10 ** u))
        return {"event_id": f"r:{metric}:{layer}:x:mean_shift:{step}", "run_id": "r", "seed": 0, "metric": metric,
                "layer": layer, "module": "x", "kind": "mean_shift", "step": step, "step_start": step - 1,
                "step_end": step, "step_frac": step / 1000, "magnitude": mag, "score": score, "penalty": 10.0,
                "n_points": 40, "n_members": 1, "members": "[]", "diagnostics": json.dumps({"log10_step": u}),
                "baseline_id": "", "dataset_slice_hash": "", "config_hash": "", "package_version": ""}

    rows = [row("a", 1, 2.0), row("b", 1, 2.08, mag=-1.0), row("c", 1, 2.35), row("a", 0, 2.5)]
    (c,) = composite_rows(rows, window=0.1, min_metrics=2)
    assert c["layer"] == 1 and c["n_members"] == 2 and math.isclose(c["magnitude"], 2.0)
    assert composite_rows(rows, window=0.1, min_metrics=3) == []
    assert len(composite_rows(rows, window=0.3, min_metrics=3)[0]["members"]) > 2


def test_run_table_schema_unique_ids_and_determinism():
    geo = pa.concat_tables([geometry_table({"frobenius_norm": 1.5, "gradient_norm": 1.5}),
                            geometry_table({"update_norm": 2.2}, seed=1, run_id="run-b")])
    a = cp.detect_run_events(geo, MAX_STEPS)
    b = cp.detect_run_events(geo, MAX_STEPS)
    assert a.schema.equals(EVENTS_SCHEMA) and a.num_rows > 0
    assert a.equals(b)
    ids = a.column("event_id").to_pylist()
    assert len(ids) == len(set(ids))
    assert set(a.column("run_id").to_pylist()) == {"run-a", "run-b"}
    assert set(a.column("kind").to_pylist()) <= {"mean_shift", "slope_change", "composite"}
    for r in a.to_pylist():
        assert all(v is not None for v in r.values())
        json.loads(r["diagnostics"])
        if r["metric"] != COMPOSITE:
            assert r["event_id"] == f"{r['run_id']}:{r['metric']}:{r['layer']}:{r['module']}:{r['kind']}:{r['step']}"
            assert r["members"] == "[]" and r["n_members"] == 1 and r["seed"] == 3
    assert cp.detect_run_events(geo.slice(0, 0), MAX_STEPS).schema.equals(EVENTS_SCHEMA)
    loss = cp.detect_series_events(STEPS, -np.log(STEPS) + (U > 2) * 1.0, max_steps=MAX_STEPS, provenance=PROV)
    assert loss.schema.equals(EVENTS_SCHEMA) and loss.column("module").to_pylist() == ["scalar"] * loss.num_rows


def test_kinds_config_restricts_output():
    rng = np.random.default_rng(4)
    values = 10 * STEPS / STEPS[-1] + 8.0 * (U >= 1.5) + rng.standard_normal(len(U))
    only_slopes = cp.EventConfig(kinds=("slope_change",))
    assert all(r["kind"] == "slope_change" for r in rows_of(values, config=only_slopes))
    with pytest.raises(ValueError):
        cp.EventConfig(kinds=("bogus",))


def test_runtime_of_a_run():
    """~250 series x ~45 captures (schedules cached after the first call, as within a job)."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(250):
        steps = STEPS[1:] if k % 4 == 0 else STEPS
        y = rng.standard_normal() * np.log(steps) + 0.2 * rng.standard_normal(len(steps))
        rows += [{"run_id": "run-t", "step": int(s), "layer": k // 10, "module": f"m{k % 10}",
                  "metric": "frobenius_norm", "value": float(v), "seed": 0, "dataset_slice_hash": "",
                  "config_hash": "", "package_version": "", "capture_batch_hash": ""} for s, v in zip(steps, y)]
    geo = pa.Table.from_pylist(rows)
    cp.detect_run_events(geo.slice(0, 100), MAX_STEPS)  # warm the calibration cache
    t0 = time.perf_counter()
    out = cp.detect_run_events(geo, MAX_STEPS)
    elapsed = time.perf_counter() - t0
    assert out.schema.equals(EVENTS_SCHEMA)
    assert elapsed < 5.0, elapsed  # ~0.2 s on an idle core; generous for shared CI machines


def test_scoring_baseline_round_trip(tmp_path):
    store = ArtifactStore(str(tmp_path))
    baseline = cp.build_scoring_baseline([STEPS, STEPS[1:]])
    assert len(baseline["tables"]) == 2 and baseline["baseline_id"]
    assert cp.build_scoring_baseline([STEPS, STEPS[1:]]) == baseline  # content-addressed, deterministic
    rel = cp.write_scoring_baseline(store, baseline)
    assert rel == f"scoring_baselines/{baseline['baseline_id']}.json"
    back = cp.read_scoring_baseline(store, baseline["baseline_id"])
    assert back == json.loads(json.dumps(baseline))
    rng = np.random.default_rng(5)
    values = 10 * STEPS / STEPS[-1] + 8.0 * (U >= 1.5) + rng.standard_normal(len(U))
    with_b, without = rows_of(values, baseline=back), rows_of(values)
    assert with_b and [r["baseline_id"] for r in with_b] == [baseline["baseline_id"]] * len(with_b)
    assert [r["score"] for r in with_b] == pytest.approx([r["score"] for r in without])
    assert all(r["baseline_id"] == "" for r in without)
    with pytest.raises(ValueError):
        rows_of(values, baseline=back, config=cp.EventConfig(null_quantile=0.9))
    store.write_json(rel, {**back, "null_mix": [0.5, 0.5]})
    with pytest.raises(ValueError):
        cp.read_scoring_baseline(store, baseline["baseline_id"])


def test_calibration_is_deterministic_and_monotone():
    a = cp.calibrate_penalty(STEPS)
    cp._calibrate.cache_clear()
    b = cp.calibrate_penalty(STEPS)
    assert a == b
    assert list(a.penalty) == sorted(a.penalty) and a.penalty[0] > 0
    assert a.null_f["random_walk"]["q95"] > a.null_f["white"]["q95"]
