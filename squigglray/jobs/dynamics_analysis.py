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
from squigglray.events import changepoints, correlation, invariance
from squigglray.events.schema import EVENTS_SCHEMA
from squigglray.paths import ArtifactStore
from squigglray.report import dynamics_plots as plots
from squigglray.report import dynamics_report as md
from squigglray.training import BaseTrainConfig

TREND_METRICS = ["frobenius_norm", "relative_update", "gradient_norm", "gradient_cosine", "stable_rank_fro_spec",
                 "effective_rank_entropy", "activation_anisotropy", "representation_drift"]


def loss_events(scalars: pa.Table, prov: dict[str, Any], max_steps: int, config, baseline=None) -> pa.Table:
    """Change points of the log training loss (window mean between log steps): the loss-only control."""
    steps = np.asarray(scalars.column("step").to_pylist(), dtype=np.int64)
    loss = np.log(np.maximum(np.asarray(scalars.column("loss_window_mean").to_pylist(), dtype=float), 1e-12))
    return changepoints.detect_series_events(steps, loss, metric="loss", layer=-1, module="scalar",
                                             max_steps=max_steps, provenance=prov, config=config, baseline=baseline)


def schedule_steps(cfg: BaseTrainConfig) -> dict[str, int]:
    """Steps where the optimizer's schedule itself changes: events there may be the schedule, not learning."""
    out = {"end of warmup": cfg.train.warmup_steps} if cfg.train.warmup_steps else {}
    acc = 0.0
    for phase, nxt in zip(cfg.curriculum, cfg.curriculum[1:]):
        acc += phase.fraction
        out[f"curriculum {phase.name} -> {nxt.name}"] = round(acc * cfg.train.steps)
    return out


def near_schedule(families: pa.Table, cfg: BaseTrainConfig, scalars_by_run, mode: str, tolerance: float) -> list[str]:
    """Structural families whose aligned centre lies within `tolerance` of a schedule change (any run's clock)."""
    marks = schedule_steps(cfg)
    if not marks:
        return []
    times = np.concatenate([invariance.align_steps(list(marks.values()), mode, max_steps=cfg.train.steps, scalars=t)
                            for t in scalars_by_run.values()])
    return [f["family_id"] for f in families.to_pylist()
            if f["structural"] and np.min(np.abs(times - f["t_center"])) <= tolerance]


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
            "correlation": summary["correlation"], "invariance_null": summary["invariance_null"],
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
    t = invariance.align(events, scalars, max_by_run, mode=opts.align)
    families = invariance.event_families(events, t, opts.tolerance, n_seeds=len(runs))
    null = invariance.invariance_null(events, t, opts.tolerance, n_seeds=len(runs), n_perm=opts.n_perm)
    structural = invariance.structural_candidates(families)
    structural_ids = {e for ids in structural.column("event_ids").to_pylist() for e in json.loads(ids)}

    def structural_only(table: pa.Table) -> pa.Table:
        keep = [e in structural_ids for e in table.column("event_id").to_pylist()]
        return table.filter(pa.array(keep, type=pa.bool_()))

    # Hundreds of single-metric events saturate any window; the correlation uses the structural ones.
    geo_for_corr = {rid: structural_only(geo_events[rid]) for rid in runs.values()}
    corr = correlation.correlation_table(geo_for_corr, loss_ev, scalars, max_by_run, n_perm=opts.n_perm * 2,
                                         mode=opts.align)
    per_event = correlation.event_correlations(geo_for_corr, loss_ev, scalars, max_by_run, mode=opts.align)
    jumps = {rid: correlation.probe_b_jumps(scalars[rid], run_id=rid) for rid in runs.values()}
    # the same test against in-distribution (probe A) jumps: where the training task itself is learned
    jumps_a = {rid: correlation.probe_jumps(scalars[rid], "probe_a_answer_acc", run_id=rid) for rid in runs.values()}
    corr_a = correlation.correlation_table(geo_for_corr, loss_ev, scalars, max_by_run, n_perm=opts.n_perm * 2,
                                           mode=opts.align, jumps_by_run=jumps_a)
    fam_corr = correlation.family_correlations(families, per_event)

    exp_dir = store.experiment_dir(exp_id)
    store.write_text(f"{exp_dir}/config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    store.write_parquet(f"{exp_dir}/event_families.parquet", families)
    store.write_parquet(f"{exp_dir}/correlation.parquet", correlation.as_table(corr))
    summary = {
        "experiment_id": exp_id, "analysis_key": key, "runs": {str(s): r for s, r in runs.items()}, "seeds": list(runs),
        "config_hash_without_seed": config_hash(cfg.model_dump(mode="json") | {"seed": None}),
        "package_version": __version__, "align": opts.align, "tolerance": opts.tolerance,
        "events_per_run": {rid: int(all_events[rid].num_rows) for rid in runs.values()},
        "families": int(families.num_rows), "structural_families": int(structural.num_rows),
        "invariance_null": null, "correlation": corr, "correlation_probe_a": corr_a,
        "probe_b_jumps": {rid: correlation.jumps_as_dicts(j) for rid, j in jumps.items()},
        "probe_a_jumps": {rid: correlation.jumps_as_dicts(j) for rid, j in jumps_a.items()},
        "schedule_steps": schedule_steps(cfg),
        "near_schedule": near_schedule(families, cfg, scalars, opts.align, opts.tolerance),
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
    store.write_text(f"{exp_dir}/report.md", md.experiment_markdown(summary, cfg, families, per_event))
    store.write_json(f"{exp_dir}/analysis.json", _finite(summary))  # last: its key vouches for all of the above
    return {"families": families, "correlation": corr, "invariance_null": null, "events": all_events,
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
