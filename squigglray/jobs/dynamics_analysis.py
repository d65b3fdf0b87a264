"""After the seed trials: events per run, seed invariance, correlation tests, plots and reports.

Reads runs/<run_id>/scalars.parquet and geometry_state/<run_id>.parquet of every seed and writes
    events_candidates/<run_id>.parquet                 geometry change points + loss change points
    runs/<run_id>/reports/research_log.md (and report.md), plots/*.png    the run's research log
    experiments/<EXP_ID>/event_families.parquet        events matched across seeds
    experiments/<EXP_ID>/correlation.parquet, analysis.json, report.md, plots/*.png
Everything here is deterministic given the runs (seeded permutation tests): analysis.json, written
last, records the hash of what it read, how, and with which code (`analysis_key`); a rerun with the
same key reads it back, provided each run's research log carries that key too (runs are shared
by experiments whose seed lists overlap, and the last analysis of a run writes its log).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from squigglray import __version__
from squigglray.config import config_hash
from squigglray.events import beyond_loss, changepoints, correlation, invariance, multiple, simulate
from squigglray.events.schema import EVENTS_SCHEMA
from squigglray.paths import ArtifactStore
from squigglray.report import dynamics_plots as plots
from squigglray.report import dynamics_report as md
from squigglray.training import BaseTrainConfig
from squigglray.training.schedule import schedule_marks, seed_config

TREND_METRICS = ["frobenius_norm", "relative_update", "gradient_norm", "gradient_cosine", "stable_rank_fro_spec",
                 "effective_rank_entropy", "activation_anisotropy", "representation_drift"]


def loss_events(scalars: pa.Table, prov: dict[str, Any], max_steps: int, config, baseline=None) -> pa.Table:
    """Change points of the log training loss (window mean between log steps): the loss-only control."""
    steps = np.asarray(scalars.column("step").to_pylist(), dtype=np.int64)
    loss = np.log(np.maximum(np.asarray(scalars.column("loss_window_mean").to_pylist(), dtype=float), 1e-12))
    return changepoints.detect_series_events(steps, loss, metric="loss", layer=-1, module="scalar",
                                             max_steps=max_steps, provenance=prov, config=config, baseline=baseline)


def run_schedules(cfg: BaseTrainConfig, runs: dict[int, str], jitter: float) -> dict[str, dict[str, int]]:
    """Per run, the steps where its schedule changes (each seed's own under the desynchronized control)."""
    return {rid: schedule_marks(seed_config(cfg, seed, jitter)) for seed, rid in runs.items()}


def near_schedule_mask(run_ids, t: np.ndarray, marks_t: dict[str, np.ndarray], tolerance: float) -> np.ndarray:
    """Rows whose aligned time lies within `tolerance` of a schedule change of their own run."""
    out = np.zeros(len(t), dtype=bool)
    for i, (rid, ti) in enumerate(zip(run_ids, t)):
        m = marks_t.get(rid)
        out[i] = m is not None and len(m) > 0 and bool(np.min(np.abs(m - ti)) <= tolerance)
    return out


def marks_in_time(schedules: dict[str, dict[str, int]], mode: str, max_steps: int, scalars_by_run) -> dict[str, np.ndarray]:
    return {rid: invariance.align_steps(list(m.values()), mode, max_steps=max_steps, scalars=scalars_by_run[rid])
            for rid, m in schedules.items()}


def seed_invariance(events: pa.Table, scalars, max_steps: int, schedules, mode: str, tolerance: float,
                    n_perm: int) -> dict[str, Any]:
    """H1 on one time axis: families, the site-relabelling test without schedule-near events, and
    each family's p-value (None for families near a schedule change: reported apart)."""
    t = invariance.align(events, scalars, {rid: max_steps for rid in scalars}, mode=mode)
    near = near_schedule_mask(events.column("run_id").to_pylist(), t,
                              marks_in_time(schedules, mode, max_steps, scalars), tolerance)
    families = invariance.event_families(events, t, tolerance, n_seeds=len(scalars))
    test = invariance.site_permutation_test(events, t, tolerance, n_perm=n_perm, exclude=near)
    fam_p = invariance.family_p_values(families, events, t, tolerance, exclude=near)
    near_ids = {e for e, n in zip(events.column("event_id").to_pylist(), near) if n}
    near_families = {f["family_id"] for f in families.to_pylist()
                     if f["structural"] and set(json.loads(f["event_ids"])) & near_ids}
    return {"t": t, "near": near, "families": families, "test": test | {"align": mode},
            "family_rows": family_rows(families, fam_p, near_families), "near_families": near_families}


def family_rows(families: pa.Table, fam_p: dict[str, float | None], near_families: set[str]) -> list[dict[str, Any]]:
    """Structural families with p, BH q (over every tested family, singletons included) and schedule flag."""
    q = multiple.bh_by_key(fam_p)
    return [{"family_id": f["family_id"], "p_value": fam_p.get(f["family_id"]), "q_value": q.get(f["family_id"]),
             "near_schedule": f["family_id"] in near_families} for f in families.to_pylist() if f["structural"]]


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t is not None and t.num_rows]
    return pa.concat_tables(tables) if tables else EVENTS_SCHEMA.empty_table()


