"""The solver evaluation's plot: accuracy against the number of sampled candidates N.

Rendered off-screen (Agg) like report/plots.py, so it works on headless cluster nodes.
"""

from __future__ import annotations

from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from squigglray.report.plots import fig_png  # noqa: E402

_COLORS = {True: "tab:blue", False: "tab:orange"}
_LABEL = {True: "with code", False: "no code"}


def solver_accuracy_png(rows: Iterable[dict[str, Any]], title: str) -> bytes:
    """Accuracy vs N (log2 x axis): weighted vote (solid, hollow circles) and plain majority (dotted)
    per code mode, pass@1 of the same mode as a dashed horizontal reference, and the oracle "some
    candidate is correct" (faint) as the ceiling of any vote.

    `rows`: dicts with keys code (bool), n, pass1, maj, weighted[, any] (see jobs/eval_solver.metric_rows).
    """
    rows = list(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    all_ns = sorted({r["n"] for r in rows})
    for code in (True, False):
        rs = sorted((r for r in rows if r["code"] == code), key=lambda r: r["n"])
        if not rs:
            continue
        ns = [r["n"] for r in rs]
        color = _COLORS[code]
        ax.plot(ns, [r["maj"] for r in rs], color=color, marker="s", ms=4, lw=1.2, ls=":",
                label=f"majority vote, {_LABEL[code]}")
        ax.plot(ns, [r["weighted"] for r in rs], color=color, marker="o", ms=9, mfc="none", lw=1.8,
                label=f"weighted vote, {_LABEL[code]}")  # hollow and larger: visible where the two agree
        if "any" in rs[0]:
            ax.plot(ns, [r["any"] for r in rs], color=color, marker="^", ms=4, lw=0.8, alpha=0.4,
                    label=f"any correct (oracle), {_LABEL[code]}")
        ax.axhline(rs[0]["pass1"], color=color, lw=1, ls="--", alpha=0.8, label=f"pass@1, {_LABEL[code]}")
    ax.set_xscale("log", base=2)
    if all_ns:
        ax.set_xticks(all_ns)
        ax.set_xticklabels([str(n) for n in all_ns])
        if len(all_ns) == 1:
            ax.set_xlim(all_ns[0] / 1.5, all_ns[0] * 1.5)
    ax.set(xlabel="N (candidates per problem)", ylabel="accuracy", ylim=(-0.02, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig_png(fig)
