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


def family_table(families: pa.Table, per_event: list[dict], tests: list[dict], limit: int = 12) -> list[str]:
    """Structural families, smallest q first (schedule-near ones last), with whether they meet a probe-B jump."""
    linked = {e["event_id"]: e for e in per_event}
    by_id = {t["family_id"]: t for t in tests}
    rows = [f for f in families.to_pylist() if f["structural"]]
    none = {"q_value": None, "near_schedule": False}

    def q_of(f):
        q = by_id.get(f["family_id"], none)["q_value"]
        return 2.0 if q is None else q

    rows.sort(key=lambda f: (by_id.get(f["family_id"], none)["near_schedule"], q_of(f), -f["support"], f["family_id"]))
    if not rows:
        return ["No event family reached two seeds."]
    out = ["| metric | where | kind | sign | seeds | step (mean) | aligned t | q (BH) | before a probe-B jump |",
           "|---|---|---|---:|---|---:|---:|---:|---|"]
    for f in rows[:limit]:
        members = [linked[e] for e in json.loads(f["event_ids"]) if e in linked]
        jump = sum(m["with_jump"] for m in members)
        test = by_id.get(f["family_id"], none)
        q = "near schedule" if test["near_schedule"] else _p(test["q_value"])
        out.append(f"| {f['metric']} | {_where(f['layer'], f['module'])} | {f['kind']} | {f['sign']:+d} | "
                   f"{', '.join(map(str, json.loads(f['seeds'])))} | {f['step_center']:.0f} | {f['t_center']:.3f} | "
                   f"{q} | {f'{jump}/{len(members)} runs' if members else '-'} |")
    if len(rows) > limit:
        out.append(f"\n({len(rows) - limit} more in event_families.parquet.)")
    return out


