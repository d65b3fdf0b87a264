"""Markdown of the dynamics reports (seed 000 §6): a research log, not a training log.

The experiment report states its hypotheses, what the data show (with the tests that decide it),
what it does not claim, its limitations, and how to reproduce it; each run gets a shorter log.
Every sentence about the outcome is computed from the tables, never written in advance.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow as pa

from squigglray.events.schema import COMPOSITE

ALPHA = 0.05


def _p(x: float | None) -> str:
    return "n/a" if x is None else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _verdict(p: float | None, n: int) -> str:
    if not n:
        return "untestable here (nothing to test)"
    return "supported" if p is not None and p < ALPHA else "not supported"


def _where(layer: int, module: str) -> str:
    if module == COMPOSITE:
        return "several layers" if layer == -2 else f"layer {layer}"
    if module == "scalar":
        return "run"
    return f"{'emb' if layer == -1 else f'L{layer}'} {module}"


def family_table(families: pa.Table, per_event: list[dict], limit: int = 12) -> list[str]:
    """Structural families, most supported and largest first, with whether they meet a probe-B jump."""
    linked = {e["event_id"]: e for e in per_event}
    rows = [f for f in families.to_pylist() if f["structural"]]
    rows.sort(key=lambda f: (-f["support"], -abs(f["mean_magnitude"]), f["family_id"]))
    if not rows:
        return ["No event family reached two seeds."]
    out = ["| metric | where | kind | sign | seeds | step (mean) | aligned t | mean magnitude | before a probe-B jump |",
           "|---|---|---|---:|---|---:|---:|---:|---|"]
    for f in rows[:limit]:
        members = [linked[e] for e in json.loads(f["event_ids"]) if e in linked]
        jump = sum(m["with_jump"] for m in members)
        out.append(f"| {f['metric']} | {_where(f['layer'], f['module'])} | {f['kind']} | {f['sign']:+d} | "
                   f"{', '.join(map(str, json.loads(f['seeds'])))} | {f['step_center']:.0f} | {f['t_center']:.3f} | "
                   f"{f['mean_magnitude']:+.2f} | {f'{jump}/{len(members)} runs' if members else '-'} |")
    if len(rows) > limit:
        out.append(f"\n({len(rows) - limit} more in event_families.parquet.)")
    return out


def correlation_lines(corr: list[dict], probe: str = "B") -> list[str]:
    out = [f"| events | probe-{probe} jumps | events | hits | hit rate | null hit rate | p |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in corr:
        out.append(f"| {r['source']} | {r['n_jumps']} | {r['n_events']} | {r['hits']} | {_rate(r['hit_rate'])} | "
                   f"{_rate(r['null_mean_hit_rate'])} | {_p(r['p_value'])} |")
    return out


def experiment_markdown(summary: dict[str, Any], cfg, families: pa.Table, per_event: list[dict]) -> str:
    null = summary["invariance_null"]
    corr = {r["source"]: r for r in summary["correlation"]}
    runs = summary["runs"]
    n_jumps = sum(len(j) for j in summary["probe_b_jumps"].values())
    geo, loss, beyond = corr["geometry"], corr["loss"], corr["geometry_beyond_loss"]
    struct = summary["structural_families"]
    by_metric = Counter(f["metric"] for f in families.to_pylist() if f["structural"])
    linked = [f for f in summary["family_correlations"] if f["structural"] and f["n_with_jump"]]
    seeds = ",".join(map(str, summary["seeds"]))
    lines = [
        f"# Dynamics experiment `{summary['experiment_id']}`", "",
        f"{len(runs)} seeds ({seeds}) of one config: the `{cfg.model.preset}` Llama-style model trained from scratch "
        f"for {cfg.train.steps} steps on the synthetic families, geometry captured and probes A/B evaluated at "
        "the logging cadence "
        f"(log-spaced until step {cfg.train.log_dense_until}, then every {cfg.train.log_every}). squigglray "
        f"{summary['package_version']}.", "",
        "| seed | run | events (geometry + loss) | probe-A jumps | probe-B jumps |", "|---:|---|---:|---:|---:|",
        *[f"| {s} | `{r}` | {summary['events_per_run'][r]} | {len(summary['probe_a_jumps'][r])} | "
          f"{len(summary['probe_b_jumps'][r])} |" for s, r in runs.items()],
        "",
        "## Hypotheses", "",
        "- **H1 (seed invariance).** Geometric change points recur across seeds at matching aligned times "
        "more often than chance timing gives.",
        "- **H2 (capability link).** Events shared by seeds (structural families) precede or coincide with "
        "probe-B (holdout) accuracy jumps more often than chance.",
        "- **H3 (beyond loss).** Those events also mark probe-B jumps that the loss curve's own change points "
        "do not mark.", "",
        "## Observations", "",
        f"- **H1: {_verdict(null['p_value'], null['n_events'])}.** {null['n_events']} events form "
        f"{summary['families']} families, {struct} of them structural (support >= 2 seeds, tolerance "
        f"{summary['tolerance']} in {summary['align']} time). Rotating each seed's event types at random gives "
        f"{null['null_mean']:.1f} structural families on average (95% quantile "
        f"{null['null_quantiles']['0.95']:.0f}); p = {_p(null['p_value'])} over {null['n_perm']} rotations.",
        "- Structural families by metric: "
        + (", ".join(f"{m} {n}" for m, n in by_metric.most_common()) or "none") + ".",
        f"- **H2: {_verdict(geo['p_value'], geo['n_jumps'])}.** {n_jumps} probe-B jumps in all runs; "
        f"{geo['hits']} of {geo['n_jumps']} follow a structural geometry event within the window "
        f"(hit rate {_rate(geo['hit_rate'])} against {_rate(geo['null_mean_hit_rate'])} under rotation, "
        f"p = {_p(geo['p_value'])}).",
        f"- **H3: {_verdict(beyond['p_value'], beyond['n_jumps'])}.** The loss-only control hits "
        f"{loss['hits']} of {loss['n_jumps']} jumps (p = {_p(loss['p_value'])}). Of the {beyond['n_jumps']} jumps "
        f"no loss change point marks, geometry events mark {beyond['hits']} (p = {_p(beyond['p_value'])}).",
        f"- {len(summary['near_schedule'])} of the {struct} structural families sit within the tolerance of a "
        "schedule change (" + (", ".join(f"{k} at step {v}" for k, v in summary["schedule_steps"].items()) or "none")
        + "): those may mark the optimizer's schedule rather than learning.",
        f"- Structural families that meet a probe-B jump in at least one run: {len(linked)}"
        + (f" (e.g. `{linked[0]['family_id']}`, seeds {linked[0]['seeds_with_jump']})." if linked else "."), "",
        "### Structural event families", "", *family_table(families, per_event), "",
        "### Events before probe-B jumps (permutation tests)", "", *correlation_lines(summary["correlation"]), "",
        "The same test against probe-A (in-distribution) answer-accuracy jumps "
        f"({sum(len(j) for j in summary['probe_a_jumps'].values())} jumps), where the training task itself is learned:",
        "", *correlation_lines(summary["correlation_probe_a"], "A"), "",
        "`hits`: jumps with at least one event in [t - 0.10, t + 0.02] of aligned time before/after the jump. "
        "The null rotates each run's events on the time circle (same rotations for every row). `beyond_loss` "
        "rows count only jumps that no loss change point marks.", "",
        "## Figures", "",
        "![loss and probes](plots/curves.png)", "",
        "Loss (log-log), probe A/B loss and answer accuracy, gradient norm; one colour per seed.", "",
        "![events by seed](plots/seed_alignment.png)", "",
        "Every event of every seed on the aligned time axis; circles joined across seeds are structural families.",
        "", "![correlation](plots/correlation.png)", "",
        "Per-run geometry trends with their events: `runs/<run_id>/reports/plots/geometry.png`.", "",
        "## Non-claims", "",
        "- No claim that any event causes a capability change: the tests are about timing only.",
        "- No claim beyond this model, data and schedule: scale and architecture invariance are untested.",
        "- An event family is a candidate, not a consensus event: three seeds cannot establish one.",
        "- Answer accuracy on the probes is exact greedy reproduction of the reference solution "
        "(a lower bound of solving), not the accuracy of free generation.", "",
        "## Limitations", "",
        f"- {len(runs)} seeds and a {cfg.model.preset} model: little statistical power; p-values are not corrected "
        "for the several tests in this report.",
        "- Change points are found on log-step resampled, z-scored series at the capture cadence; events between "
        "two captures are located only to that interval.",
        "- Probe-B jumps are increments between two evaluations; with a coarse cadence a jump spans many steps.",
        "- The training data are synthetic families, not OpenMathReasoning.",
        "- Learning-rate warmup and curriculum phase changes happen at the same step in every seed, so they "
        "produce seed-aligned events by construction; the report counts the families near them.", "",
        "## Reproduction", "",
        "```bash",
        f"squigglray dynamics --config experiments/{summary['experiment_id']}/config.yaml --seeds {seeds}",
        "```", "",
        f"Config hash without the seed `{summary['config_hash_without_seed'][:16]}`; per-seed config hashes are in "
        "each `runs/<run_id>/config.json`; the experiment id hashes the config, the seeds and the training slice. "
        "Files: `event_families.parquet`, `correlation.parquet`, `analysis.json`, "
        "`events_candidates/<run_id>.parquet`, `geometry_state/<run_id>.parquet`.",
    ]
    return "\n".join(lines) + "\n"


def run_markdown(run_id: str, seed: int, run_config: dict[str, Any], scalars: pa.Table, events: pa.Table,
                 jumps: list, exp_id: str) -> str:
    prov = run_config["provenance"]
    rows = scalars.to_pylist()
    first, last = rows[0], rows[-1]
    kinds = Counter((e["metric"], e["kind"]) for e in events.to_pylist() if e["metric"] != COMPOSITE)
    composites = [e for e in events.to_pylist() if e["metric"] == COMPOSITE]
    top = sorted(events.to_pylist(), key=lambda e: -e["score"])[:10]
    lines = [
        f"# Run `{run_id}`", "",
        f"Seed {seed} of experiment `{exp_id}` (its report: `experiments/{exp_id}/report.md`). Config hash "
        f"`{prov['config_hash'][:16]}`, slice `{prov['dataset_slice_id']}`, squigglray {prov['package_version']}.", "",
        "## Training and probes", "",
        "| step | loss | probe A loss | probe A answer acc | probe B loss | probe B answer acc |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['step']} | {r['loss']:.3f} | {r['probe_a_loss']:.3f} | {r['probe_a_answer_acc']:.2f} | "
          f"{r['probe_b_loss']:.3f} | {r['probe_b_answer_acc']:.2f} |" for r in (first, last)],
        "",
        "Probe-B answer-accuracy jumps: " + (", ".join(f"step {j.step} (+{j.size:.2f})" for j in jumps) or "none") + ".",
        "", "![loss and probes](plots/curves.png)", "",
        "## Events", "",
        f"{events.num_rows} candidate events ({len(composites)} composite). By metric and kind: "
        + (", ".join(f"{m} {k} {n}" for (m, k), n in sorted(kinds.items())) or "none") + ".", "",
        "| metric | where | kind | step | window | magnitude | score |", "|---|---|---|---:|---|---:|---:|",
        *[f"| {e['metric']} | {_where(e['layer'], e['module'])} | {e['kind']} | {e['step']} | "
          f"{e['step_start']}-{e['step_end']} | {e['magnitude']:+.2f} | {e['score']:.2f} |" for e in top],
        "", "![geometry trends](plots/geometry.png)", "",
        "Lines: per-layer geometry metrics (weight metrics averaged over the layer's matrices); markers: events.",
    ]
    return "\n".join(lines) + "\n"
