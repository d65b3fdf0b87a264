"""Seed invariance of change-point events (seed 000 §4.3): align, match across seeds, test.

Three steps, each a small pure function (numpy/pyarrow only, deterministic):

1. **Alignment** (`align`, `align_steps`) maps an event's optimizer step to an aligned time
   t in [0, 1] so runs of one config can be compared:

   - ``'log_step'`` (default): t = log(1 + step) / log(1 + max_steps). Geometry is captured on a
     dense-early / sparse-later cadence and the detector works on log-step-resampled series, so
     its resolution is roughly uniform in log step; a tolerance in log time is then a constant
     *relative* step tolerance (0.05 at 10k steps ~ a factor 1.6 in step). ``1 +`` keeps step 0
     defined (t = 0) and is negligible beyond the first few steps.
   - ``'step_frac'``: t = step / max_steps (the ``step_frac`` column's definition). Resolution
     is poor early, where most events are.
   - ``'loss'`` (time warp): t = fraction of the run's loss drop achieved by that step,
     (L0 - L(step)) / (L0 - Lmin), from the running minimum of the smoothed loss curve
     (``loss_window_mean``, falling back to ``loss``), linearly interpolated between logged
     steps. Compares runs that learn at different speeds; everything after the loss minimum
     collapses to t = 1. A run whose loss never drops falls back to ``'log_step'``.

2. **Matching** (`event_families`): events match only within one *type* =
   (metric, layer, module, kind, sign of magnitude); composites (metric ``'__composite__'``)
   match by (kind 'composite', layer) regardless of sign. Within a type, families are built by a
   greedy anchor rule: take the unassigned event with the highest ``score`` (ties: event_id)
   as anchor, then add the unassigned events of *other* seeds in order of closeness to the
   anchor (ties: event_id), accepting one only if its seed is not in the family yet and the
   family's spread (max t - min t) stays <= tolerance. So every family has at most one event
   per seed and t_spread <= tolerance; the strongest evidence claims its neighbours first.
   Every event ends in exactly one family (singletons included); families with support >= 2
   distinct seeds are the *structural candidates*.

3. **Null test** (`invariance_null`): recount structural families after destroying the
   cross-seed alignment; rotations are uniform offsets on the circle [0, 1).

   - ``'shift_type'`` (default): an independent rotation per (seed, event type). Keeps each
     series' own spacing of change points, breaks only the between-seed timing, and since
     matching never crosses types this is the finest rotation the statistic allows.
   - ``'shift'``: one rotation per seed, shared by all its types. Valid but weak: whenever two
     seeds draw offsets within the tolerance of each other, every family of that pair
     reappears, so p cannot go much below P(some pair of offsets within tolerance)
     (about 0.1 for 2 seeds, ~0.5 for 4), however well the seeds agree.
   - ``'random'``: every event's time redrawn uniformly (also breaks within-series spacing).

   Null matching uses circular distance, so pairs across the wrap point still count
   (slightly conservative).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Mapping

import numpy as np
import pyarrow as pa

from squigglray.events.schema import COMPOSITE, EVENT_FAMILIES_SCHEMA

ALIGN_MODES = ("log_step", "step_frac", "loss")
DEFAULT_ALIGN_MODE = "log_step"
DEFAULT_TOLERANCE = 0.05  # aligned-time units
NULL_MODES = ("shift_type", "shift", "random")
NULL_QUANTILES = (0.05, 0.5, 0.95)
_SPREAD_EPS = 1e-12  # float slack so a spread of exactly `tolerance` is accepted


# --------------------------------------------------------------------------- alignment


def log_step_time(steps, max_steps: int) -> np.ndarray:
    """log(1 + step) / log(1 + max_steps), clipped to [0, 1]: uniform in the detector's grid."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    s = np.maximum(np.asarray(steps, dtype=np.float64), 0.0)
    return np.clip(np.log1p(s) / np.log1p(float(max_steps)), 0.0, 1.0)


def step_frac_time(steps, max_steps: int) -> np.ndarray:
    """step / max_steps, clipped to [0, 1]: the plain fraction of training."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    return np.clip(np.asarray(steps, dtype=np.float64) / float(max_steps), 0.0, 1.0)


def _last_per_step(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by step and keep the last row of each step, so np.interp gets increasing abscissae."""
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    keep = np.ones(len(steps), dtype=bool)
    keep[:-1] = steps[1:] != steps[:-1]
    return steps[keep], values[keep]


