"""DCM reports: a run's stages (report.md, loss curves) and a sweep's per-K table (sweep.md/json, plots)."""

from __future__ import annotations

from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from squigglray.paths import ArtifactStore  # noqa: E402
from squigglray.report.plots import fig_png  # noqa: E402



def curves_png(curves: dict[str, list[list[float]]], title: str) -> bytes:
    """Per-example loss curves, one colour per group (stage or K), log scale."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=120)
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(1, len(curves))))
    for (name, group), c in zip(curves.items(), colors):
        for i, curve in enumerate(group):
            ax.plot(range(1, len(curve) + 1), curve, color=c, lw=0.7, alpha=0.6, label=name if i == 0 else None)
    ax.set(yscale="log", xlabel="step", ylabel="summed loss (all modes)", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig_png(fig)


def _fmt(x) -> str:
    return "-" if x is None else (f"{x:.3g}" if isinstance(x, float) else str(x))


def write_run_report(store: ArtifactStore, exp: str, out: dict) -> None:
    d = store.experiment_dir(exp)
    lines = [f"# DCM run {exp}", "",
             f"model `{out['config']['model']}`, K = {out['config']['k']}, {out['n_pairs']} pairs "
             f"({out['config']['dataset']}), seed {out['seed']}, config hash `{out['config_hash'][:16]}`, "
             f"dataset hash `{out['dataset_hash'][:16]}`, squigglray {out['package_version']}", "",
             "| stage | converged (acc 1.0) | greedy exact | seed loss rule | steps to converge | gate |",
             "|---|---:|---:|---:|---:|---|"]
    for name, st in out["stages"].items():
        s = st["summary"]
        lines.append(f"| {name} | {s['convergence_rate']:.0%} | {s['exact_match_rate']:.0%} | {s['seed_rule_rate']:.0%} "
                     f"| {_fmt(s['steps_to_converge'])} | {'passed' if st['passed'] else 'stopped'} ({st['gate']}) |")
    for name, st in out["stages"].items():
        lines += ["", f"## {name}: dataset-level thresholds (seed 001)", "", "| metric | value | level |", "|---|---:|---|"]
        lines += [f"| {k} | {v['value']:.3g} | {v['level']} |" for k, v in st["summary"]["thresholds"].items()]
        lines.append(f"\nhealth: {st['summary']['health']}")
    if out.get("spot_check"):
        lines += ["", "## Spot check: greedy decodes of converged examples", ""]
        for r in out["spot_check"]:
            for m, text in r["decoded"].items():
                lines.append(f"- `{r['pair_id']}` {m}: {'exact' if r['exact_match'][m] else 'DIFFERS'}: "
                             f"{text!r} (target {r['target'][m]!r})")
    lines += ["", "![loss curves](plots/loss_curves.png)", ""]
    store.write_text(f"{d}/report.md", "\n".join(lines))
    store.write_bytes(f"{d}/plots/loss_curves.png", curves_png(
        {name: [r["curve"] for r in st["rows"]] for name, st in out["stages"].items()}, f"DCM {exp}"))


def per_k_table(trials: list[dict]) -> list[dict]:
    """Trials grouped by (dataset, K): means over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for t in trials:
        groups[(t["dataset"], t["k"])].append(t)
    rows = []
    for (ds, k), ts in sorted(groups.items()):
        conv = [t for t in ts if t["steps_to_converge"] >= 0]
        rows.append({
            "dataset": ds, "k": k, "seeds": len(ts),
            "convergence_rate": float(np.mean([t["convergence_rate"] for t in ts])),
            "exact_match_rate": float(np.mean([t["exact_match_rate"] for t in ts])),
            "seed_rule_rate": float(np.mean([t["seed_rule_rate"] for t in ts])),
            "final_loss_q": float(np.mean([t.get("final_loss_q", np.nan) for t in ts])),
            "final_loss_a": float(np.mean([t.get("final_loss_a", np.nan) for t in ts])),
            "steps_to_converge": float(np.mean([t["steps_to_converge"] for t in conv])) if conv else None,
            "seconds_to_converge": float(np.mean([t["seconds_to_converge"] for t in conv])) if conv else None,
        })
    return rows


def write_sweep_report(store: ArtifactStore, sweep_id: str, trials: list[dict], results: dict[str, dict]) -> dict:
    d = store.experiment_dir(sweep_id)
    table = per_k_table(trials)
    out = {"schema": "dcm_sweep@1.0", "sweep_id": sweep_id, "table": table, "trials": trials}
    store.write_json(f"{d}/sweep.json", out)
    lines = [f"# DCM K sweep {sweep_id}", "",
             "| dataset | K | seeds | converged (acc 1.0) | greedy exact | seed loss rule | loss Q | loss A | steps | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['dataset']} | {r['k']} | {r['seeds']} | {r['convergence_rate']:.0%} | {r['exact_match_rate']:.0%} | "
              f"{r['seed_rule_rate']:.0%} | {_fmt(r['final_loss_q'])} | {_fmt(r['final_loss_a'])} | "
              f"{_fmt(r['steps_to_converge'])} | {_fmt(r['seconds_to_converge'])} |" for r in table]
    lines += ["", "![convergence vs K](plots/convergence_vs_k.png)", "", "![loss curves](plots/loss_curves.png)", ""]
    store.write_text(f"{d}/sweep.md", "\n".join(lines))
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for ds in sorted({r["dataset"] for r in table}):
        rs = [r for r in table if r["dataset"] == ds]
        ax.plot([r["k"] for r in rs], [r["convergence_rate"] for r in rs], marker="o", label=f"{ds}: acc 1.0")
        ax.plot([r["k"] for r in rs], [r["exact_match_rate"] for r in rs], marker="x", ls="--",
                label=f"{ds}: greedy exact")
    ax.set(xscale="log", xlabel="K (content slots)", ylabel="rate", ylim=(-0.05, 1.05), title="DCM convergence vs K")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    store.write_bytes(f"{d}/plots/convergence_vs_k.png", fig_png(fig))
    curves: dict[str, list[list[float]]] = defaultdict(list)
    for t in trials:
        res = results[t["experiment_id"]]
        for st in res["stages"].values():
            curves[f"K={t['k']}"] += [r["curve"] for r in st["rows"]]
    store.write_bytes(f"{d}/plots/loss_curves.png", curves_png(dict(sorted(curves.items(), key=lambda kv: int(
        kv[0][2:]))), f"DCM sweep {sweep_id}"))
    return out