def _code_hash() -> str:
    """The analysis code itself (events, its plots and reports, this module): new code, new analysis."""
    from squigglray import events

    files = sorted(Path(events.__file__).parent.glob("*.py")) + [Path(plots.__file__), Path(md.__file__),
                                                                 Path(__file__)]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def analysis_key(store: ArtifactStore, cfg: BaseTrainConfig, runs: dict[int, str], opts) -> str:
    """The hash of the analysis's inputs (each run's scalars, geometry and config), settings and code."""
    files = {rid: [hashlib.sha256(store.read_bytes(p)).hexdigest()
                   for p in (store.run_scalars(rid), store.geometry_state(rid), store.run_config(rid))]
             for rid in runs.values()}
    return config_hash({"config": cfg.model_dump(mode="json"), "runs": {str(s): r for s, r in runs.items()},
                        "files": files, "detector": opts.detector, "align": opts.align,
                        "tolerance": opts.tolerance, "n_perm": opts.n_perm, "version": __version__,
                        "code": _code_hash()})


def _key_line(key: str) -> str:
    return f"\n<!-- analysis_key {key} -->\n"


def stored_analysis(store: ArtifactStore, exp_id: str, runs: dict[int, str], key: str) -> dict[str, Any] | None:
    """The analysis written earlier with this key, read back; None if any part is missing or stale."""
    exp_dir = store.experiment_dir(exp_id)
    needed = [f"{exp_dir}/analysis.json", f"{exp_dir}/event_families.parquet"]
    needed += [p for rid in runs.values() for p in (store.run_research_log(rid), store.events_candidates(rid))]
    if not all(store.exists(p) for p in needed):
        return None
    summary = store.read_json(f"{exp_dir}/analysis.json")
    if summary.get("analysis_key") != key or not all(
            store.read_text(store.run_research_log(rid)).endswith(_key_line(key)) for rid in runs.values()):
        return None
    return {"families": store.read_parquet(f"{exp_dir}/event_families.parquet"),
            "correlation": summary["correlation"], "h1": summary["h1"],
            "events": {rid: store.read_parquet(store.events_candidates(rid)) for rid in runs.values()},
            "summary": summary, "analysis_reused": True}


