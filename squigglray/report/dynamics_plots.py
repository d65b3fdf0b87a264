"""Figures for the training-dynamics research log: curves per seed, geometry trends with their
change-point events, the seed-alignment raster of events, and the event/jump correlation bars.

Pure functions (no Ray, no files written): each takes Arrow tables / plain rows and returns PNG
bytes, rendered off-screen (Agg) like report/plots.py. Every function copes with empty inputs (an
empty panel carrying a note) and with a single seed. Step axes are log-x because the logging and
capture cadence is log-spaced early; rows with step <= 0 are dropped from log-x panels.

Seed colors are shared by all figures: seeds sorted ascending take tab10 colors in order.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

COMPOSITE = "__composite__"  # same value as squigglray.events.schema.COMPOSITE
HIDDEN_MODULE = "hidden"     # same value as squigglray.geometry.capture.HIDDEN_MODULE
SCALAR_MODULE = "scalar"

_DPI = 120
_KIND_COLORS = {"mean_shift": "tab:blue", "slope_change": "tab:orange", "composite": "black"}
_OTHER_KIND_COLOR = "tab:gray"
# sub-lanes of one seed row in the raster (offset from the row centre), top to bottom
_LANES = {"composite": 0.27, "weight": 0.09, "hidden": -0.09, "scalar": -0.27}
_LANE_SHORT = {"composite": "comp", "weight": "wt", "hidden": "hid", "scalar": "scal"}


# ----------------------------------------------------------------------------- helpers

def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    plt.close(fig)
    return buf.getvalue()


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="grey")


def _empty_png(title: str, note: str, figsize: tuple[float, float] = (6.0, 3.0)) -> bytes:
    fig, ax = plt.subplots(figsize=figsize, dpi=_DPI)
    ax.set_xticks([])
    ax.set_yticks([])
    _note(ax, note)
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def _num_rows(t: pa.Table | None) -> int:
    return 0 if t is None else t.num_rows


def _col(t: pa.Table, name: str, dtype: Any = float) -> np.ndarray | None:
    """Column as a numpy array (nulls -> NaN for floats), or None if the column is absent."""
    if name not in t.column_names:
        return None
    vals = t.column(name).to_pylist()
    if dtype is float:
        return np.array([np.nan if v is None else float(v) for v in vals], dtype=float)
    return np.array(vals, dtype=object)


def seed_colors(seeds: Sequence[int]) -> dict[int, Any]:
    """Seed -> color: sorted seeds take tab10 colors in order (same mapping in every figure)."""
    cmap = plt.get_cmap("tab10")
    return {s: cmap(i % 10) for i, s in enumerate(sorted(set(seeds)))}


def _layer_label(layer: int) -> str:
    return "emb" if layer == -1 else f"L{layer}"


def _metric_group(metric: str, module: str) -> str:
    if metric == COMPOSITE or module == COMPOSITE:
        return "composite"
    if module == HIDDEN_MODULE:
        return "hidden"
    if module == SCALAR_MODULE:
        return "scalar"
    return "weight"


def _json_list(s: Any) -> list:
    if s is None:
        return []
    try:
        v = json.loads(s)
    except (TypeError, ValueError):
        return []
    return v if isinstance(v, list) else []


def _phase_boundaries(steps: np.ndarray, phases: Sequence[Any]) -> list[tuple[float, str]]:
    """(step, new phase) at every phase change of one run, in step order."""
    order = np.argsort(steps, kind="stable")
    out: list[tuple[float, str]] = []
    prev = None
    for i in order:
        ph = phases[i]
        if ph is None:
            continue
        if prev is not None and ph != prev:
            out.append((float(steps[i]), str(ph)))
        prev = ph
    return out


# ----------------------------------------------------------------------------- 1. curves

def curves_png(scalars_by_seed: Mapping[int, pa.Table], title: str) -> bytes:
    """Training curves of several seeds of one config, 2x2 panels:

    - training loss per seed (log-x, log-y); `loss_window_mean` drawn over it as a thicker line
      where present;
    - probe losses per seed (log-x, log-y): probe A (in-distribution) solid, probe B (holdout) dashed;
    - probe answer accuracy per seed (log-x, linear y in [0, 1]), same linestyles;
    - gradient norm per seed (log-x, log-y).

    One color per seed (see `seed_colors`). Curriculum phase boundaries (where the `phase`
    column changes between consecutive logged steps) are faint vertical lines in every panel,
    labelled with the new phase in the loss panel; boundaries from all seeds are merged (they
    usually coincide). Missing columns or all-null series are skipped; panels with nothing to
    draw say so. Rows with step <= 0 are dropped (log-x).
    """
    seeds = sorted(scalars_by_seed)
    colors = seed_colors(seeds)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), dpi=_DPI, sharex=True)
    ax_loss, ax_ploss, ax_acc, ax_grad = axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]
    drawn = {id(a): False for a in axes.flat}
    boundaries: dict[float, str] = {}
    any_step = False

    for seed in seeds:
        t = scalars_by_seed[seed]
        if _num_rows(t) == 0:
            continue
        steps = _col(t, "step")
        if steps is None:
            continue
        keep = np.isfinite(steps) & (steps > 0)
        order = np.argsort(steps[keep], kind="stable")
        x = steps[keep][order]
        if x.size:
            any_step = True
        c = colors[seed]

        def series(name: str) -> np.ndarray | None:
            v = _col(t, name)
            if v is None:
                return None
            v = v[keep][order]
            return v if np.isfinite(v).any() else None

        def line(ax: Any, name: str, **kw: Any) -> None:
            v = series(name)
            if v is None:
                return
            m = np.isfinite(v)
            ax.plot(x[m], v[m], color=c, **kw)
            drawn[id(ax)] = True

        line(ax_loss, "loss", lw=0.8, alpha=0.55, label=f"seed {seed}")
        line(ax_loss, "loss_window_mean", lw=1.8)
        line(ax_ploss, "probe_a_loss", lw=1.3, ls="-")
        line(ax_ploss, "probe_b_loss", lw=1.3, ls="--")
        line(ax_acc, "probe_a_answer_acc", lw=1.3, ls="-", marker=".", ms=3)
        line(ax_acc, "probe_b_answer_acc", lw=1.3, ls="--", marker=".", ms=3)
        line(ax_grad, "grad_norm", lw=0.9, alpha=0.8)

        phases = _col(t, "phase", dtype=object)
        if phases is not None:
            for step, ph in _phase_boundaries(x, list(phases[keep][order])):
                boundaries.setdefault(step, ph)

    for ax in axes.flat:
        for step in boundaries:
            ax.axvline(step, color="grey", ls=":", lw=0.8, alpha=0.6, zorder=0)
        if any_step:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        if not drawn[id(ax)]:
            _note(ax, "no data")
    for step, ph in boundaries.items():
        ax_loss.text(step, 0.98, f" {ph}", transform=ax_loss.get_xaxis_transform(), va="top",
                     fontsize=7, color="grey", rotation=90)

    if drawn[id(ax_loss)]:
        ax_loss.set_yscale("log")
    if drawn[id(ax_ploss)]:
        ax_ploss.set_yscale("log")
    if drawn[id(ax_grad)]:
        ax_grad.set_yscale("log")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_loss.set(ylabel="training loss", title="training loss (thin: per step, thick: window mean)")
    ax_ploss.set(ylabel="probe loss", title="probe loss (A in-dist. solid, B holdout dashed)")
    ax_acc.set(xlabel="step", ylabel="answer accuracy", title="probe answer accuracy")
    ax_grad.set(xlabel="step", ylabel="grad norm", title="gradient norm")

    handles = [Line2D([], [], color=colors[s], lw=2, label=f"seed {s}") for s in seeds]
    handles += [Line2D([], [], color="k", ls="-", label="probe A (in-dist.)"),
                Line2D([], [], color="k", ls="--", label="probe B (holdout)")]
    if boundaries:
        handles.append(Line2D([], [], color="grey", ls=":", label="phase boundary"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _png(fig)


# ----------------------------------------------------------------------------- 2. geometry trends

def _pick_run(t: pa.Table, seed_or_run: int | str | None) -> tuple[np.ndarray, str]:
    """Boolean mask of the rows of one run and a label for it."""
    n = t.num_rows
    run_ids = _col(t, "run_id", dtype=object)
    seeds = _col(t, "seed")
    if isinstance(seed_or_run, str):
        if run_ids is None:
            return np.zeros(n, bool), seed_or_run
        return run_ids == seed_or_run, seed_or_run
    if seed_or_run is not None:
        if seeds is None:
            return np.zeros(n, bool), f"seed {seed_or_run}"
        return seeds == float(seed_or_run), f"seed {seed_or_run}"
    if run_ids is not None and n:
        first = sorted({str(r) for r in run_ids})[0]
        return run_ids == first, first
    return np.ones(n, bool), ""


def _composite_metrics(diagnostics: Any) -> set[str]:
    try:
        d = json.loads(diagnostics) if diagnostics else {}
    except (TypeError, ValueError):
        return set()
    return {str(k).split("|", 1)[0] for k in d} if isinstance(d, dict) else set()


def geometry_trends_png(geometry: pa.Table, events: pa.Table | None, metrics: Sequence[str],
                        seed_or_run: int | str | None = None, title: str = "geometry trends") -> bytes:
    """Geometry metrics of ONE run against step: one row of panels per metric, one line per layer.

    Run selection: `seed_or_run` a str filters `run_id`, an int filters `seed`; None takes the
    first run_id in sorted order (the figure title names the run shown). `events` is filtered the
    same way.

    Aggregation: if a metric has rows with module 'hidden' (activation metrics) only those rows
    are used (one value per layer); otherwise (weight metrics) the value per (step, layer) is the
    MEAN over all modules of that layer captured at that step (e.g. the 7 attention/MLP matrices).
    Layer -1 is labelled 'emb'. A panel uses log-y when all its values are > 0 and span more than
    two decades.

    Events: single-metric events of the same metric and a plotted layer are drawn as triangles on
    that layer's line at the event step (value interpolated in log-step; an event of any module of
    the layer lands on the layer's mean line; filled = mean_shift, hollow = slope_change); events
    of layers not plotted (e.g. -2) are ticks on the panel's bottom edge. Composite events
    (metric '__composite__') are dotted black vertical lines across every panel, with a star on
    top of the panels whose metric is among the composite's members (from `diagnostics` keys
    "<metric>|<layer>|<module>").

    Metrics absent from the (filtered) table are skipped; if none remain, an empty panel with a
    note is drawn.
    """
    if geometry is None:
        geometry = pa.table({})
    n = geometry.num_rows
    mask, run_label = _pick_run(geometry, seed_or_run) if n else (np.zeros(0, bool), "")
    full_title = f"{title} — {run_label}" if run_label else title
    need = {"step", "layer", "metric", "value"}
    if n == 0 or not need <= set(geometry.column_names) or not mask.any():
        return _empty_png(full_title, "no geometry data for this run")

    steps = _col(geometry, "step")[mask]
    layers = _col(geometry, "layer")[mask]
    gmetrics = _col(geometry, "metric", dtype=object)[mask]
    values = _col(geometry, "value")[mask]
    modules = _col(geometry, "module", dtype=object)
    modules = modules[mask] if modules is not None else np.array(["?"] * len(steps), dtype=object)
    ok = np.isfinite(steps) & (steps > 0) & np.isfinite(values) & np.isfinite(layers)
    present = [m for m in dict.fromkeys(metrics) if np.any(ok & (gmetrics == m))]
    if not present:
        return _empty_png(full_title, "none of the requested metrics are in the table")

    # events of the same run
    ev_rows: list[dict[str, Any]] = []
    if _num_rows(events) and {"step", "metric"} <= set(events.column_names):
        emask, _ = _pick_run(events, seed_or_run if seed_or_run is not None else run_label or None)
        ev_all = events.filter(pa.array(emask)) if emask.any() else events.slice(0, 0)
        ev_rows = [r for r in ev_all.to_pylist() if r.get("step") is not None and r["step"] > 0]
    composites = [r for r in ev_rows if r.get("metric") == COMPOSITE]
    all_layers = sorted({int(v) for v in layers[ok]})
    cmap = plt.get_cmap("viridis")
    lcolor = {L: cmap(i / max(1, len(all_layers) - 1) * 0.9) for i, L in enumerate(all_layers)}

    nrow = len(present)
    fig, axes = plt.subplots(nrow, 1, figsize=(9, 2.3 * nrow + 1.0), dpi=_DPI, sharex=True, squeeze=False)
    for ax, metric in zip(axes[:, 0], present):
        m = ok & (gmetrics == metric)
        if np.any(m & (modules == HIDDEN_MODULE)):
            m &= modules == HIDDEN_MODULE
            agg_note = "hidden"
        else:
            agg_note = "mean over modules"
        lines: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for L in sorted({int(v) for v in layers[m]}):
            ml = m & (layers == L)
            xs, inv = np.unique(steps[ml], return_inverse=True)
            ys = np.bincount(inv, weights=values[ml]) / np.bincount(inv)
            lines[L] = (xs, ys)
            ax.plot(xs, ys, color=lcolor[L], lw=1.2, marker=".", ms=2.5, label=_layer_label(L))
        allv = np.concatenate([y for _, y in lines.values()])
        if allv.size and np.all(allv > 0) and allv.max() / allv.min() > 100:
            ax.set_yscale("log")
        ax.set_xscale("log")
        # single-metric events
        for r in ev_rows:
            if r.get("metric") != metric:
                continue
            L = r.get("layer")
            filled = r.get("kind") != "slope_change"
            if L in lines:
                xs, ys = lines[L]
                y = float(np.interp(math.log(r["step"]), np.log(xs), ys))
                ax.plot([r["step"]], [y], marker="v", ms=7, color=lcolor[L], mec="black", mew=0.8,
                        mfc=lcolor[L] if filled else "none", zorder=5, ls="none")
            else:
                ax.plot([r["step"]], [0.0], marker="|", ms=10, color="black",
                        transform=ax.get_xaxis_transform(), clip_on=False, zorder=5, ls="none")
        for r in composites:
            ax.axvline(r["step"], color="black", ls=":", lw=0.9, alpha=0.6, zorder=1)
            if metric in _composite_metrics(r.get("diagnostics")):
                ax.plot([r["step"]], [0.97], marker="*", ms=10, color="crimson", mec="black", mew=0.5,
                        transform=ax.get_xaxis_transform(), clip_on=False, zorder=6, ls="none")
        ax.set_ylabel(f"{metric}\n({agg_note})", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")

    handles = [Line2D([], [], color=lcolor[L], lw=2, label=_layer_label(L)) for L in all_layers]
    if ev_rows:
        handles += [
            Line2D([], [], marker="v", color="grey", mec="black", ls="none", label="event: mean shift"),
            Line2D([], [], marker="v", color="grey", mfc="none", mec="black", ls="none",
                   label="event: slope change"),
        ]
    if any(r.get("metric") in present and r.get("layer") not in all_layers for r in ev_rows):
        handles.append(Line2D([], [], marker="|", ms=10, color="black", ls="none",
                              label="event, layer not plotted"))
    if composites:
        handles += [Line2D([], [], color="black", ls=":", label="composite event"),
                    Line2D([], [], marker="*", color="crimson", mec="black", ls="none",
                           label="composite incl. metric")]
    axes[0, 0].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      ncol=1 if len(handles) <= 14 else 2, frameon=False)
    fig.suptitle(full_title)
    fig.tight_layout()
    return _png(fig)


# ----------------------------------------------------------------------------- 3. seed raster

def seed_alignment_raster_png(events: pa.Table | None, aligned_t: np.ndarray | None,
                              families: pa.Table | None, title: str = "event alignment across seeds",
                              label_top: int = 6) -> bytes:
    """Raster of events across seeds: x = aligned time, one row per seed.

    x is `aligned_t[i]` for events row i (`aligned_t` must have one entry per events row, same
    order; NaN entries are not drawn), or the events' `step_frac` when `aligned_t` is None.
    Each seed row has four sub-lanes, top to bottom: composite, weight-matrix, hidden-state and
    scalar events (group from metric/module); ticks are colored by kind (mean_shift, slope_change,
    composite), small and semi-transparent so hundreds stay legible.

    Families: structural ones (`structural` true, else support >= 2) are highlighted. Their
    members are found by `event_id` (the family's `event_ids` JSON list) among the drawn events;
    the members are joined by a line across the seed rows (in seed order), circled, and a faint
    vertical band spans their x range (fainter when there are more than 10 structural families).
    A structural family none of whose members is drawn gets a band at t_center ± t_spread/2 only
    when `aligned_t` is given (t_center is aligned time, not step_frac). The `label_top` families of highest support get a short "metric|layer" label.
    Seeds named only by families still get a row. Empty events: an empty panel with a note.
    """
    n = _num_rows(events)
    if n and aligned_t is not None and len(aligned_t) != n:
        raise ValueError(f"aligned_t has {len(aligned_t)} entries for {n} events")
    if n == 0 or "seed" not in events.column_names:
        return _empty_png(title, "no events", figsize=(9, 3))

    x = (np.asarray(aligned_t, dtype=float) if aligned_t is not None
         else (_col(events, "step_frac") if "step_frac" in events.column_names else np.full(n, np.nan)))
    seeds_col = _col(events, "seed")
    kinds = _col(events, "kind", dtype=object)
    metrics = _col(events, "metric", dtype=object)
    modules = _col(events, "module", dtype=object)
    ids = _col(events, "event_id", dtype=object)
    kinds = kinds if kinds is not None else np.array([""] * n, dtype=object)
    metrics = metrics if metrics is not None else np.array([""] * n, dtype=object)
    modules = modules if modules is not None else np.array([""] * n, dtype=object)

    fam_rows = families.to_pylist() if _num_rows(families) else []
    seeds = {int(s) for s in seeds_col[np.isfinite(seeds_col)]}
    for f in fam_rows:
        seeds |= {int(s) for s in _json_list(f.get("seeds")) if isinstance(s, (int, float))}
    seeds_sorted = sorted(seeds)
    row_of = {s: i for i, s in enumerate(seeds_sorted)}

    lane = np.array([_LANES[_metric_group(str(me), str(mo))] for me, mo in zip(metrics, modules)])
    y = np.array([row_of.get(int(s), np.nan) if np.isfinite(s) else np.nan for s in seeds_col]) + lane
    drawn = np.isfinite(x) & np.isfinite(y)

    nrows = len(seeds_sorted)
    fig, ax = plt.subplots(figsize=(11, 1.1 * nrows + 2.0), dpi=_DPI)
    pos: dict[str, tuple[float, float]] = {}
    if ids is not None:
        pos = {str(i): (float(xx), float(yy)) for i, xx, yy, d in zip(ids, x, y, drawn) if d}

    # structural families: bands + connecting lines (drawn under the ticks)
    structural = []
    for f in fam_rows:
        is_struct = f.get("structural")
        if is_struct is None:
            is_struct = (f.get("support") or 0) >= 2
        if is_struct:
            structural.append(f)
    fam_cmap = plt.get_cmap("tab10")
    labelled = sorted(structural, key=lambda f: -(f.get("support") or 0))[:max(0, label_top)]
    labelled_ids = {id(f) for f in labelled}
    band_alpha = 0.12 if len(structural) <= 10 else max(0.03, 1.2 / len(structural))  # many: fainter
    for k, f in enumerate(structural):
        pts = [pos[e] for e in _json_list(f.get("event_ids")) if str(e) in pos]
        color = fam_cmap(k % 10)
        if pts:
            pts.sort(key=lambda p: (p[1], p[0]))
            px, py = zip(*pts)
            lo, hi = min(px), max(px)
            ax.plot(px, py, color=color, lw=1.0, alpha=0.7, zorder=2)
            ax.scatter(px, py, s=30, facecolors="none", edgecolors=[color], lw=0.9, zorder=4)
        elif aligned_t is not None and f.get("t_center") is not None:
            half = 0.5 * float(f.get("t_spread") or 0.0)
            lo, hi = float(f["t_center"]) - half, float(f["t_center"]) + half
        else:
            continue
        width = max(hi - lo, 0.002)
        mid = 0.5 * (lo + hi)
        ax.axvspan(mid - width / 2, mid + width / 2, color=color, alpha=band_alpha, lw=0, zorder=0)
        if id(f) in labelled_ids:
            ax.text(mid, 1.005, f"{f.get('metric', '?')}|{f.get('layer', '?')} (s={f.get('support', '?')})",
                    transform=ax.get_xaxis_transform(), rotation=60, fontsize=6, ha="left", va="bottom",
                    color=color)

    # event ticks
    present_kinds: list[str] = []
    for kind in list(_KIND_COLORS) + sorted({str(k) for k in kinds} - set(_KIND_COLORS)):
        m = drawn & (kinds == kind)
        if not m.any():
            continue
        present_kinds.append(kind)
        ax.scatter(x[m], y[m], marker="|", s=40 if kind == "composite" else 25, lw=1.0,
                   color=_KIND_COLORS.get(kind, _OTHER_KIND_COLOR), alpha=0.6, zorder=3)
    if not drawn.any():
        _note(ax, "no events with a finite time")

    ax.set_ylim(-0.6, nrows - 0.4)
    ax.set_yticks(range(nrows))
    ax.set_yticklabels([f"seed {s}" for s in seeds_sorted])
    ax.set_yticks([r + off for r in range(nrows) for off in _LANES.values()], minor=True)
    ax.set_yticklabels([_LANE_SHORT[g] for _ in range(nrows) for g in _LANES], minor=True, fontsize=5,
                       color="grey")
    ax.tick_params(axis="y", which="minor", length=2, pad=1)
    ax.tick_params(axis="y", which="major", length=0, pad=20)
    for r in range(nrows - 1):
        ax.axhline(r + 0.5, color="grey", lw=0.5, alpha=0.5)
    finite = x[drawn]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.02 * max(hi - lo, 1e-9) if hi > lo else 0.05
        ax.set_xlim(min(lo - pad, 0.0) if lo >= 0 else lo - pad, max(hi + pad, 1.0) if hi <= 1 else hi + pad)
    ax.set_xlabel("aligned time" if aligned_t is not None else "step / max_steps")
    ax.grid(axis="x", alpha=0.3)

    handles = [Line2D([], [], marker="|", ls="none", ms=10, mew=1.5,
                      color=_KIND_COLORS.get(k, _OTHER_KIND_COLOR), label=k) for k in present_kinds]
    if structural:
        handles.append(Patch(color="grey", alpha=0.25, label=f"structural family span ({len(structural)})"))
        handles.append(Line2D([], [], color="grey", marker="o", mfc="none", label="family members linked"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title, pad=40 if labelled else 6)
    fig.tight_layout()
    return _png(fig)


# ----------------------------------------------------------------------------- 4. correlation

def correlation_png(rows: Sequence[Mapping[str, Any]], title: str = "events vs probe jumps") -> bytes:
    """Grouped bars per event source ('geometry', 'geometry_composite', 'loss', ...): the test's
    statistic per jump, events in a jump's window (pairs / n_jumps), next to the null's mean
    (hatched), the p-value and hits/n_jumps annotated above.

    `rows`: dicts with keys source, n_jumps, hits, pairs, null_mean_pairs, p_value; no jumps or a
    None p-value is shown as 'n/a' with no bar. Empty rows: a panel with a note.
    """
    rows = list(rows)
    if not rows:
        return _empty_png(title, "no correlation rows")

    def num(v: Any) -> float:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return float("nan")
        return f

    sources = [str(r.get("source", "?")) for r in rows]
    per_jump = [num(r.get("n_jumps")) or float("nan") for r in rows]
    obs = np.array([num(r.get("pairs")) / n for r, n in zip(rows, per_jump)])
    null = np.array([num(r.get("null_mean_pairs")) / n for r, n in zip(rows, per_jump)])
    idx = np.arange(len(rows))
    w = 0.38
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2.0), 4.0), dpi=_DPI)
    ax.bar(idx[np.isfinite(obs)] - w / 2, obs[np.isfinite(obs)], w, color="tab:blue", label="observed")
    ax.bar(idx[np.isfinite(null)] + w / 2, null[np.isfinite(null)], w, color="lightgrey", hatch="//",
           edgecolor="grey", label="null mean")
    for i, r in enumerate(rows):
        p = num(r.get("p_value"))
        ptxt = "p=n/a" if not math.isfinite(p) else (f"p={p:.2g}" if p >= 1e-3 else "p<1e-3")
        hits, nj = r.get("hits"), r.get("n_jumps")
        top = np.nanmax([obs[i], null[i], 0.0])
        txt = ptxt + f"\n{hits if hits is not None else '?'}/{nj if nj is not None else '?'} jumps"
        if not math.isfinite(obs[i]):
            txt = "n/a\n" + txt
        ax.text(i, top + 0.02, txt, ha="center", va="bottom", fontsize=7,
                fontweight="bold" if math.isfinite(p) and p < 0.05 else "normal")
    ymax = np.nanmax(np.concatenate([obs, null, [0.0]]))
    ax.set_ylim(0, ymax * 1.3 + 0.25)
    ax.set_xticks(idx)
    ax.set_xticklabels(sources, rotation=20 if len(rows) > 3 else 0, ha="right" if len(rows) > 3 else "center",
                       fontsize=8)
    ax.set(ylabel="events in a jump's window, per jump", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _png(fig)
