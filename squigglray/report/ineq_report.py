"""The inequality pipeline's report: data funnel, per-family scores of the few-shot baseline and
the zero-shot fine-tuned model under each judge, judge agreement, SFT loss and learning curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from squigglray.paths import ArtifactStore  # noqa: E402
from squigglray.report.plots import fig_png  # noqa: E402


def _pct(x) -> str:
    return "—" if x is None else f"{x:.0%}"


def _num(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def _targets_line(split: dict) -> str:
    mix = split.get("target_source")
    if mix is None:
        return "SFT targets: not recorded (a split made before target_source existed)."
    return (f"SFT targets (train rows): {mix.get('llm', 0)} LLM-written proofs that passed the gate, "
            f"{mix.get('reference', 0)} reference proofs (the fallback where no LLM proof passed).")


def write_report(store: ArtifactStore, exp: str, out: dict) -> None:
    d = store.experiment_dir(exp)
    base, final = out["baseline"], out["final"]
    judges = sorted(set(base["scores"]) & set(final["scores"]))
    split = out["split"]
    lines = [f"# Olympiad inequalities {exp}", "",
             f"config hash `{out['config_hash'][:12]}`, seed {out['seed']}, package {out['package_version']}", "",
             "## Data", "",
             f"{out['problems']['problems']} problems generated; candidates by source (passed = every step "
             f"justified by the proof rule book, the gate; claim verified = the solver holds the written chain, "
             f"justified or not):", "",
             "| source | candidates | passed | claim verified | LLM verifier says correct |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {src} | {s['candidates']} | {s['passed']} | {s.get('claim_verified', 'n/a')} | "
              f"{s['llm_says_correct']} |" for src, s in sorted(out["candidates"]["by_source"].items())]
    lines += ["", f"Split: {split['train']} train, {split['test']} test, {split['removed']} train items removed as "
              f"near-duplicates of test items, {split['failed_gate']} problems without a passing proof.", "",
              _targets_line(split), "",
              "## Scores on the test split", "",
              f"Baseline: `{base['model']}` few-shot ({base['shots_used_mean'] or 0:.1f} shots on average); "
              f"final: the fine-tuned model zero-shot. n = {final['n']}.", "",
              "| family | " + " | ".join(f"{j}: baseline | {j}: final" for j in judges) + " |",
              "|---|" + "---:|" * (2 * len(judges))]
    fams = sorted(set(base["scores"][judges[0]]["by_family"]) | set(final["scores"][judges[0]]["by_family"]))
    for f in fams + ["all"]:
        cells = []
        for j in judges:
            for s in (base, final):
                v = s["scores"][j]["mean"] if f == "all" else s["scores"][j]["by_family"].get(f)
                cells.append(_pct(v))
        lines.append(f"| {'**all**' if f == 'all' else f} | " + " | ".join(cells) + " |")
    lines += ["", "Judge agreement (Cohen's kappa, raw agreement):", ""]
    for name, s in (("baseline", base), ("final", final)):
        for pair, a in s["agreement"].items():
            note = " (one class only: kappa defined as 1)" if a.get("degenerate") else ""
            lines.append(f"- {name}, {pair}: kappa {_num(a.get('kappa'))}, raw agreement {_pct(a.get('raw'))}, "
                         f"n = {a.get('n')}{note}")
    sft = out["sft"]
    lines += ["", "## SFT", "",
              f"{sft['steps']} steps in {sft['seconds']:.0f} s ({sft.get('tokens_per_s')} tokens/s) on "
              f"{sft['device']}; train loss {sft['train_loss']:.3f}.", "", "![SFT loss](plots/sft_loss.png)", ""]
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=120)
    curve = sft.get("loss_curve") or []
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], marker=".")
    ax.set(xlabel="step", ylabel="train loss", title="SFT loss")
    ax.grid(alpha=0.3)
    store.write_bytes(f"{d}/plots/sft_loss.png", fig_png(fig))
    lc = list((out.get("learning_curve") or {}).get("curve") or [])
    if lc and split["train"] not in [r["n"] for r in lc]:  # the main SFT run is the full-data point
        lc.append({"n": split["train"], "steps": sft["steps"], "train_loss": sft["train_loss"],
                   "score": final["scores"].get("mechanical", {}).get("mean")})
    if lc:
        lines += ["## Learning curve", "", "| train problems | steps | train loss | zero-shot score |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {r['n']} | {r['steps']} | {r['train_loss']:.3f} | {_pct(r['score'])} |" for r in lc]
        lines += ["", "![learning curve](plots/learning_curve.png)", ""]
        fig, ax = plt.subplots(figsize=(6, 3.4), dpi=120)
        ax.plot([r["n"] for r in lc], [r["score"] or 0 for r in lc], marker="o")
        ax.set(xscale="log", xlabel="training problems", ylabel="mechanical score", ylim=(-0.05, 1.05),
               title="Zero-shot score vs data size")
        ax.grid(alpha=0.3)
        store.write_bytes(f"{d}/plots/learning_curve.png", fig_png(fig))
    store.write_text(f"{d}/report.md", "\n".join(lines) + "\n")
