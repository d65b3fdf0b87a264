"""Plots for run reports; rendered off-screen (Agg) so they work on headless cluster nodes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def fig_png(fig) -> bytes:
    """A figure as PNG bytes (tight layout), closed so long jobs do not accumulate figures."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def loss_curve_png(steps: list[int], losses: list[float], phases: list[str], title: str) -> bytes:
    """Training loss against step (log x: the cadence is dense early), phase changes marked."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, marker=".", lw=1)
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:
            ax.axvline(steps[i], color="grey", ls="--", lw=0.8)
            ax.text(steps[i], max(losses), f" {phases[i]}", va="top", fontsize=8, color="grey")
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="trace loss", title=title)
    ax.grid(alpha=0.3)
    return fig_png(fig)