def loss_progress_curve(scalars: pa.Table) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, progress in [0, 1]) of the running-min smoothed loss; None if the loss never drops.

    The smoothed loss is ``loss_window_mean`` where finite, else ``loss``. Its running minimum
    makes the warp monotone, so noise bumps cannot move time backwards.
    """
    steps = np.asarray(scalars.column("step").to_numpy(zero_copy_only=False), dtype=np.float64)
    loss = np.asarray(scalars.column("loss").to_numpy(zero_copy_only=False), dtype=np.float64)
    if "loss_window_mean" in scalars.column_names:
        smooth = np.asarray(scalars.column("loss_window_mean").to_numpy(zero_copy_only=False),
                            dtype=np.float64)
        loss = np.where(np.isfinite(smooth), smooth, loss)
    ok = np.isfinite(steps) & np.isfinite(loss)
    if not ok.any():
        return None
    steps, loss = _last_per_step(steps[ok], loss[ok])
    curve = np.minimum.accumulate(loss)
    drop = curve[0] - curve[-1]
    if not drop > 0:
        return None
    return steps, (curve[0] - curve) / drop


def loss_time(steps, scalars: pa.Table, max_steps: int | None = None) -> np.ndarray:
    """Loss time warp (see module doc); falls back to log_step_time when the loss never drops."""
    curve = loss_progress_curve(scalars)
    if curve is None:
        if max_steps is None:
            max_steps = int(max(1, np.max(scalars.column("step").to_numpy())))
        return log_step_time(steps, max_steps)
    xs, progress = curve
    return np.interp(np.asarray(steps, dtype=np.float64), xs, progress, left=0.0, right=1.0)


def align_steps(steps, mode: str = DEFAULT_ALIGN_MODE, *, max_steps: int | None = None,
                scalars: pa.Table | None = None) -> np.ndarray:
    """Aligned times of one run's steps (any step-like array: events, probe jumps)."""
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown alignment mode {mode!r}; expected one of {ALIGN_MODES}")
    if mode == "loss":
        if scalars is None:
            raise ValueError("mode='loss' needs the run's scalars table")
        return loss_time(steps, scalars, max_steps)
    if max_steps is None:
        if scalars is None:
            raise ValueError(f"mode={mode!r} needs max_steps (or a scalars table to infer it)")
        max_steps = int(max(1, np.max(scalars.column("step").to_numpy())))
    fn = log_step_time if mode == "log_step" else step_frac_time
    return fn(steps, max_steps)


def align(events: pa.Table, scalars_by_run: Mapping[str, pa.Table] | None = None,
          max_steps_by_run: Mapping[str, int] | None = None,
          mode: str = DEFAULT_ALIGN_MODE) -> np.ndarray:
    """Aligned time of every row of an events table (EVENTS_SCHEMA), in row order.

    max_steps comes from ``max_steps_by_run`` or, when a run is missing there, from the largest
    step of its scalars table; ``mode='loss'`` needs ``scalars_by_run``.
    """
    scalars_by_run = scalars_by_run or {}
    max_steps_by_run = max_steps_by_run or {}
    run_ids = np.asarray(events.column("run_id").to_pylist(), dtype=object)
    steps = np.asarray(events.column("step").to_numpy(zero_copy_only=False), dtype=np.float64)
    out = np.empty(len(steps), dtype=np.float64)
    for run_id in sorted(set(run_ids.tolist())):
        rows = run_ids == run_id
        out[rows] = align_steps(steps[rows], mode, max_steps=max_steps_by_run.get(run_id),
                                scalars=scalars_by_run.get(run_id))
    return out


# --------------------------------------------------------------------------- matching


def event_type(metric: str, layer: int, module: str, kind: str, magnitude: float) -> tuple:
    """Matching key: (metric, layer, module, kind, sign); composites ignore module/sign (sign 0)."""
    if metric == COMPOSITE:
        return (COMPOSITE, int(layer), COMPOSITE, "composite", 0)
    return (metric, int(layer), module, kind, -1 if magnitude < 0 else 1)


