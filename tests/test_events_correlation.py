"""Probe-jump / event correlation (seed 000 §5.2): jump rule, permutation test, loss control."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from squigglray.events.correlation import (
    CORRELATION_SCHEMA,
    SOURCES,
    Jump,
    as_table,
    correlation_table,
    event_correlations,
    family_correlations,
    probe_b_jumps,
    probe_jumps,
    window_counts,
)
from squigglray.events.invariance import align, event_families
from squigglray.events.schema import COMPOSITE, EVENTS_SCHEMA

MAX_STEPS = 10_000
GRID = sorted(set(np.unique(np.round(np.logspace(0, 3, 24)).astype(int)).tolist())
              | set(range(1000, MAX_STEPS + 1, 250)))


def ev(run_id: str, step: int, metric: str = "spectral_norm", layer: int = 0,
       module: str = "mlp.up_proj", kind: str = "mean_shift", seed: int = 0) -> dict:
    if metric == COMPOSITE:
        module, kind = COMPOSITE, "composite"
    return {
        "event_id": f"{run_id}:{metric}:{layer}:{module}:{kind}:{step}", "run_id": run_id,
        "seed": seed, "metric": metric, "layer": layer, "module": module, "kind": kind,
        "step": int(step), "step_start": int(step) - 1, "step_end": int(step) + 1,
        "step_frac": step / MAX_STEPS, "magnitude": 1.0, "score": 2.0, "penalty": 1.0,
        "n_points": 64, "n_members": 1, "members": "[]", "diagnostics": "{}", "baseline_id": "",
        "dataset_slice_hash": "d", "config_hash": "c", "package_version": "0",
    }


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)


def scalars(run_id: str, steps, acc, probe_loss=None) -> pa.Table:
    n = len(steps)
    nan = [math.nan] * n
    return pa.table({
        "step": pa.array(steps, pa.int64()), "loss": pa.array(np.linspace(3, 1, n)),
        "loss_window_mean": pa.array(nan, pa.float64()),
        "probe_b_loss": pa.array(probe_loss if probe_loss is not None else nan, pa.float64()),
        "probe_b_answer_acc": pa.array(acc, pa.float64()), "run_id": [run_id] * n,
    })


def run_with_jumps(run_id: str, jump_steps, rng) -> pa.Table:
    """Probe-B accuracy: small noise plus a +0.25 step at each jump step."""
    steps = np.asarray(GRID)
    acc = rng.normal(0, 0.004, len(steps))
    for s in jump_steps:
        acc += 0.25 * (steps >= s)
    return scalars(run_id, steps.tolist(), np.clip(acc, 0, 1).tolist())


def planted(rng, n_runs: int = 4, lead: float = 0.8, loss_lead: float | None = None,
            n_distractors: int = 2):
    """Runs with 3 jumps each, a geometry event at lead*jump step, optional loss events."""
    events, loss, scal = {}, {}, {}
    for r in range(n_runs):
        run_id = f"run{r}"
        jumps = sorted(rng.choice(np.arange(30, 9000), 3, replace=False).tolist())
        while np.min(np.diff(np.log(jumps))) < 1.7:  # windows of different jumps stay apart
            jumps = sorted(rng.choice(np.arange(30, 9000), 3, replace=False).tolist())
        scal[run_id] = run_with_jumps(run_id, jumps, rng)
        geo = [ev(run_id, int(lead * j), layer=i, seed=r) for i, j in enumerate(jumps)]
        geo += [ev(run_id, int(s), layer=9, seed=r) for s in rng.integers(2, MAX_STEPS, n_distractors)]
        geo += [ev(run_id, int(lead * jumps[0]), metric=COMPOSITE, layer=-2, seed=r)]
        events[run_id] = table(geo)
        if loss_lead is not None:
            loss[run_id] = table([ev(run_id, int(loss_lead * j), metric="loss", layer=-1,
                                     module="scalar", kind="slope_change", seed=r) for j in jumps])
    return events, loss, scal


def by_source(rows):
    return {r["source"]: r for r in rows}


# --------------------------------------------------------------------------- jumps


def test_probe_jumps_hand_built_series():
    steps = [1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512]
    acc = [0.0, 0.0, math.nan, 0.01, 0.0, 0.02, 0.30, 0.31, 0.30, 0.60, 0.62]
    jumps = probe_jumps(scalars("r", steps, acc))
    assert [(j.step, j.prev_step) for j in jumps] == [(32, 16), (256, 128)]
    assert [j.size for j in jumps] == pytest.approx([0.28, 0.30])
    assert all(j.run_id == "r" and j.column == "probe_b_answer_acc" and j.z >= 3 for j in jumps)
    # min_delta filters small-but-outlying increments
    assert probe_jumps(scalars("r", steps, acc), min_delta=0.29)[0].step == 256


def test_probe_jumps_merge_flat_and_loss_sign():
    steps = list(range(0, 1000, 100))
    acc = [0, 0, 0, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]  # two consecutive +0.2: one jump
    (jump,) = probe_jumps(scalars("r", steps, acc))
    assert (jump.step, jump.prev_step, jump.size) == (300, 200, pytest.approx(0.4))
    assert probe_jumps(scalars("r", steps, [0.5] * 10)) == []           # constant
    assert probe_jumps(scalars("r", [5], [0.5])) == []                    # one evaluation
    assert probe_jumps(scalars("r", steps, acc), column="missing") == []
    loss = [3.0, 3.0, 2.99, 3.0, 3.0, 2.0, 2.0, 2.01, 2.0, 2.0]          # a drop is a jump
    s = scalars("r", steps, [0.0] * 10, probe_loss=loss)
    (drop,) = probe_jumps(s, "probe_b_loss", sign=-1)
    assert drop.step == 500 and drop.size == pytest.approx(1.0)
    assert probe_jumps(s, "probe_b_loss") == []
    both = probe_b_jumps(scalars("r", steps, acc, probe_loss=loss), use_loss=True)
    assert [(j.step, j.column) for j in both] == [(300, "probe_b_answer_acc"), (500, "probe_b_loss")]


def test_window_counts():
    counts = window_counts(np.array([[0.1, 0.2, 0.5], [0.9, 0.95, 0.0]]),
                           np.array([0.0, 0.15]), np.array([0.2, 0.95]))
    assert counts.tolist() == [[2, 2], [1, 2]]
    assert window_counts(np.zeros((2, 0)), np.array([0.1]), np.array([0.2])).tolist() == [[0], [0]]


# --------------------------------------------------------------------------- permutation test


def test_planted_jumps_preceded_by_geometry_give_low_p():
    events, loss, scal = planted(np.random.default_rng(0), n_runs=8, loss_lead=2.0)
    rows = correlation_table(events, loss, scal, n_perm=500, seed=0)
    assert [r["source"] for r in rows] == list(SOURCES)
    assert as_table(rows).schema.equals(CORRELATION_SCHEMA)
    t = by_source(rows)
    geo = t["geometry"]
    assert geo["n_runs"] == 8 and geo["n_jumps"] == 24 and geo["n_events"] == 8 * 5
    assert geo["hits"] == 24 and geo["hit_rate"] == 1.0 and geo["pairs"] >= 24
    # the null keeps where events can happen (3 decades of log step, not the whole circle), so the
    # wide windows of 3 jumps per run already hold many events by chance: evidence, but not huge
    assert geo["null_mean_pairs"] < geo["pairs"] and geo["p_value"] < 0.05
    comp = t["geometry_composite"]   # one composite per run, right before its first jump
    assert comp["hits"] == 8 and comp["n_events"] == 8 and comp["p_value"] < 0.01
    # loss shifts trail the jumps by a factor 2 (beyond window_after + grid lag): no hits, p = 1
    assert t["loss"]["hits"] == 0 and t["loss"]["p_value"] == 1.0
    beyond = t["geometry_beyond_loss"]
    assert beyond["n_jumps"] == 24 and beyond["hits"] == 24 and beyond["p_value"] == geo["p_value"]
    assert correlation_table(events, loss, scal, n_perm=50, seed=3) == \
        correlation_table(events, loss, scal, n_perm=50, seed=3)


def test_unrelated_events_give_large_p():
    rng = np.random.default_rng(1)
    p_values = []
    for _ in range(10):
        events, _, scal = planted(rng, n_runs=3, n_distractors=0)
        # replace the planted events by events at uniformly random log times
        events = {r: table([ev(r, int(np.exp(rng.uniform(0, np.log(MAX_STEPS)))), layer=i)
                            for i in range(3)]) for r in events}
        p_values.append(by_source(correlation_table(events, None, scal, n_perm=200))["geometry"]["p_value"])
    assert sum(p < 0.05 for p in p_values) <= 2 and np.median(p_values) > 0.2
    # robust fixed case: every event well after every jump window
    events, _, scal = planted(np.random.default_rng(2), n_distractors=0)
    late = {r: table([ev(r, 9990, layer=i) for i in range(3)]) for r in events}
    scal = {r: run_with_jumps(r, [50, 300], np.random.default_rng(0)) for r in scal}
    assert by_source(correlation_table(late, None, scal, n_perm=200))["geometry"]["p_value"] >= 0.05


def test_loss_explaining_jumps_leaves_no_geometry_excess():
    events, loss, scal = planted(np.random.default_rng(4), loss_lead=0.9, n_distractors=0)
    t = by_source(correlation_table(events, loss, scal, n_perm=300))
    assert t["loss"]["hits"] == 12 and t["loss"]["p_value"] < 0.01
    assert t["geometry"]["p_value"] < 0.01           # geometry precedes the jumps too ...
    beyond = t["geometry_beyond_loss"]                # ... but adds nothing the loss misses
    assert beyond["n_jumps"] == 0 and beyond["hits"] == 0 and beyond["p_value"] == 1.0
    assert beyond["hit_rate"] is None
    # loss explains only some jumps: the rest are the beyond-loss denominator
    loss_partial = {r: loss[r].slice(0, 1) for r in loss}
    beyond = by_source(correlation_table(events, loss_partial, scal, n_perm=300))["geometry_beyond_loss"]
    assert beyond["n_jumps"] == 8 and beyond["hits"] == 8 and beyond["p_value"] < 0.05


def test_edge_cases_no_jumps_no_events_single_run():
    flat = {"a": scalars("a", GRID, [0.3] * len(GRID))}
    events = {"a": table([ev("a", 100)])}
    rows = correlation_table(events, None, flat, {"a": MAX_STEPS}, n_perm=20)
    for r in rows:
        assert r["n_jumps"] == 0 and r["hits"] == 0 and r["p_value"] == 1.0
        assert r["hit_rate"] is None and r["null_mean_hit_rate"] is None
    as_table(rows)
    one = {"a": run_with_jumps("a", [500], np.random.default_rng(0))}
    rows = by_source(correlation_table({}, {}, one, n_perm=20))
    assert rows["geometry"]["n_jumps"] == 1 and rows["geometry"]["n_events"] == 0
    assert rows["geometry"]["hit_rate"] == 0.0 and rows["geometry"]["p_value"] == 1.0
    rows = by_source(correlation_table({"a": table([ev("a", 450)])}, None, one, n_perm=50))
    assert rows["geometry"]["hits"] == 1
    given = {"a": [Jump("a", "manual", 9000, 8000, 1.0, 9.0)]}
    rows = by_source(correlation_table({"a": table([ev("a", 450)])}, None, one, n_perm=20,
                                       jumps_by_run=given))
    assert rows["geometry"]["n_jumps"] == 1 and rows["geometry"]["hits"] == 0
    with pytest.raises(ValueError):
        correlation_table({}, {}, one, n_perm=0)


def test_event_and_family_listing():
    scal = {f"run{r}": run_with_jumps(f"run{r}", [1000], np.random.default_rng(r)) for r in range(2)}
    # scalars grid has 1000 exactly; events at 800 (precedes), 5000 (unrelated)
    events = {f"run{r}": table([ev(f"run{r}", 800, seed=r), ev(f"run{r}", 5000, layer=3, seed=r)])
              for r in range(2)}
    loss = {"run0": table([ev("run0", 900, metric="loss", layer=-1, module="scalar")])}
    rows = event_correlations(events, loss, scal)
    by_id = {r["event_id"]: r for r in rows}
    hit = by_id["run0:spectral_norm:0:mlp.up_proj:mean_shift:800"]
    assert hit["jump_steps"] == [1000] and hit["with_jump"] and hit["jump_sizes"][0] > 0.2
    # the loss shift at 900 lies after the event at 800 (inside its downstream window)
    assert hit["loss_shift_steps"] == [900] and hit["with_loss_shift"]
    miss = by_id["run0:spectral_norm:3:mlp.up_proj:mean_shift:5000"]
    assert miss["jump_steps"] == [] and not miss["with_jump"] and not miss["with_loss_shift"]
    all_events = pa.concat_tables(list(events.values()))
    t = align(all_events, scal)  # max_steps inferred from the scalars: 10_000
    assert sorted(t.tolist()) == pytest.approx(sorted(r["t"] for r in rows))
    fams = event_families(all_events, t, 0.05)
    fc = {f["family_id"]: f for f in family_correlations(fams, rows)}
    early = [f for f in fc.values() if f["t_center"] < 0.8][0]
    assert early["structural"] and early["n_with_jump"] == 2 and early["seeds_with_jump"] == [0, 1]
    assert early["n_with_loss_shift"] == 1 and early["jump_only"] == 1
    late = [f for f in fc.values() if f["t_center"] > 0.9][0]
    assert late["n_with_jump"] == 0