def correlation_lines(corr: list[dict], probe: str = "B") -> list[str]:
    out = [f"| events | probe-{probe} jumps | events | hits | pairs | null pairs | p |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in corr:
        out.append(f"| {r['source']} | {r['n_jumps']} | {r['n_events']} | {r['hits']} | {r['pairs']} | "
                   f"{r['null_mean_pairs']:.1f} | {_p(r['p_value'])} |")
    return out


CALIBRATION_KEYS = {"H1": "seed_invariance", "H2": "probe_jumps", "H3": "beyond_loss"}


def calibration_line(hyp: str, calibration: dict[str, Any] | None) -> str:
    """The test's false-positive rates and power on simulated experiments (bench/calibration.py)."""
    entry = (calibration or {}).get("tests", {}).get(CALIBRATION_KEYS[hyp])
    if not entry:
        return "  - Calibration: none on record (run `python bench/calibration.py`)."
    fpr = ", ".join(f"{sc} {r['rate']:.3f}" for sc, r in entry["false_positive_rate"].items())
    power = entry["power"]
    n = next(iter(entry["false_positive_rate"].values()))["n"]
    return (f"  - Calibration ({n} simulated experiments per scenario, alpha {calibration['alpha']}): "
            f"false-positive rate {fpr}; power {power['rate']:.2f} at {power['effect']}.")


def _q(tests: list[dict], name: str) -> str:
    return next((_p(t["q_value"]) for t in tests if t["test"] == name), "n/a")


def data_text(cfg) -> str:
    """What the runs trained on, as the config has it (the report never assumes the families)."""
    d = cfg.data
    if d.slice:
        return f"the train split of the slice `{d.slice}`" + (" streamed through Ray Data" if d.stream else "")
    if d.parquet:
        return f"the OpenMathReasoning shards `{d.parquet}` streamed through Ray Data"
    return "the synthetic families " + ", ".join(f"`{f}`" for f in d.resolved_families())


def probes_text(cfg) -> str:
    """Where probes A and B come from and how their answer accuracy is measured."""
    p = cfg.probes
    if not p.enabled:
        return "Probes: none (probes.enabled is false)."
    if cfg.data.slice:
        where = (f"probe A is the first {p.a_per_family} items per family of the slice's `probe_a` split, probe B the "
                 f"first {p.b_per_family} of its `holdout` split (both kept disjoint from its train split when the "
                 "slice was built)")
    else:
        b_fams = ", ".join(sorted(p.b_families)) or "the training families"
        where = (f"probe A is {p.a_per_family} held-out instance{'s' * (p.a_per_family > 1)} per training family "
                 f"and level, probe B {p.b_per_family} per family of {b_fams} at the levels {', '.join(p.b_levels)}; "
                 "instances of the synthetic families")
        if cfg.data.parquet:
            where += ", not of the training data's distribution"
    if p.answer_mode(on_slice=bool(cfg.data.slice)) == "generate":
        how = (f"answer accuracy is free greedy tool-integrated generation (up to {p.max_new_tokens} tokens, one code "
               "round) whose final answer math-verify judges equal to the reference answer (a restated computation, "
               "one writing more numbers than the reference, counts as wrong)")
    else:
        how = ("answer accuracy is exact greedy reproduction of the reference solution (a lower bound of solving, "
               "not the accuracy of free generation)")
    return f"Probes: {where}; {how}."


def _families_line(rows: list[dict], near: bool, limit: int = 4) -> str:
    """How many structural families (away from / near the schedule), how many survive BH, the strongest."""
    picked = sorted((r for r in rows if r["near_schedule"] == near and r["p_value"] is not None),
                    key=lambda r: (r["p_value"], r["family_id"]))
    head = ", ".join(f"`{r['family_id']}` (p {_p(r['p_value'])}, q {_p(r['q_value'])})" for r in picked[:limit])
    return (f"{len(picked)} structural families, {sum(r['q_value'] <= 0.1 for r in picked)} with q <= 0.1"
            + (f"; smallest p: {head}" if head else ""))


def experiment_markdown(summary: dict[str, Any], cfg, families: pa.Table, per_event: list[dict],
                        calibration: dict[str, Any] | None = None) -> str:
    h1, h1_loss, h3 = summary["h1"], summary["h1_loss"], summary["h3"]
    tests = summary["tests"]
    corr = {r["source"]: r for r in summary["correlation"]}
    runs = summary["runs"]
    n_jumps = sum(len(j) for j in summary["probe_b_jumps"].values())
    geo, loss, beyond = corr["geometry"], corr["loss"], corr["geometry_beyond_loss"]
    struct = summary["structural_families"]
    by_metric = Counter(f["metric"] for f in families.to_pylist() if f["structural"])
    fam_rows = summary["family_tests"]
    linked = [f for f in summary["family_correlations"] if f["structural"] and f["n_with_jump"]]
    seeds = ",".join(map(str, summary["seeds"]))
    marks = sorted({(k, v) for m in summary["schedules"].values() for k, v in m.items()}, key=lambda kv: kv[1])
    jitter = summary.get("schedule_jitter", 0.0)
    lines = [
        f"# Dynamics experiment `{summary['experiment_id']}`", "",
        f"{len(runs)} seeds ({seeds}) of one config: the `{cfg.model.preset}` Llama-style model trained from scratch "
        f"for {cfg.train.steps} steps on {data_text(cfg)}, "
        "geometry captured and probes A/B evaluated at the logging cadence "
        f"(log-spaced until step {cfg.train.log_dense_until}, then every {cfg.train.log_every}). squigglray "
        f"{summary['package_version']}."
        + (f" Desynchronized-schedule control: each seed's warmup end and curriculum switches moved by up to "
           f"+-{jitter:.0%}." if jitter else ""), "", probes_text(cfg), "",
        "| seed | run | events (geometry + loss) | probe-A jumps | probe-B jumps |", "|---:|---|---:|---:|---:|",
        *[f"| {s} | `{r}` | {summary['events_per_run'][r]} | {len(summary['probe_a_jumps'][r])} | "
          f"{len(summary['probe_b_jumps'][r])} |" for s, r in runs.items()],
        "",
        "## Hypotheses", "",
        "- **H1 (seed invariance).** The same site (matrix of a block, or hidden layer) changes regime at a matching "
        "aligned time across seeds more often than each seed's own event timing, with its sites relabelled, gives.",
        "- **H2 (capability link).** Events of structural families away from the schedule precede or coincide with "
        "probe jumps more often than the same events at another phase of their own timing density.",
        "- **H3 (beyond loss).** Geometry predicts probe answer-accuracy increments on a held-out seed better than "
        "the loss, the schedule and time already do.", "",
        "Every verdict below is at alpha = 0.05 on the test's p; q is its Benjamini-Hochberg q-value over the "
        f"{sum(t['p_value'] is not None for t in tests)} tests of this report. Events and jumps within "
        f"{summary['tolerance']} aligned time of a schedule change ("
        + (", ".join(f"{k} at step {v}" for k, v in marks) or "none")
        + ") are left out of every test.", "",
        "## Observations", "",
        f"- **H1: {_verdict(h1['p_value'], h1['n_events'])}** ({summary['align']} time). {h1['observed']} of "
        f"{h1['n_events']} geometry events away from the schedule have a same-site, same-series partner in another "
        f"seed within {summary['tolerance']}; relabelling each seed's layers and matrices gives {h1['null_mean']:.1f} "
        f"(95% quantile {h1['null_quantiles']['0.95']:.0f}); p = {_p(h1['p_value'])}, "
        f"q = {_q(tests, 'H1 seed invariance (log step)')}, over {h1['n_perm']} relabellings.",
        f"  - On the loss-progress axis: {h1_loss['observed']} matched against {h1_loss['null_mean']:.1f}, "
        f"p = {_p(h1_loss['p_value'])}, q = {_q(tests, 'H1 seed invariance (loss progress)')} "
        f"({_verdict(h1_loss['p_value'], h1_loss['n_events'])}).",
        calibration_line("H1", calibration),
        f"- {struct} structural families (support >= 2 seeds); by metric: "
        + (", ".join(f"{m} {n}" for m, n in by_metric.most_common()) or "none") + ".",
        f"  - Away from the schedule, {_families_line(fam_rows, False)}.",
        f"  - Near a schedule change (reported apart, not tested): {sum(r['near_schedule'] for r in fam_rows)} "
        "families; these may mark the optimizer's schedule rather than learning.",
        f"  - On the loss-progress axis, {_families_line(summary['family_tests_loss'], False)}"
        + (": under the desynchronized schedule these stay aligned in learning progress while the schedule does not."
           if jitter else "."),
        f"- **H2: {_verdict(geo['p_value'], geo['n_jumps'])}.** {n_jumps} probe-B jumps in all runs, "
        f"{geo['n_jumps']} away from the schedule; {geo['n_events']} events of structural families away from the "
        f"schedule; {geo['hits']} jumps have one in their window (hit rate {_rate(geo['hit_rate'])}); "
        f"p = {_p(geo['p_value'])}, q = {_q(tests, 'H2 events before probe-B jumps')}.",
        calibration_line("H2", calibration),
        f"- **H3: {_verdict(h3['B']['p_value'], h3['B']['n_rows'])}.** Leave-one-seed-out, geometry "
        + (f"changes the error of the loss-only prediction of probe-B accuracy increments by {-h3['B']['gain']:+.1%} "
           f"(null mean {-h3['B']['null_mean']:+.1%}; negative is better), p = {_p(h3['B']['p_value'])}, "
           f"q = {_q(tests, 'H3 beyond loss (probe B)')}; probe A: {-h3['A']['gain']:+.1%}, "
           f"p = {_p(h3['A']['p_value'])}." if h3["B"]["p_value"] is not None else "could not be tested (too few "
           "probe intervals or runs).")
        + f" The window-count control: loss change points mark {loss['hits']} of {loss['n_jumps']} jumps; of the "
        f"{beyond['n_jumps']} they miss, geometry events mark {beyond['hits']} (p = {_p(beyond['p_value'])}).",
        calibration_line("H3", calibration),
        f"- Structural families that meet a probe-B jump in at least one run: {len(linked)}"
        + (f" (e.g. `{linked[0]['family_id']}`, seeds {linked[0]['seeds_with_jump']})." if linked else "."), "",
        "### Structural event families", "", *family_table(families, per_event, fam_rows), "",
        "### Events before probe-B jumps (permutation tests)", "", *correlation_lines(summary["correlation"]), "",
        "The same test against probe-A (in-distribution) answer-accuracy jumps "
        f"({sum(len(j) for j in summary['probe_a_jumps'].values())} jumps), where the training task itself is learned:",
        "", *correlation_lines(summary["correlation_probe_a"], "A"), "",
        "`pairs` counts (jump, event) pairs with the event in [t - 0.10, t + 0.02] of aligned time; `hits` the jumps "
        "with at least one. The null rotates each run's events on the quantile clock of the other runs' events (where "
        "events concentrate is kept, their phase is not). `beyond_loss` rows count only jumps that no loss change "
        "point marks.", "",
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
        "- Answer accuracy is what the probes measure (above), on their few instances; not a benchmark score.", "",
        "## Limitations", "",
        f"- {len(runs)} seeds and a {cfg.model.preset} model: little statistical power. The tests are calibrated on "
        "simulated experiments, not on real null runs; H1's null treats layers and matrices as exchangeable, so a "
        "shared event that hits every site at once (a phase change of the whole model) counts as shared timing, "
        "not as site-level invariance.",
        "- Change points are found on log-step resampled, z-scored series at the capture cadence; events between "
        "two captures are located only to that interval.",
        "- Probe-B jumps are increments between two evaluations; with a coarse cadence a jump spans many steps.",
        "- Learning-rate warmup, curriculum switches and the cadence change happen at the same step in every seed "
        "(unless the desynchronized control is on), so they produce seed-aligned events by construction: events "
        "near them are left out of the tests and their families reported apart.", "",
        "## Reproduction", "",
        "```bash",
        f"squigglray dynamics --config experiments/{summary['experiment_id']}/config.yaml --seeds {seeds}"
        + (f" --schedule-jitter {jitter}" if jitter else ""),
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
