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

3. **Calibrated null** (`site_permutation_test`, the report's H1 test). Statistic: matched
   events, i.e. single-metric geometry events with an event of the same type from another seed
   within the tolerance (vectorized, so thousands of null draws are cheap). Null draw: per seed,
   relabel its sites: the block layers are permuted (a block's matrices and hidden states move
   together) and the weight matrices are permuted among themselves (``strata='layer_module'``);
   every event of a site moves with it. So each seed keeps exactly its own event times, its
   shocks that break many series at once, and its dependent metrics (relative_update with
   update_norm, stable rank with the norms); only *which site* breaks when is no longer shared.
   H0: layers and matrices are exchangeable, each seed's events are its own. Events near a
   schedule change (`exclude`) are left out of statistic and null alike.

   Why this design (bench/calibration.py, 500 simulated experiments per scenario): rotations on
   the time circle (``invariance_null`` below, the report's old test) redraw a type's time almost
   uniformly, so any non-uniform timing shared by the seeds (events confined to the detector's
   window, bunched mid-training, locked to warmup) counts as invariance: they reject in nearly
   every simulated experiment whose seeds share nothing. Relabelling single sites independently
   (``strata='site'``) keeps the timing but scatters a block-wide shock over random sites, which
   understates the null's variance when shocks hit whole blocks (rejects ~11% at 0.05); the
   layer x module relabelling holds the level in every scenario. What it cannot see: an event
   that every site shares at once (a whole-model phase change) is shared *timing*, which the
   null keeps; the desynchronized-schedule control and the loss-progress axis address timing.

   `family_p_values` gives each family a p-value under the same null (Poisson-binomial, exact
   and conservative), for Benjamini-Hochberg q-values (`events.multiple`).

4. **Legacy rotation null** (`invariance_null`), kept for the calibration bench's comparison:
   rotations are uniform offsets on the circle [0, 1).

   - ``'shift_type'``: an independent rotation per (seed, event type).
   - ``'shift'``: one rotation per seed, shared by all its types.
   - ``'random'``: every event's time redrawn uniformly.

   Null matching uses circular distance, so pairs across the wrap point still count.
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
    """The old rotation test (module doc, 4): miscalibrated under non-uniform timing; not used by
    the report, kept so bench/calibration.py can show its false-positive rate.

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


# --------------------------------------------------------------------------- calibrated null

NOT_GEOMETRY = ("scalar", COMPOSITE)  # loss change points and composites: not in the H1 test
HIDDEN = "hidden"
STRATA = ("layer_module", "site")


def site_stratum(layer: int, module: str) -> str:
    """Which sites a site may trade places with in the null: any matrix of any block ('weights'),
    any block's hidden states ('hidden'); the embedding output (layer -1) has no peer."""
    if module != HIDDEN:
        return "weights"
    return "hidden" if layer >= 0 else "embedding"


class _SiteArrays:
    """Single-metric geometry events as integer arrays, for the vectorized relabelling null.

    Sites live on a grid layers x modules (layer -1 and module 'hidden' included). A null draw
    permutes, per seed, the block layers (0..L-1, weights and hidden states of a block together)
    and the weight modules among themselves (``'layer_module'``), or every weight site / hidden
    block site individually (``'site'``).
    """

    def __init__(self, events: pa.Table, t: np.ndarray, strata: str):
        module = events.column("module").to_pylist()
        keep = np.asarray([m not in NOT_GEOMETRY for m in module], dtype=bool)
        cols = {c: [v for v, k in zip(events.column(c).to_pylist(), keep) if k]
                for c in ("seed", "metric", "layer", "module", "kind", "magnitude")}
        self.t, self.strata = t[keep], strata
        seeds = sorted(set(cols["seed"]))
        self.n_seeds = len(seeds)
        self.seed_index = np.searchsorted(seeds, cols["seed"]).astype(np.int64)
        self.layers = sorted(set(cols["layer"]))
        self.modules = sorted(set(cols["module"]))
        self.layer_index = np.searchsorted(self.layers, cols["layer"]).astype(np.int64)
        self.module_index = np.asarray([self.modules.index(m) for m in cols["module"]], dtype=np.int64)
        series = [(m, k, -1 if g < 0 else 1) for m, k, g in zip(cols["metric"], cols["kind"], cols["magnitude"])]
        keys = sorted(set(series))
        self.series = np.asarray([keys.index(x) for x in series], dtype=np.int64)
        self.n_sites = len(self.layers) * len(self.modules)
        self.site = self.layer_index * len(self.modules) + self.module_index

    def type_id(self, site: np.ndarray) -> np.ndarray:
        return self.series * self.n_sites + site

    def relabelled_sites(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n null draws, (n, events): every event of a site moves along with it, so a shock that
        broke several series (or several matrices of one block) stays one shock."""
        nl, nm = len(self.layers), len(self.modules)
        if self.strata == "layer_module":
            blocks = np.asarray([i for i, la in enumerate(self.layers) if la >= 0], dtype=np.int64)
            weights = np.asarray([i for i, m in enumerate(self.modules) if m != HIDDEN], dtype=np.int64)
            lmap = _permuted(rng, n, self.n_seeds, nl, blocks)
            mmap = _permuted(rng, n, self.n_seeds, nm, weights)
            return lmap[:, self.seed_index, self.layer_index] * nm + mmap[:, self.seed_index, self.module_index]
        groups: dict[str, list[int]] = defaultdict(list)
        for li, la in enumerate(self.layers):
            for mi, mo in enumerate(self.modules):
                groups[site_stratum(la, mo)].append(li * nm + mi)
        smap = np.tile(np.arange(self.n_sites), (n, self.n_seeds, 1))
        for members in groups.values():
            members = np.asarray(members, dtype=np.int64)
            smap[:, :, members] = rng.permuted(np.broadcast_to(members, (n, self.n_seeds, len(members))), axis=2)
        return smap[:, self.seed_index, self.site]


def _permuted(rng: np.random.Generator, n: int, n_seeds: int, size: int, movable: np.ndarray) -> np.ndarray:
    """(n, n_seeds, size) index maps: identity except ``movable``, shuffled among themselves."""
    out = np.tile(np.arange(size), (n, n_seeds, 1))
    if len(movable) > 1:
        out[:, :, movable] = rng.permuted(np.broadcast_to(movable, (n, n_seeds, len(movable))), axis=2)
    return out


def matched_events(type_id: np.ndarray, seed_index: np.ndarray, t: np.ndarray, tolerance: float,
                   n_seeds: int) -> np.ndarray:
    """Events with an event of the same type from another seed within `tolerance` (the H1 statistic),
    for each row of ``type_id`` (shape (draws, events); 1-D counts as one draw).

    Vectorized with two sorted keys (draw + type + time, and draw + type + seed + time): counts in
    [t - tol, t + tol] over all seeds minus those of the event's own seed.
    """
    type_id = np.atleast_2d(type_id)
    n_draws, n = type_id.shape
    if n == 0:
        return np.zeros(n_draws, dtype=np.int64)
    lim = tolerance + _SPREAD_EPS
    span = 4.0 * (int(type_id.max()) + 1) * n_seeds  # t in [0, 1], tolerance < 1: blocks never overlap
    draw = np.arange(n_draws, dtype=np.float64)[:, None] * span
    k_all = (draw + type_id * 4.0 + t).ravel()
    k_own = (draw + (type_id * n_seeds + seed_index) * 4.0 + t).ravel()
    s_all, s_own = np.sort(k_all), np.sort(k_own)
    n_all = np.searchsorted(s_all, k_all + lim, "right") - np.searchsorted(s_all, k_all - lim, "left")
    n_own = np.searchsorted(s_own, k_own + lim, "right") - np.searchsorted(s_own, k_own - lim, "left")
    return np.sum((n_all > n_own).reshape(n_draws, n), axis=1)


def site_permutation_test(events: pa.Table, aligned_t, tolerance: float = DEFAULT_TOLERANCE,
                          n_perm: int = 500, seed: int = 0, exclude=None, strata: str = "layer_module") -> dict:
    """H1's calibrated test (module doc, "Calibrated null"): do the same sites break at the same
    aligned time across seeds more often than each seed's own timing, relabelled, gives?

    ``exclude``: boolean mask over the rows of ``events`` (e.g. events near a schedule change),
    left out of the statistic and the null alike. Loss and composite rows are never in it.
    Returns observed (matched events), null mean/std/quantiles, p_value, excess ratio, counts.
    """
    if n_perm < 1:
        raise ValueError("n_perm must be >= 1")
    if strata not in STRATA:
        raise ValueError(f"unknown strata {strata!r}; expected one of {STRATA}")
    t = _check_aligned(events, aligned_t)
    n_excluded = 0
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        if exclude.shape != (events.num_rows,):
            raise ValueError(f"exclude has shape {exclude.shape}, expected ({events.num_rows},)")
        geometry = np.asarray([m not in NOT_GEOMETRY for m in events.column("module").to_pylist()], dtype=bool)
        n_excluded = int(np.sum(exclude & geometry))
        events, t = events.filter(pa.array(~exclude)), t[~exclude]
    a = _SiteArrays(events, t, strata)
    observed = int(matched_events(a.type_id(a.site), a.seed_index, a.t, tolerance, a.n_seeds)[0])
    rng = np.random.default_rng(seed)
    null = np.concatenate([matched_events(a.type_id(a.relabelled_sites(rng, min(100, n_perm - done))), a.seed_index,
                                          a.t, tolerance, a.n_seeds) for done in range(0, n_perm, 100)])
    n_ge = int(np.sum(null >= observed))
    mean = float(np.mean(null))
    return {
        "test": "site_permutation", "statistic": "matched_events", "observed": int(observed),
        "null_mean": mean, "null_std": float(np.std(null)),
        "null_quantiles": {str(q): float(np.quantile(null, q)) for q in NULL_QUANTILES},
        "p_value": (1 + n_ge) / (1 + n_perm), "excess": observed / mean if mean > 0 else None,
        "n_perm": int(n_perm), "tolerance": float(tolerance), "strata": strata,
        "n_events": int(len(a.t)), "n_seeds": a.n_seeds, "n_sites": a.n_sites,
        "n_excluded": n_excluded,
    }


def _poisson_binomial_tail(probs: list[float], k: int) -> float:
    """P(at least k successes) of independent trials with the given probabilities."""
    dist = np.zeros(len(probs) + 1)
    dist[0] = 1.0
    for p in probs:
        dist[1:] = dist[1:] * (1 - p) + dist[:-1] * p
        dist[0] *= 1 - p
    return float(np.clip(dist[k:].sum(), 0.0, 1.0))


def family_p_values(families: pa.Table, events: pa.Table, aligned_t, tolerance: float = DEFAULT_TOLERANCE,
                    exclude=None) -> dict[str, float | None]:
    """Per family: the chance that its anchor finds at least support - 1 partners under the site null.

    For family f (anchor: its highest-score member, in seed a, at time t), each other seed s would
    under either null see the anchor's series at a random site of the anchor's `site_stratum`
    (a uniform draw in both designs): it matches with
    probability q_s = share of those sites where seed s has an event of that series within
    ``tolerance`` of t. p_f = P(#matches >= support - 1), a Poisson-binomial tail over the seeds;
    conservative (a family also needs its spread <= tolerance). Singletons get 1.0; families of
    loss/composite rows or with an excluded member get None (not tested).
    """
    t = _check_aligned(events, aligned_t)
    excluded = (set(np.asarray(events.column("event_id").to_pylist(), dtype=object)[np.asarray(exclude, bool)])
                if exclude is not None else set())
    row_of = {e: i for i, e in enumerate(events.column("event_id").to_pylist())}
    cols = {c: events.column(c).to_pylist() for c in ("seed", "metric", "layer", "module", "kind", "magnitude",
                                                       "score")}
    times: dict[tuple, list[float]] = defaultdict(list)  # (seed, metric, kind, sign, site) -> times
    for i in range(events.num_rows):
        if cols["module"][i] in NOT_GEOMETRY or events.column("event_id")[i].as_py() in excluded:
            continue
        sign = -1 if cols["magnitude"][i] < 0 else 1
        times[(cols["seed"][i], cols["metric"][i], cols["kind"][i], sign,
               (int(cols["layer"][i]), cols["module"][i]))].append(float(t[i]))
    sites = [(la, mo) for la in sorted({k[4][0] for k in times}) for mo in sorted({k[4][1] for k in times})]
    seeds = sorted(set(cols["seed"]))
    out: dict[str, float | None] = {}
    for fam in families.to_pylist():
        ids = json.loads(fam["event_ids"])
        if fam["module"] in NOT_GEOMETRY or any(e in excluded for e in ids):
            out[fam["family_id"]] = None
            continue
        if fam["support"] < 2:
            out[fam["family_id"]] = 1.0
            continue
        anchor = max((row_of[e] for e in ids), key=lambda i: (cols["score"][i], -i))
        stratum = site_stratum(fam["layer"], fam["module"])
        peers = [s for s in sites if site_stratum(*s) == stratum]
        key = (fam["metric"], fam["kind"], fam["sign"])
        qs = []
        for s in seeds:
            if s == cols["seed"][anchor]:
                continue
            hit = sum(any(abs(x - t[anchor]) <= tolerance + _SPREAD_EPS for x in times.get((s, *key, site), ()))
                      for site in peers)
            qs.append(hit / len(peers))
        out[fam["family_id"]] = _poisson_binomial_tail(qs, fam["support"] - 1)
    return out
