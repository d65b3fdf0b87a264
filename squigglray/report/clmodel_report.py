"""runs/<run_id>/reports/report.md for a CLModel training run: milestones table and two plots
(the losses by stage, per-level code perplexity during training)."""

from __future__ import annotations

from typing import Any

from squigglray.paths import ArtifactStore
from squigglray.report.plots import fig_png, plt

_CURVES = ("loss", "loss_action", "loss_stop", "loss_tok", "loss_vq", "loss_seq")


def losses_png(history: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    steps = [r["step"] for r in history]
    for name in _CURVES:
        ax.plot(steps, [r.get(name, float("nan")) for r in history], lw=1.2, label=name.removeprefix("loss_"))
    for i in range(1, len(history)):
        if history[i]["stage"] != history[i - 1]["stage"]:
            ax.axvline(steps[i], color="grey", ls="--", lw=0.8)
            ax.text(steps[i], ax.get_ylim()[1], f" {history[i]['stage']}", va="top", fontsize=7, color="grey")
    ax.set(yscale="log", xlabel="step", ylabel="loss", title="CLModel training losses (stages: RVQ warm-up L1→Lk, joint)")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    return fig_png(fig)


def perplexity_png(history: list[dict], levels: int, live: int) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=120)
    steps = [r["step"] for r in history]
    for lv in range(levels):
        ax.plot(steps, [r.get(f"perplexity_L{lv + 1}", float("nan")) for r in history], label=f"L{lv + 1}")
    ax.axhline(live, color="grey", ls=":", lw=0.8, label="codebook size")
    ax.set(xlabel="step", ylabel="code perplexity", title="RVQ code usage during training")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig_png(fig)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render(out: dict[str, Any]) -> str:
    ev, acc, mc = out["eval"], out["eval"]["accuracy"], out["model_config"]
    lines = [
        f"# CLModel run {out['run_id']}", "",
        f"seed {out['seed']} · slice {out['dataset_slice_hash']} · config {out['config_hash'][:12]} · "
        f"squigglray {out['version']} · {ev['params']:,} parameters · trained {ev['train_seconds']:.0f} s", "",
        "![losses](../plots/losses.png)", "", "![code perplexity](../plots/perplexity.png)", "",
        f"## Accuracy on {ev['examples']} held-out problems", "",
        "| measure | value | baseline |", "|---|---|---|",
        f"| action (teacher-forced state) | {_pct(acc['action_teacher_forced'])} | chance {_pct(acc['action_chance'])}, "
        f"majority per step {_pct(acc['action_majority'])} |",
        f"| action (free-running) | {_pct(acc['action_free_running'])} | |",
        f"| whole op trace exact | {_pct(acc['trace_exact'])} | |",
        f"| STOP at the right step | {_pct(acc['stop'])} | |",
        f"| argument pointer | {_pct(acc['argument'])} | |",
        f"| sequence head (answer's last digit) | {_pct(acc['sequence'])} | chance {_pct(acc['sequence_chance'])} |",
        "", "## Quantizer health", "", "| level | computed | perplexity | codes used | dead |", "|---|---|---|---|---|",
    ]
    for lv, h in ev["quantizer"].items():
        lines.append(f"| {lv} | {h['computed']} | {h['perplexity']:.1f} | {h['used_codes']} / {mc['codebook_size']} | "
                     f"{_pct(h['dead_fraction'])} |")
    sm = ev["split_merge"]
    lines += ["", f"Split/merge stability (L1): split code {sm['split'][0]} into {sm['split'][1]}, merged "
              f"{sm['merged']}; examples whose code moved elsewhere: {_pct(sm['moved'])}; old ids all resolve "
              f"to live codes: {sm['old_ids_resolve_live']}."]
    rt = ev["routing"]
    lines += ["", "## Routing", "",
              f"- entry branches: {rt['entry_branch_counts']}; the branch matches the difficulty level for "
              f"{_pct(rt['entry_branch_is_difficulty'])}; entry-router entropy {rt['entry_entropy']:.2f} "
              f"(max {rt['entry_entropy_max']:.2f})",
              f"- promotions {rt['promotions_per_example']:.2f} / demotions {rt['demotions_per_example']:.2f} per example; "
              f"ping-pong: {rt['ping_pong']}; early exit: {_pct(rt['early_exit_rate'])}"]
    if ev.get("tools"):
        tl = ev["tools"]
        lines += ["", "## Tools", "",
                  f"- calls per example {tl['calls_per_example']:.2f}, ok {_pct(tl['ok_rate'])}, "
                  f"from cache {_pct(tl['cached_rate'])}, tool-budget hit rate {_pct(tl['budget_hit_rate'])}"]
    lines += ["", "## Latency (one example per forward, ms)", "", "| path | median | p95 |", "|---|---|---|"]
    for name, v in ev["latency_ms"].items():
        lines.append(f"| {name} | {v['median']:.1f} | {v['p95']:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(store: ArtifactStore, run_id: str, out: dict[str, Any]) -> None:
    base = store.run_dir(run_id)
    mc = out["model_config"]
    store.write_bytes(f"{base}/plots/losses.png", losses_png(out["history"]))
    store.write_bytes(f"{base}/plots/perplexity.png", perplexity_png(out["history"], mc["num_quantizers"], mc["codebook_size"]))
    store.write_text(store.run_report(run_id), render(out))