def analyze_experiment(store: ArtifactStore, exp_id: str, cfg: BaseTrainConfig, runs: dict[int, str],
                       opts, reuse: bool = True) -> dict[str, Any]:
    key = analysis_key(store, cfg, runs, opts)
    if reuse and (stored := stored_analysis(store, exp_id, runs, key)):
        return stored
    max_steps = cfg.train.steps
    event_cfg = changepoints.EventConfig(method=opts.detector)
    scalars = {rid: store.read_parquet(store.run_scalars(rid)) for rid in runs.values()}
    geometry = {rid: store.read_parquet(store.geometry_state(rid)) for rid in runs.values()}
    # One scoring baseline (the calibrated penalty tables of the capture schedules) for all seeds.
    # (metrics against the previous capture start one capture later, hence the second schedule)
    full = {tuple(sorted(set(g.column("step").to_pylist()))) for g in geometry.values()}
    schedules = full | {s[1:] for s in full} | {tuple(t.column("step").to_pylist()) for t in scalars.values()}
    baseline = changepoints.build_scoring_baseline(sorted(schedules), event_cfg)
    changepoints.write_scoring_baseline(store, baseline)
    run_config = {rid: store.read_json(store.run_config(rid)) for rid in runs.values()}
    geo_events, loss_ev, all_events = {}, {}, {}
    for seed, rid in runs.items():
        prov = run_config[rid]["provenance"]
        geo_events[rid] = changepoints.detect_run_events(geometry[rid], max_steps, event_cfg, baseline)
        loss_ev[rid] = loss_events(scalars[rid], prov, max_steps, event_cfg, baseline)
        all_events[rid] = _concat([geo_events[rid], loss_ev[rid]])
        store.write_parquet(store.events_candidates(rid), all_events[rid])

    events = _concat(list(all_events.values()))
    max_by_run = {rid: max_steps for rid in runs.values()}
    schedules = run_schedules(cfg, runs, opts.schedule_jitter)
    h1 = seed_invariance(events, scalars, max_steps, schedules, opts.align, opts.tolerance, opts.n_perm)
    # the same on the learning-progress axis: seeds compared where they stand in their loss drop
    h1_loss = seed_invariance(events, scalars, max_steps, schedules, "loss", opts.tolerance, opts.n_perm)
    t, families = h1["t"], h1["families"]
    structural = invariance.structural_candidates(families)
    near_families = h1["near_families"]
    learning_ids = {e for f in structural.to_pylist() if f["family_id"] not in near_families
                    for e in json.loads(f["event_ids"])}

    def learning_only(table: pa.Table) -> pa.Table:
        keep = [e in learning_ids for e in table.column("event_id").to_pylist()]
        return table.filter(pa.array(keep, type=pa.bool_()))

    # H2 uses the structural events away from the schedule, and jumps away from it too
    marks_t = marks_in_time(schedules, opts.align, max_steps, scalars)

    def away(jumps_by_run):
        out = {}
        for rid, js in jumps_by_run.items():
            t_j = invariance.align_steps([j.step for j in js], opts.align, max_steps=max_steps, scalars=scalars[rid])
            near = near_schedule_mask([rid] * len(js), t_j, marks_t, opts.tolerance)
            out[rid] = [j for j, n in zip(js, near) if not n]
        return out

    jumps = {rid: correlation.probe_b_jumps(scalars[rid], run_id=rid) for rid in runs.values()}
    # the same test against in-distribution (probe A) jumps: where the training task itself is learned
    jumps_a = {rid: correlation.probe_jumps(scalars[rid], "probe_a_answer_acc", run_id=rid) for rid in runs.values()}
    geo_for_corr = {rid: learning_only(geo_events[rid]) for rid in runs.values()}
    corr_args = dict(n_perm=opts.n_perm * 2, mode=opts.align)
    corr = correlation.correlation_table(geo_for_corr, loss_ev, scalars, max_by_run, jumps_by_run=away(jumps), **corr_args)
    corr_a = correlation.correlation_table(geo_for_corr, loss_ev, scalars, max_by_run, jumps_by_run=away(jumps_a),
                                           **corr_args)
    per_event = correlation.event_correlations(geo_for_corr, loss_ev, scalars, max_by_run, mode=opts.align)
    fam_corr = correlation.family_correlations(families, per_event)
    # H3: does geometry predict probe accuracy increments beyond loss, on a held-out seed?
    h3 = {}
    for probe, column in (("B", "probe_b_answer_acc"), ("A", "probe_a_answer_acc")):
        rows = [beyond_loss.interval_rows(scalars[rid], geometry[rid], list(schedules[rid].values()), max_steps,
                                          column, metrics=TREND_METRICS) for rid in runs.values()]
        h3[probe] = beyond_loss.beyond_loss_test(rows, n_perm=opts.n_perm, seed=0)
    tests = {"H1 seed invariance (log step)": h1["test"]["p_value"],
             "H1 seed invariance (loss progress)": h1_loss["test"]["p_value"],
             "H2 events before probe-B jumps": corr[0]["p_value"] if corr[0]["n_jumps"] else None,
             "H2 events before probe-A jumps": corr_a[0]["p_value"] if corr_a[0]["n_jumps"] else None,
             "H3 beyond loss (probe B)": h3["B"]["p_value"], "H3 beyond loss (probe A)": h3["A"]["p_value"]}
    q_tests = multiple.bh_by_key(tests)

    exp_dir = store.experiment_dir(exp_id)
    store.write_text(f"{exp_dir}/config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    store.write_parquet(f"{exp_dir}/event_families.parquet", families)
    store.write_parquet(f"{exp_dir}/correlation.parquet", correlation.as_table(corr))
    summary = {
        "experiment_id": exp_id, "analysis_key": key, "runs": {str(s): r for s, r in runs.items()}, "seeds": list(runs),
        "config_hash_without_seed": config_hash(cfg.model_dump(mode="json") | {"seed": None}),
        "package_version": __version__, "align": opts.align, "tolerance": opts.tolerance,
        "schedule_jitter": opts.schedule_jitter,
        "events_per_run": {rid: int(all_events[rid].num_rows) for rid in runs.values()},
        "families": int(families.num_rows), "structural_families": int(structural.num_rows),
        "h1": h1["test"], "h1_loss": h1_loss["test"], "h3": h3,
        "tests": [{"test": k, "p_value": p, "q_value": q_tests[k]} for k, p in tests.items()],
        "family_tests": h1["family_rows"], "family_tests_loss": h1_loss["family_rows"],
        "correlation": corr, "correlation_probe_a": corr_a,
        "probe_b_jumps": {rid: correlation.jumps_as_dicts(j) for rid, j in jumps.items()},
        "probe_a_jumps": {rid: correlation.jumps_as_dicts(j) for rid, j in jumps_a.items()},
        "schedules": schedules, "near_schedule": sorted(near_families),
        "scoring_baseline": baseline["baseline_id"], "detector": opts.detector,
        "family_correlations": [f for f in fam_corr if f["n_with_jump"] or f["n_with_loss_shift"]],
    }

    seed_of = {rid: s for s, rid in runs.items()}
    by_seed = {seed_of[rid]: tab for rid, tab in scalars.items()}
    store.write_bytes(f"{exp_dir}/plots/curves.png", plots.curves_png(by_seed, f"{exp_id}: loss and probes"))
    store.write_bytes(f"{exp_dir}/plots/seed_alignment.png",
                      plots.seed_alignment_raster_png(events, t, families, f"{exp_id}: events by seed ({opts.align})"))
    store.write_bytes(f"{exp_dir}/plots/correlation.png", plots.correlation_png(corr, "events before probe-B jumps"))
    for seed, rid in runs.items():
        rdir = f"{store.run_dir(rid)}/reports"
        store.write_bytes(f"{rdir}/plots/curves.png", plots.curves_png({seed: scalars[rid]}, f"{rid}: loss and probes"))
        store.write_bytes(f"{rdir}/plots/geometry.png", plots.geometry_trends_png(
            geometry[rid], all_events[rid], TREND_METRICS, rid, f"{rid}: geometry per layer, events marked"))
        log = md.run_markdown(rid, seed, run_config[rid], scalars[rid], all_events[rid], jumps[rid], exp_id)
        store.write_text(store.run_research_log(rid), log.rstrip("\n") + _key_line(key))
        store.write_text(store.run_report(rid), log)
    store.write_text(f"{exp_dir}/report.md", md.experiment_markdown(summary, cfg, families, per_event,
                                                                               simulate.recorded_calibration()))
    store.write_json(f"{exp_dir}/analysis.json", _finite(summary))  # last: its key vouches for all of the above
    return {"families": families, "correlation": corr, "h1": h1["test"], "events": all_events,
            "summary": summary, "analysis_reused": False}


def _finite(obj: Any) -> Any:
    """JSON has no NaN: replace non-finite floats by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
