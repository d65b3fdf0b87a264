"""Do geometry events precede probe-B jumps beyond what loss shifts explain? (seed 000 §5.2)

Ingredients, all on the aligned time axis of `invariance.align_steps` (default log step):

- **Probe jumps** (`probe_jumps`): increments between consecutive probe evaluations of a run
  (rows where the column is finite, by step). An increment d (sign-flipped for losses) is a
  jump when d >= ``min_delta`` (absolute, e.g. 0.05 accuracy) AND its robust z-score
  (d - median) / (1.4826 MAD) >= ``z_threshold`` (3). Robust, so the jumps do not inflate their
  own yardstick; when MAD = 0 (a flat plateau) the scale falls back to 1.2533 x the mean
  absolute deviation, and a constant series has no jumps. Consecutive qualifying increments are
  merged into one jump (size = sum). A jump's ``step`` is the evaluation where it is first
  observed; ``prev_step`` the evaluation before it.
- **Loss regime shifts**: change points of the loss curve, supplied by the caller as an
  EVENTS_SCHEMA table (same detector run on the loss series, metric 'loss'); only steps are used.
- **Window**: an event *hits* a jump at aligned time tj when it lies in
  [tj - window_before, tj + window_after]: the event precedes or coincides with the jump.
  Defaults 0.1 / 0.02 in log-step time (at 10k steps: from ~step/2.5 to ~step*1.2).
- **Statistic**: pairs = (jump, event) pairs with the event in the jump's window, summed over
  runs (`hits`, the jumps with at least one event, is reported but saturates with many events).
- **Null**: each run's events are rotated by one uniform offset on a *quantile clock*: the CDF of
  the other runs' events (`quantile_clock`), on which events are about uniform. So the null keeps
  where events concentrate (the detector's window, mid-training bunching) and each run's own
  clustering, and breaks only the timing relative to the jumps. A rotation on the plain time
  circle (the old null) spreads events into stretches where none ever happen and rejects for
  concentrated timing alone (bench/calibration.py). p = (1 + #null >= observed) / (1 + n_perm);
  offsets come from one seeded Generator in sorted run order, so every source sees the same ones.
- **Geometry beyond loss**: among jumps with *no* loss event in their window, how many are hit
  by geometry events; null rotates geometry events only (loss events and jumps stay put).

Edge cases: no jumps -> n_jumps 0, hits 0, hit_rate/null_mean_hit_rate None, p_value 1.0;
no events -> hits 0, hit_rate 0.0, p_value 1.0 (the null ties the observed every time).

The report passes the members of structural families away from the schedule, and jumps away from
it, so schedule-locked events and jumps (curriculum switch) cannot make the link.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np
import pyarrow as pa

from squigglray.events.invariance import DEFAULT_ALIGN_MODE, align_steps
from squigglray.events.schema import COMPOSITE

JUMP_COLUMN = "probe_b_answer_acc"
LOSS_JUMP_COLUMN = "probe_b_loss"
WINDOW_BEFORE = 0.10  # aligned time an event may precede a jump
WINDOW_AFTER = 0.02   # aligned time an event may trail a jump (detection / logging lag)
CLOCK_MIX = 0.05      # share of uniform mixed into the null's quantile clock (keeps it invertible)
SOURCES = ("geometry", "geometry_composite", "loss",
           "geometry_beyond_loss", "geometry_composite_beyond_loss")

CORRELATION_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("n_runs", pa.int64(), nullable=False),
    pa.field("n_jumps", pa.int64(), nullable=False),   # beyond-loss rows: jumps without a loss hit
    pa.field("n_events", pa.int64(), nullable=False),
    pa.field("hits", pa.int64(), nullable=False),
    pa.field("hit_rate", pa.float64()),                # None when n_jumps == 0
    pa.field("null_mean_hits", pa.float64(), nullable=False),
    pa.field("null_mean_hit_rate", pa.float64()),      # None when n_jumps == 0
    pa.field("pairs", pa.int64(), nullable=False),     # (jump, event) pairs in a window: the statistic
    pa.field("null_mean_pairs", pa.float64(), nullable=False),
    pa.field("p_value", pa.float64(), nullable=False),
    pa.field("n_perm", pa.int64(), nullable=False),
    pa.field("window_before", pa.float64(), nullable=False),
    pa.field("window_after", pa.float64(), nullable=False),
    pa.field("align_mode", pa.string(), nullable=False),
])


@dataclass(frozen=True)
class Jump:
    """One probe jump: first observed at ``step``; ``size`` in the column's units (sign-flipped)."""

    run_id: str
    column: str
    step: int
    prev_step: int
    size: float
    z: float