def _match_group(t: list[float], seeds: list[int], anchor_order: list[int], tolerance: float,
                 circular: bool = False) -> list[list[int]]:
    """Greedy anchor matching of one type group (see module doc); returns lists of local indices.

    Local indices are in event_id order, which breaks distance ties. ``circular`` measures
    distance on the circle [0, 1) (used by the null). Plain Python: groups are tiny.
    """
    limit = tolerance + _SPREAD_EPS
    assigned = [False] * len(t)
    families: list[list[int]] = []
    for a in anchor_order:
        if assigned[a]:
            continue
        assigned[a] = True
        members, used, lo, hi = [a], {seeds[a]}, 0.0, 0.0
        near = []
        for i, ti in enumerate(t):
            if assigned[i] or seeds[i] in used:
                continue
            d = ti - t[a]
            if circular:
                d = (d + 0.5) % 1.0 - 0.5
            if abs(d) <= limit:
                near.append((abs(d), i, d))
        for _, i, d in sorted(near):
            if seeds[i] in used:
                continue
            new_lo, new_hi = min(lo, d), max(hi, d)
            if new_hi - new_lo <= limit:
                members.append(i)
                used.add(seeds[i])
                assigned[i] = True
                lo, hi = new_lo, new_hi
        families.append(members)
    return families


class _Groups:
    """Events split by type once; each group's rows sorted by event_id for stable tie-breaks."""

    def __init__(self, events: pa.Table):
        cols = {c: events.column(c).to_pylist() for c in
                ("event_id", "seed", "metric", "layer", "module", "kind", "magnitude", "score")}
        self.event_id = cols["event_id"]
        self.seed = np.asarray(cols["seed"], dtype=np.int64)
        self.magnitude = np.asarray(cols["magnitude"], dtype=np.float64)
        score = np.asarray(cols["score"], dtype=np.float64)
        score = np.where(np.isfinite(score), score, -np.inf)
        by_type: dict[tuple, list[int]] = defaultdict(list)
        for i in range(len(self.event_id)):
            key = event_type(cols["metric"][i], cols["layer"][i], cols["module"][i],
                             cols["kind"][i], self.magnitude[i])
            by_type[key].append(i)
        self.type_index = np.zeros(len(self.event_id), dtype=np.int64)
        # per type: (global rows, seeds, anchor order, seen in >= 2 seeds)
        self.groups: dict[tuple, tuple[np.ndarray, list[int], list[int], bool]] = {}
        for k, key in enumerate(sorted(by_type, key=repr)):
            rows = np.asarray(sorted(by_type[key], key=lambda i: self.event_id[i]), dtype=np.int64)
            self.type_index[rows] = k
            seeds = self.seed[rows].tolist()
            # highest score first; the stable sort keeps event_id order among equal scores
            anchors = np.argsort(-score[rows], kind="stable").tolist()
            self.groups[key] = (rows, seeds, anchors, len(set(seeds)) >= 2)

    def match(self, t: np.ndarray, tolerance: float, circular: bool = False,
              only_multi_seed: bool = False):
        """Yield (type, global row indices) per family."""
        for key, (rows, seeds, anchors, multi) in self.groups.items():
            if only_multi_seed and not multi:
                continue
            for fam in _match_group(t[rows].tolist(), seeds, anchors, tolerance, circular):
                yield key, rows[fam]


def _check_aligned(events: pa.Table, aligned_t) -> np.ndarray:
    t = np.asarray(aligned_t, dtype=np.float64)
    if t.shape != (events.num_rows,):
        raise ValueError(f"aligned_t has shape {t.shape}, expected ({events.num_rows},)")
    if not np.all(np.isfinite(t)):
        raise ValueError("aligned_t contains non-finite values")
    return t


def _n_seeds(events: pa.Table, n_seeds: int | None) -> int:
    present = len(set(events.column("seed").to_pylist()))
    return present if n_seeds is None else int(n_seeds)


