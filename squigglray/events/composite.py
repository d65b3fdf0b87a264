"""Composite candidates: several distinct metrics breaking in one log-step window (seed 000 §4.2).

Input: the single-metric rows of ONE run (EVENTS_SCHEMA dicts, as `changepoints` writes them).
Output: one extra row per window, ``metric = module = '__composite__'``, ``kind = 'composite'``.

Window rule (greedy, deterministic): every event is a possible *anchor*. Its window holds the
still-unassigned events whose change point lies within ``±window`` decades of the anchor's. The
position used is ``log10_step`` from the row's diagnostics, i.e. the change point on the log-step
grid before it was snapped to a captured step (``log10(step)`` if absent). A window keeps at most
one event per series ``(metric, layer, module)``: the anchor for its own series, else the highest
score. The window with the most distinct metrics wins, ties by the larger sum of scores, then the
earlier anchor, then the anchor's event_id. If it has at least ``min_metrics`` distinct metrics,
it becomes a composite and its members are removed. Repeat until no window qualifies. So each
event belongs to at most one composite, and the strongest co-break claims its neighbours first.
±0.1 decades (a factor 1.26 in step) is about ±1.5 cells of the default 48-point grid over three
decades, the resolution at which the detector can place a change point at all.

Composite columns: ``step`` = the anchor's step (``step_frac`` likewise), ``step_start`` /
``step_end`` = min / max over the members, ``magnitude`` = mean |magnitude| of the members (signs
differ across metrics, so the mean of signed values would cancel), ``score`` = sum of member
scores, ``penalty`` = 0.0 (not applicable), ``n_points`` = max over members, ``members`` = JSON
list of member event_ids (sorted), ``layer`` = the layer shared by all members else -2,
``diagnostics`` = ``{"<metric>|<layer>|<module>": {"magnitude", "score", "step", "kind"}}``,
``baseline_id`` = the members' common baseline_id, else "".
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from squigglray.events.schema import COMPOSITE

MIXED_LAYERS = -2


def event_log_step(row: Mapping[str, Any]) -> float:
    """Position of a change point in log10(step): the detector's grid position when recorded."""
    try:
        u = json.loads(row.get("diagnostics") or "{}").get("log10_step")
    except (TypeError, ValueError, AttributeError):
        u = None
    return float(u) if isinstance(u, (int, float)) and math.isfinite(u) else math.log10(max(int(row["step"]), 1))


def _series_key(row: Mapping[str, Any]) -> str:
    return f"{row['metric']}|{row['layer']}|{row['module']}"


def composite_rows(rows: Sequence[Mapping[str, Any]], window: float = 0.1,
                   min_metrics: int = 2) -> list[dict[str, Any]]:
    """Composite rows for one run's single-metric event rows (see the module docstring)."""
    singles = [r for r in rows if r["metric"] != COMPOSITE]
    if min_metrics < 1 or len(singles) < min_metrics:
        return []
    order = sorted(range(len(singles)), key=lambda i: (event_log_step(singles[i]), singles[i]["event_id"]))
    ev = [singles[i] for i in order]
    u = [event_log_step(r) for r in ev]
    keys = [_series_key(r) for r in ev]
    strength = [(float(r["score"]), r["event_id"]) for r in ev]
    alive = [True] * len(ev)

    def window_members(i: int) -> list[int]:
        lo, hi = bisect.bisect_left(u, u[i] - window - 1e-12), bisect.bisect_right(u, u[i] + window + 1e-12)
        best: dict[str, int] = {keys[i]: i}  # the anchor speaks for its own series
        for j in range(lo, hi):
            if alive[j] and keys[j] != keys[i] and (keys[j] not in best or strength[j] > strength[best[keys[j]]]):
                best[keys[j]] = j
        return sorted(best.values())

    def rank(i: int) -> tuple[int, float]:
        m = window_members(i)
        return len({ev[j]["metric"] for j in m}), sum(strength[j][0] for j in m)

    # cached window ranks; a pick only changes windows whose anchor is within 2*window of it
    ranks = [rank(i) for i in range(len(ev))]
    out = []
    while True:
        live = [i for i in range(len(ev)) if alive[i]]
        if not live:
            break
        i = min(live, key=lambda k: (-ranks[k][0], -ranks[k][1], u[k], ev[k]["event_id"]))
        if ranks[i][0] < min_metrics:
            break
        members = window_members(i)
        out.append(_composite(ev[i], [ev[j] for j in members]))
        for j in members:
            alive[j] = False
        lo, hi = bisect.bisect_left(u, u[i] - 2 * window - 1e-12), bisect.bisect_right(u, u[i] + 2 * window + 1e-12)
        for k in range(lo, hi):
            if alive[k]:
                ranks[k] = rank(k)
    return out


def _composite(anchor: Mapping[str, Any], members: list[Mapping[str, Any]]) -> dict[str, Any]:
    layers = {int(m["layer"]) for m in members}
    layer = layers.pop() if len(layers) == 1 else MIXED_LAYERS
    baselines = {m["baseline_id"] for m in members}
    step = int(anchor["step"])
    diagnostics = {
        _series_key(m): {"magnitude": float(m["magnitude"]), "score": float(m["score"]), "step": int(m["step"]),
                         "kind": m["kind"]}
        for m in members
    }
    return {
        "event_id": f"{anchor['run_id']}:{COMPOSITE}:{layer}:{COMPOSITE}:composite:{step}",
        "run_id": anchor["run_id"], "seed": int(anchor["seed"]), "metric": COMPOSITE, "layer": layer,
        "module": COMPOSITE, "kind": "composite", "step": step,
        "step_start": min(int(m["step_start"]) for m in members),
        "step_end": max(int(m["step_end"]) for m in members),
        "step_frac": float(anchor["step_frac"]),
        "magnitude": float(sum(abs(float(m["magnitude"])) for m in members) / len(members)),
        "score": float(sum(float(m["score"]) for m in members)), "penalty": 0.0,
        "n_points": max(int(m["n_points"]) for m in members), "n_members": len(members),
        "members": json.dumps(sorted(m["event_id"] for m in members)),
        "diagnostics": json.dumps(diagnostics, sort_keys=True),
        "baseline_id": baselines.pop() if len(baselines) == 1 else "",
        "dataset_slice_hash": anchor["dataset_slice_hash"], "config_hash": anchor["config_hash"],
        "package_version": anchor["package_version"],
    }
