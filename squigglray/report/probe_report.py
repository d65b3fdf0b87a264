"""The probe experiment's report: DIS ranking, its factors, split-seed stability, impact clusters,
and two figures (DIS per family with its factors; cosine similarity of the families' update directions).
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from squigglray.paths import ArtifactStore  # noqa: E402
from squigglray.report.plots import fig_png  # noqa: E402
from squigglray.schemas.probes import ProbeSummary  # noqa: E402



def dis_bars_png(table: list[dict[str, Any]], title: str) -> bytes:
    """DIS per family (bars, seed std as error bars) with its three factors as markers; controls hatched."""
    names = [r["family_id"] for r in table]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(names) + 2), 3.8), dpi=120)
    colors = ["tab:gray" if r["role"] == "control" else "tab:blue" for r in table]
    ax.bar(x, [r["dis_mean"] for r in table], yerr=[r["dis_std"] for r in table], color=colors, alpha=0.8,
           capsize=3, label="DIS (mean over seeds)")
    for key, marker in (("magnitude", "^"), ("coherence", "o"), ("novelty", "s")):
        ax.plot(x, [r[key] for r in table], marker, ls="none", ms=5, label=key)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="score in [0, 1]", title=title)
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return fig_png(fig)


def similarity_png(directions: dict[str, np.ndarray], title: str) -> bytes:
    """Cosine similarity of the families' mean update directions (what Novelty and the clusters use)."""
    names = sorted(directions)
    M = np.array([[float(directions[a] @ directions[b]) for b in names] for a in names]) if names else np.zeros((0, 0))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(names) + 2), max(3.5, 0.45 * len(names) + 1.5)), dpi=120)
    im = ax.imshow(M, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8, label="cosine of dW directions")
    ax.set_title(title, fontsize=9)
    return fig_png(fig)


def _f(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def ranking_markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| rank | family | seeds | DIS | ± | magnitude | coherence | novelty | seed coh. | nearest | "
             "Δ loss A | Δ loss B |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    rank = 0
    for r in table:
        is_family = r["role"] == "family"
        rank += is_family
        lines.append(
            f"| {rank if is_family else 'ref'} | {r['family_id'] if is_family else '*' + r['family_id'] + '*'} | "
            f"{r['n_seeds']} | {_f(r['dis_mean'])} | {_f(r['dis_std'])} | {_f(r['magnitude'])} | "
            f"{_f(r['coherence'])} | {_f(r['novelty'])} | {_f(r['seed_coherence'])} | {r['nearest'] or '-'} | "
            f"{r['probe_a_loss_delta']:+.4f} | {r['probe_b_loss_delta']:+.4f} |")
    return "\n".join(lines)


def stability_line(stability: dict[str, Any]) -> str:
    rho = stability.get("spearman")
    groups = " vs ".join(str(g) for g in stability.get("groups", []))
    if rho is None:
        return f"- DIS rank stability (seed groups {groups}): not computed: {stability.get('note', '')}"
    return (f"- DIS rank stability: Spearman ρ = {rho:.2f} between the family DIS of seed groups {groups} "
            f"({stability['n_families']} families, each group scored on its own).")


def clusters_markdown(clusters: list[dict[str, Any]]) -> str:
    lines = ["| rank | families | size | mean DIS | max DIS | cohesion |", "|---:|---|---:|---:|---:|---:|"]
    for c in clusters:
        lines.append(f"| {c['rank']} | {', '.join(c['families'])} | {c['size']} | {c['dis_mean']:.3f} | "
                     f"{c['dis_max']:.3f} | {c['cohesion']:.2f} |")
    return "\n".join(lines)


def _expansion_lines(expansion: dict[str, Any] | None) -> list[str]:
    if not expansion:
        return []
    names = expansion["neighbours"]
    return ["## Expansion of the winners", "",
            f"The top {expansion['top']} clusters' families, sampled at {len(names)} neighbouring knob settings "
            f"(same mechanism, varied surface), {expansion['instances_per_neighbour']} instances each: "
            f"{expansion['rows']} rows in `expansion/neighbours.parquet`"
            + (f" (e.g. {', '.join(names[:4])})." if names else "."), ""]


def probe_report_markdown(exp_id: str, scored: list[ProbeSummary], table, clusters, stability, manifest) -> str:
    first = scored[0]
    p, ft = first.provenance, first.finetune
    fams = manifest["families"]
    return "\n".join([
        f"# Probe experiment `{exp_id}`", "",
        f"- analysis id `{manifest['analysis_id']}`, config hash `{manifest['config_hash'][:16]}`, "
        f"{manifest['row_counts']['probe_summaries']} probes ({len(fams)} families x seeds {manifest['seeds']} "
        f"+ controls {', '.join(manifest['controls'])}), {manifest['row_counts']['probe_events_candidates']} "
        "candidate events",
        f"- base `{p.base_checkpoint}` (sha256 `{p.base_checkpoint_sha256[:16]}`"
        + (f", run `{p.base_run_id}`" if p.base_run_id else "") + ")",
        f"- micro-finetune: LoRA r={ft.lora_r} alpha={ft.lora_alpha:g} on {', '.join(ft.target_modules)}; "
        f"{ft.steps} steps x {ft.batch_size} instances, lr {ft.lr:g}, {ft.n_instances} {ft.level} instances "
        f"per target, {ft.device}/{ft.precision}",
        "- files: `aggregated/probe_summaries.parquet` (one row per probe; `sig.*` columns are the signature), "
        "`aggregated/probe_events_candidates.parquet`, `aggregated/_manifest.json`, `summaries/*.json`", "",
        "## DIS ranking", "",
        "DIS = Magnitude × Coherence × Novelty (squigglray/probes/dis.py). Magnitude compares the probe's "
        "parameter and representation change with the same seed's control probes (0.5 = as much as a control); "
        "Coherence is the agreement of gradient directions across steps and of update directions across seeds; "
        "Novelty is 1 − the largest cosine between this family's mean update direction and another family's. "
        "Controls (*italic*, 'ref') are scored as references. Δ loss: probe A/B loss after − before.", "",
        ranking_markdown(table), "",
        stability_line(stability), "",
        "![DIS per family](plots/dis_ranking.png)", "",
        "## Impact clusters", "",
        "Families clustered by update direction (average linkage, cosine ≥ 0.5 joins), ranked by mean DIS. "
        "Novelty is measured against every other family, so members of a tight cluster lower each other's "
        "DIS: a cluster's best family is its representative.", "",
        clusters_markdown(clusters), "",
        "![direction similarity](plots/direction_similarity.png)", "",
        *_expansion_lines(manifest.get("analysis", {}).get("expansion")),
        "## Non-claims", "",
        "- DIS is an operational ranking for choosing training data, not a measure of what a family teaches.",
        "- Directions are random sketches of dW (cosine error about 0.1 at the default 256 dimensions).",
        "- A probe is a few optimizer steps from one base checkpoint; rankings may change with the base.", "",
    ])


def write_probe_report(store: ArtifactStore, exp_id: str, scored: list[ProbeSummary], table, clusters, stability,
                       manifest) -> str:
    from squigglray.probes.clusters import family_directions

    exp = store.experiment_dir(exp_id)
    store.write_bytes(f"{exp}/plots/dis_ranking.png", dis_bars_png(table, f"{exp_id}: DIS per family"))
    store.write_bytes(f"{exp}/plots/direction_similarity.png",
                      similarity_png(family_directions(scored), f"{exp_id}: update directions"))
    return store.write_text(f"{exp}/probe_report.md",
                            probe_report_markdown(exp_id, scored, table, clusters, stability, manifest))