def event_families(events: pa.Table, aligned_t, tolerance: float = DEFAULT_TOLERANCE,
                   n_seeds: int | None = None) -> pa.Table:
    """Group events into cross-seed families (EVENT_FAMILIES_SCHEMA), one row per family.

    Every event lands in exactly one family; ``structural`` marks support >= 2 seeds.
    ``n_seeds`` is the experiment's seed count (default: seeds present in ``events``).
    Rows are sorted by type then t_center; ``family_id`` = "<type>|<k>", k = rank by t_center.
    """
    t = _check_aligned(events, aligned_t)
    n_seeds = _n_seeds(events, n_seeds)
    groups = _Groups(events)
    steps = np.asarray(events.column("step").to_numpy(zero_copy_only=False), dtype=np.float64)
    by_type: dict[tuple, list[dict]] = defaultdict(list)
    for key, rows in groups.match(t, tolerance):
        rows = rows[np.argsort(groups.seed[rows], kind="stable")]
        mean_mag = float(np.mean(groups.magnitude[rows]))
        metric, layer, module, kind, sign = key
        if metric == COMPOSITE:
            sign = -1 if mean_mag < 0 else 1
        support = len(set(groups.seed[rows].tolist()))
        by_type[key].append({
            "metric": metric, "layer": layer, "module": module, "kind": kind, "sign": int(sign),
            "t_center": float(np.mean(t[rows])),
            "t_spread": float(np.max(t[rows]) - np.min(t[rows])),
            "step_center": float(np.mean(steps[rows])),
            "support": support, "n_seeds": n_seeds,
            "seeds": json.dumps(sorted(set(groups.seed[rows].tolist()))),
            "event_ids": json.dumps([groups.event_id[i] for i in rows]),
            "mean_magnitude": mean_mag, "structural": support >= 2,
        })
    out = []
    for key in sorted(by_type, key=repr):
        fams = sorted(by_type[key], key=lambda f: (f["t_center"], f["event_ids"]))
        for k, f in enumerate(fams):
            f["family_id"] = f"{f['metric']}|{f['layer']}|{f['module']}|{f['kind']}|{f['sign']}|{k}"
            out.append(f)
    return pa.Table.from_pylist(out, schema=EVENT_FAMILIES_SCHEMA)


def structural_candidates(families: pa.Table) -> pa.Table:
    """The families supported by >= 2 seeds: the §4.3 structural candidates."""
    return families.filter(families.column("structural"))


# --------------------------------------------------------------------------- null test


def count_structural(events: pa.Table, aligned_t, tolerance: float = DEFAULT_TOLERANCE,
                     circular: bool = False) -> int:
    """Number of families with support >= 2 (the invariance statistic)."""
    t = _check_aligned(events, aligned_t)
    return _count_structural(_Groups(events), t, tolerance, circular)


def _count_structural(groups: _Groups, t: np.ndarray, tolerance: float, circular: bool) -> int:
    return sum(1 for _, rows in groups.match(t, tolerance, circular, only_multi_seed=True)
               if len(rows) >= 2)


def _rotation_units(groups: _Groups, mode: str) -> np.ndarray | None:
    """Per event, the index of the rotation it shares (None for 'random')."""
    if mode == "random":
        return None
    _, seed_idx = np.unique(groups.seed, return_inverse=True)
    if mode == "shift":
        return seed_idx.astype(np.int64)
    pairs = groups.type_index * (int(seed_idx.max(initial=0)) + 1) + seed_idx
    return np.unique(pairs, return_inverse=True)[1].astype(np.int64)


def invariance_null(events: pa.Table, aligned_t, tolerance: float = DEFAULT_TOLERANCE,
                    n_seeds: int | None = None, n_perm: int = 200, mode: str = "shift_type",
                    seed: int = 0) -> dict:
    """Permutation test: are there more structural families than chance timing would give?

    Returns observed count, null mean/std/quantiles, ``p_value`` = (1 + #null >= observed) /
    (1 + n_perm) and ``null_rate`` = #null >= observed / n_perm (how often chance does as well).
    """
    if mode not in NULL_MODES:
        raise ValueError(f"unknown null mode {mode!r}; expected one of {NULL_MODES}")
    if n_perm < 1:
        raise ValueError("n_perm must be >= 1")
    t = _check_aligned(events, aligned_t)
    groups = _Groups(events)
    observed = _count_structural(groups, t, tolerance, circular=False)
    rng = np.random.default_rng(seed)
    unit = _rotation_units(groups, mode)
    n_units = int(unit.max()) + 1 if unit is not None and len(unit) else 0
    null = np.empty(n_perm, dtype=np.int64)
    for p in range(n_perm):
        t_null = (t + rng.random(n_units)[unit]) % 1.0 if unit is not None else rng.random(len(t))
        null[p] = _count_structural(groups, t_null, tolerance, circular=True)
    n_ge = int(np.sum(null >= observed))
    return {
        "observed": int(observed),
        "null_mean": float(np.mean(null)),
        "null_std": float(np.std(null)),
        "null_quantiles": {str(q): float(np.quantile(null, q)) for q in NULL_QUANTILES},
        "p_value": (1 + n_ge) / (1 + n_perm),
        "null_rate": n_ge / n_perm,
        "n_perm": int(n_perm), "mode": mode, "tolerance": float(tolerance),
        "n_events": int(events.num_rows), "n_seeds": _n_seeds(events, n_seeds),
    }