# --------------------------------------------------------------------------- probe jumps


def _series(scalars: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite (step, value) pairs sorted by step, last row per step (probes are logged sparsely)."""
    steps = np.asarray(scalars.column("step").to_numpy(zero_copy_only=False), dtype=np.float64)
    vals = np.asarray(scalars.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)
    ok = np.isfinite(steps) & np.isfinite(vals)
    steps, vals = steps[ok], vals[ok]
    order = np.argsort(steps, kind="stable")
    steps, vals = steps[order], vals[order]
    keep = np.ones(len(steps), dtype=bool)
    keep[:-1] = steps[1:] != steps[:-1]
    return steps[keep].astype(np.int64), vals[keep]


def _robust_z(d: np.ndarray) -> np.ndarray:
    """(d - median) / robust scale; zeros when the increments are all equal."""
    med = np.median(d)
    scale = 1.4826 * np.median(np.abs(d - med))
    if scale <= 1e-12:
        scale = 1.2533 * np.mean(np.abs(d - med))
    if scale <= 1e-12:
        return np.zeros_like(d)
    return (d - med) / scale


def probe_jumps(scalars: pa.Table, column: str = JUMP_COLUMN, *, sign: int = 1,
                min_delta: float = 0.05, z_threshold: float = 3.0,
                run_id: str | None = None) -> list[Jump]:
    """Jumps of one probe series of one run (rule in the module doc), sorted by step.

    ``sign=-1`` for losses (a drop is a jump). ``run_id`` defaults to the table's run_id column.
    """
    if column not in scalars.column_names:
        return []
    if run_id is None:
        ids = scalars.column("run_id").to_pylist() if "run_id" in scalars.column_names else []
        run_id = str(ids[0]) if ids else ""
    steps, vals = _series(scalars, column)
    if len(vals) < 2:
        return []
    d = sign * np.diff(vals)
    z = _robust_z(d)
    is_jump = (d >= min_delta) & (z >= z_threshold)
    jumps: list[Jump] = []
    i = 0
    while i < len(d):
        if not is_jump[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(d) and is_jump[j + 1]:
            j += 1
        jumps.append(Jump(run_id=run_id, column=column, step=int(steps[i + 1]),
                          prev_step=int(steps[i]), size=float(np.sum(d[i:j + 1])),
                          z=float(np.max(z[i:j + 1]))))
        i = j + 1
    return jumps


def probe_b_jumps(scalars: pa.Table, *, use_loss: bool = False, acc_min_delta: float = 0.05,
                  loss_min_delta: float = 0.05, z_threshold: float = 3.0,
                  run_id: str | None = None) -> list[Jump]:
    """Probe-B accuracy jumps, optionally plus probe-B loss drops (deduplicated by step)."""
    jumps = probe_jumps(scalars, JUMP_COLUMN, min_delta=acc_min_delta,
                        z_threshold=z_threshold, run_id=run_id)
    if use_loss:
        seen = {j.step for j in jumps}
        jumps += [j for j in probe_jumps(scalars, LOSS_JUMP_COLUMN, sign=-1,
                                         min_delta=loss_min_delta, z_threshold=z_threshold,
                                         run_id=run_id) if j.step not in seen]
    return sorted(jumps, key=lambda j: (j.step, j.column))


# --------------------------------------------------------------------------- window counting


def _windows(jump_t: np.ndarray, before: float, after: float) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(jump_t - before, 0.0, 1.0), np.clip(jump_t + after, 0.0, 1.0)


def window_counts(event_t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Events in each [lo_j, hi_j]: (P, J) counts for P event-time rows (all times in [0, 1])."""
    ev = np.sort(np.atleast_2d(np.asarray(event_t, dtype=np.float64)), axis=1)
    n_rows, n_ev = ev.shape
    if n_ev == 0 or len(lo) == 0:
        return np.zeros((n_rows, len(lo)), dtype=np.int64)
    # one flat sorted array: row r lives in [4r, 4r + 1], so one searchsorted serves every row
    off = 4.0 * np.arange(n_rows, dtype=np.float64)[:, None]
    flat = (ev + off).ravel()
    left = np.searchsorted(flat, (np.asarray(lo)[None, :] + off).ravel(), side="left")
    right = np.searchsorted(flat, (np.asarray(hi)[None, :] + off).ravel(), side="right")
    return (right - left).reshape(n_rows, len(lo))


@dataclass
class _Run:
    """One run on the aligned axis: jump times and event times per source."""

    jump_t: np.ndarray
    events_t: dict[str, np.ndarray]


def quantile_clock(times: np.ndarray, mix: float = CLOCK_MIX, size: int = 1025) -> tuple[np.ndarray, np.ndarray]:
    """(t grid on [0, 1], u = F(t)): the pooled event times' CDF, mixed with 5% uniform so it is
    strictly increasing and invertible. On this clock the events are about uniform, so rotating
    them there keeps where events concentrate (the null's density) and moves only their phase."""
    grid = np.linspace(0.0, 1.0, size)
    times = np.sort(np.asarray(times, dtype=np.float64))
    ecdf = np.searchsorted(times, grid, side="right") / len(times) if len(times) else grid
    return grid, (1 - mix) * ecdf + mix * grid


def rotated(event_t: np.ndarray, shifts: np.ndarray, clock: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(len(shifts), events): each row the run's events rotated by one shift on the quantile clock."""
    grid, cdf = clock
    u = np.interp(event_t, grid, cdf)
    return np.interp((u[None, :] + shifts[:, None]) % 1.0, cdf, grid)


def window_pairs_test(jump_t: list[np.ndarray], event_t: list[np.ndarray], before: float = WINDOW_BEFORE,
                      after: float = WINDOW_AFTER, n_perm: int = 1000, seed: int = 0, clock_mix: float = CLOCK_MIX
                      ) -> tuple[int, np.ndarray, int, np.ndarray]:
    """(observed pairs, null pairs, observed hits, null hits) pooled over runs (one array of jump /
    event times per run). Pairs: (jump, event) pairs with the event in the jump's window, the test
    statistic; hits: jumps with at least one, for the reader (with dozens of events per run nearly
    every window holds one, so a hit count saturates and has no power).

    Null: each run's events rotated by one uniform shift on the `quantile_clock` of the other
    runs' events (a run's clustering kept, its phase relative to its jumps broken). The other
    runs', not all: under the null they show the same density, and a run's own events sitting at
    its own jumps would otherwise teach the clock to put them back there. Shifts come from one
    seeded Generator, drawn for every run, so all sources see the same rotations. ``clock_mix`` = 1
    is the plain time circle (the uncalibrated null this replaced; kept for bench/calibration.py).
    """
    rng = np.random.default_rng(seed)
    event_t = [np.asarray(e, dtype=np.float64) for e in event_t]
    pairs, hits = 0, 0
    null_pairs, null_hits = np.zeros(n_perm, dtype=np.int64), np.zeros(n_perm, dtype=np.int64)
    for r, (tj, te) in enumerate(zip(jump_t, event_t)):
        shifts = rng.random(n_perm)
        if len(tj) == 0 or len(te) == 0:
            continue
        others = [e for k, e in enumerate(event_t) if k != r]
        clock = quantile_clock(np.concatenate(others) if others else te, clock_mix)
        lo, hi = _windows(np.asarray(tj, dtype=np.float64), before, after)
        counts = window_counts(te, lo, hi)[0]
        pairs, hits = pairs + int(np.sum(counts)), hits + int(np.sum(counts > 0))
        null_counts = window_counts(rotated(te, shifts, clock), lo, hi)
        null_pairs += np.sum(null_counts, axis=1)
        null_hits += np.sum(null_counts > 0, axis=1)
    return pairs, null_pairs, hits, null_hits


def _hits_test(runs: list[_Run], source: str, before: float, after: float, n_perm: int,
               seed: int, exclude: str | None = None) -> tuple[int, int, tuple]:
    """(n_jumps considered, n_events, `window_pairs_test` result) pooled over runs.

    With ``exclude``, jumps hit by that (unshifted) source are dropped first.
    """
    jump_t = []
    for run in runs:
        tj = run.jump_t
        if exclude is not None and len(tj):
            lo, hi = _windows(tj, before, after)
            tj = tj[window_counts(run.events_t[exclude], lo, hi)[0] == 0]
        jump_t.append(tj)
    event_t = [run.events_t[source] for run in runs]
    return (sum(len(j) for j in jump_t), sum(len(e) for e in event_t),
            window_pairs_test(jump_t, event_t, before, after, n_perm, seed))


# --------------------------------------------------------------------------- inputs


def _steps(table: pa.Table | None) -> np.ndarray:
    if table is None or table.num_rows == 0:
        return np.zeros(0, dtype=np.float64)
    return np.asarray(table.column("step").to_numpy(zero_copy_only=False), dtype=np.float64)


def split_geometry(events: pa.Table | None) -> tuple[pa.Table | None, pa.Table | None]:
    """(single-metric geometry rows, composite rows); 'loss' rows are not geometry."""
    if events is None:
        return None, None
    metric = events.column("metric").to_pylist()
    single = [m not in (COMPOSITE, "loss") for m in metric]
    composite = [m == COMPOSITE for m in metric]
    return (events.filter(pa.array(single, type=pa.bool_())),
            events.filter(pa.array(composite, type=pa.bool_())))


def loss_shifts(loss_events: pa.Table | None,
                kinds: tuple[str, ...] | None = None) -> pa.Table | None:
    """Rows of a loss events table with metric 'loss' (and, if given, one of ``kinds``)."""
    if loss_events is None:
        return None
    keep = [m == "loss" and (kinds is None or k in kinds) for m, k in
            zip(loss_events.column("metric").to_pylist(), loss_events.column("kind").to_pylist())]
    return loss_events.filter(pa.array(keep, type=pa.bool_()))


def _prepare(events_by_run, loss_events_by_run, scalars_by_run, max_steps_by_run, mode,
             jumps_by_run, loss_kinds, use_probe_loss):
    """Per run (sorted by run_id): jumps, source tables and their aligned times."""
    max_steps_by_run = max_steps_by_run or {}
    loss_events_by_run = loss_events_by_run or {}
    out = []
    for run_id in sorted(scalars_by_run):
        scalars = scalars_by_run[run_id]

        def t_of(steps, run_id=run_id, scalars=scalars):
            return align_steps(steps, mode, max_steps=max_steps_by_run.get(run_id), scalars=scalars)

        jumps = (jumps_by_run[run_id] if jumps_by_run is not None and run_id in jumps_by_run
                 else probe_b_jumps(scalars, use_loss=use_probe_loss, run_id=run_id))
        single, comp = split_geometry(events_by_run.get(run_id))
        tables = {"geometry": single, "geometry_composite": comp,
                  "loss": loss_shifts(loss_events_by_run.get(run_id), loss_kinds)}
        run = _Run(jump_t=t_of(np.asarray([j.step for j in jumps], dtype=np.float64)),
                   events_t={k: t_of(_steps(v)) for k, v in tables.items()})
        out.append((run_id, jumps, tables, run))
    return out


# --------------------------------------------------------------------------- public API


def correlation_table(events_by_run: Mapping[str, pa.Table],
                      loss_events_by_run: Mapping[str, pa.Table] | None,
                      scalars_by_run: Mapping[str, pa.Table],
                      max_steps_by_run: Mapping[str, int] | None = None, *,
                      window_before: float = WINDOW_BEFORE, window_after: float = WINDOW_AFTER,
                      n_perm: int = 1000, seed: int = 0, mode: str = DEFAULT_ALIGN_MODE,
                      jumps_by_run: Mapping[str, list[Jump]] | None = None,
                      loss_kinds: tuple[str, ...] | None = None,
                      use_probe_loss: bool = False) -> list[dict]:
    """One row per source (SOURCES order; CORRELATION_SCHEMA fields), pooled over runs.

    Runs are the keys of ``scalars_by_run`` (jumps come from them unless ``jumps_by_run`` is
    given). ``events_by_run`` holds geometry events (single + composite rows),
    ``loss_events_by_run`` the loss change points. Beyond-loss rows count only jumps without a
    loss event in their window (their ``n_jumps``).
    """
    if n_perm < 1:
        raise ValueError("n_perm must be >= 1")
    runs = [r for *_, r in _prepare(events_by_run, loss_events_by_run, scalars_by_run,
                                    max_steps_by_run, mode, jumps_by_run, loss_kinds,
                                    use_probe_loss)]
    specs = [("geometry", "geometry", None), ("geometry_composite", "geometry_composite", None),
             ("loss", "loss", None), ("geometry_beyond_loss", "geometry", "loss"),
             ("geometry_composite_beyond_loss", "geometry_composite", "loss")]
    rows = []
    for name, source, exclude in specs:
        n_jumps, n_events, (pairs, null_pairs, hits, null) = _hits_test(
            runs, source, window_before, window_after, n_perm, seed, exclude)
        rows.append({
            "source": name, "n_runs": len(runs), "n_jumps": n_jumps, "n_events": n_events,
            "hits": hits, "hit_rate": hits / n_jumps if n_jumps else None,
            "null_mean_hits": float(np.mean(null)),
            "null_mean_hit_rate": float(np.mean(null)) / n_jumps if n_jumps else None,
            "pairs": pairs, "null_mean_pairs": float(np.mean(null_pairs)),
            "p_value": (1 + int(np.sum(null_pairs >= pairs))) / (1 + n_perm) if n_jumps else 1.0,
            "n_perm": n_perm, "window_before": window_before, "window_after": window_after,
            "align_mode": mode,
        })
    return rows


def as_table(rows: list[dict]) -> pa.Table:
    """correlation_table rows as an Arrow table (CORRELATION_SCHEMA)."""
    return pa.Table.from_pylist(rows, schema=CORRELATION_SCHEMA)


def event_correlations(events_by_run: Mapping[str, pa.Table],
                       loss_events_by_run: Mapping[str, pa.Table] | None,
                       scalars_by_run: Mapping[str, pa.Table],
                       max_steps_by_run: Mapping[str, int] | None = None, *,
                       window_before: float = WINDOW_BEFORE, window_after: float = WINDOW_AFTER,
                       mode: str = DEFAULT_ALIGN_MODE,
                       jumps_by_run: Mapping[str, list[Jump]] | None = None,
                       loss_kinds: tuple[str, ...] | None = None,
                       use_probe_loss: bool = False) -> list[dict]:
    """Per geometry event (single and composite): the probe jumps and loss shifts it precedes.

    An event at te is linked to a jump / loss shift at tx when te lies in
    [tx - window_before, tx + window_after] (the same window as the permutation test).
    """
    prepared = _prepare(events_by_run, loss_events_by_run, scalars_by_run, max_steps_by_run,
                        mode, jumps_by_run, loss_kinds, use_probe_loss)
    out = []
    for run_id, jumps, tables, run in prepared:
        loss_steps = _steps(tables["loss"]).astype(np.int64)
        for source in ("geometry", "geometry_composite"):
            table = tables[source]
            if table is None or table.num_rows == 0:
                continue
            for row, te in zip(table.to_pylist(), run.events_t[source]):
                in_jump = _linked(te, run.jump_t, window_before, window_after)
                in_loss = _linked(te, run.events_t["loss"], window_before, window_after)
                out.append({
                    "event_id": row["event_id"], "run_id": run_id, "seed": row["seed"],
                    "metric": row["metric"], "layer": row["layer"], "module": row["module"],
                    "kind": row["kind"], "step": row["step"], "t": float(te),
                    "jump_steps": [jumps[i].step for i in np.flatnonzero(in_jump)],
                    "jump_sizes": [jumps[i].size for i in np.flatnonzero(in_jump)],
                    "loss_shift_steps": [int(s) for s in loss_steps[in_loss]],
                    "with_jump": bool(in_jump.any()), "with_loss_shift": bool(in_loss.any()),
                })
    return out


def _linked(te: float, tx: np.ndarray, before: float, after: float) -> np.ndarray:
    """Mask of targets tx whose window [tx - before, tx + after] contains te."""
    lo, hi = _windows(np.asarray(tx, dtype=np.float64), before, after)
    return (lo <= te) & (te <= hi)


def family_correlations(families: pa.Table, event_rows: list[dict]) -> list[dict]:
    """Roll event_correlations up to event families (EVENT_FAMILIES_SCHEMA rows)."""
    by_id = {r["event_id"]: r for r in event_rows}
    out = []
    for fam in families.to_pylist():
        members = [by_id[e] for e in json.loads(fam["event_ids"]) if e in by_id]
        out.append({
            "family_id": fam["family_id"], "structural": fam["structural"],
            "support": fam["support"], "t_center": fam["t_center"],
            "n_members": len(members),
            "n_with_jump": sum(m["with_jump"] for m in members),
            "n_with_loss_shift": sum(m["with_loss_shift"] for m in members),
            "seeds_with_jump": sorted({m["seed"] for m in members if m["with_jump"]}),
            "jump_only": sum(m["with_jump"] and not m["with_loss_shift"] for m in members),
        })
    return out


def jumps_as_dicts(jumps: list[Jump]) -> list[dict]:
    """Plain dicts (for JSON / Arrow) of a jump list."""
    return [asdict(j) for j in jumps]
