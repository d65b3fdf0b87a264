"""Change points of geometry series (and any scalar series, e.g. the loss) -> EVENTS_SCHEMA rows.

Pipeline per series (one (metric, layer, module) of one run):

1. **Clean and resample.** Drop non-finite values and steps < 1, average duplicate steps, z-score
   the values (constant series: no events). Series longer than ``max_raw`` points are first
   averaged in consecutive groups (per-step loss curves). The series is linearly interpolated in
   u = log10(step) onto ``n = min(n_grid, n_raw)`` points evenly spaced between its first and
   last step: never more grid points than captured points, because extra points are only
   interpolation and would let one raw value weigh on several "observations".

2. **Steady trend.** The null model is a + b*log10(step) + c*step (a log trend, a trend linear in
   steps, or a mix), fitted jointly with everything below. A steady trend is absorbed by it, so it
   produces no event, let alone a ladder of mean shifts.

3. **Breaks = extra regressors** (forward selection, like binary segmentation but with the trend
   refitted at every step). Candidates at each grid boundary tau (at least ``min_size`` grid points
   from either end and from earlier picks): a step 1[u >= u_tau] ('mean_shift', a level jump) and a
   hinge max(0, u - u_tau) ('slope_change', a kink: the slope per decade changes). All regressors
   are evaluated at the captured points and resampled exactly like the data, so a jump between two
   captures is the same ramp on the grid in the data and in the model. The candidate
   with the largest drop in residual sum of squares (RSS) wins. Smooth *nuisance* terms (t^2,
   step^-1/2, step^+1/2; at most ``max_nuisance``) compete with them: when one explains more than
   any step or hinge, it is absorbed into the trend silently. That is what keeps smooth curvature
   beyond the trend (power laws, saturation) from becoming a ladder of kinks. A picked step or
   hinge is an event if ``F = gain / sigma^2 > penalty``, where gain is the RSS drop on the grid
   and sigma^2 is the residual variance at the captured points after adding it. ruptures' KernelCPD
   on the detrended series (or its first difference) does poorly here: its segment-additive costs
   cannot share one trend across segments, so detrending first turns a jump into a sawtooth (about
   0.1 recall on 6-sigma jumps). `EventConfig(method="ruptures")` (events/ruptures_backend.py, the
   dynamics experiment's default) runs ruptures Pelt with a per-segment-trend cost instead and
   matches this detector within a few points of recall; its module compares the two.

4. **Penalty (calibrated, per capture schedule).** Two nulls must stay quiet: shuffled values
   (white noise around the trend) and shuffled increments re-integrated (a random walk around the
   trend, i.e. the same drift without a structural break). A random walk fools any fixed penalty:
   it has large low-frequency structure, and its best split has about 5x the F of white noise.
   The two are told apart by the lag-1 autocorrelation rho of the residuals at the captured
   points after the best break has been fitted: white-noise-plus-break leaves white residuals
   (rho ~ 0), a random walk does not (rho >> 0). `calibrate_penalty` simulates ``n_null`` (4000)
   AR(1) null series on the series' own capture schedule: 20% phi=0 (the shuffled-values null),
   40% phi=1 (the shuffled-increments null) and 40% phi ~ U(0, 1). It runs the first selection
   step on each and sets penalty(rho) to the ``null_quantile`` (0.98) quantile of F among the
   ``null_neighbors`` (400) simulations with the nearest rho, made non-decreasing in rho. Seeded,
   so deterministic. It takes 40-60 ms per schedule (~0.7 s for a 512-point per-step curve) and is
   cached per process, and a run has about two schedules (some metrics miss the first capture).
   A series with smooth residuals (rho -> 1) therefore needs one step or hinge to explain more
   than a random walk's best split would. ``penalty_scale`` multiplies the table.

   Measured with `null_false_positive_rate` (``python -m squigglray.events.changepoints 200 300
   500 800 1500 3000``; 500 series per null, trend of range 1 + noise sd 0.05; share of series
   with >= 1 event):

   ====================  =====  =====  =====  =====  =====  =====
   max_steps              200    300    500    800   1500   3000
   captures (n_raw)        20     24     32     44     72    132
   ====================  =====  =====  =====  =====  =====  =====
   shuffled values       0.000  0.000  0.000  0.008  0.010  0.014
   shuffled increments   0.042  0.028  0.032  0.030  0.034  0.020
   trend + noise         0.000  0.000  0.004  0.004  0.010  0.014
   ====================  =====  =====  =====  =====  =====  =====

   Planted breaks (the tests' setting: 800 steps, 44 captures, unit noise around a trend of range
   10, break at 25-65% of the log-step range, match = right kind and sign within 3 grid points;
   90 series each): mean shifts of 4 / 6 / 8 sigma have recall 0.64 / 0.89 / 0.99 (precision
   >= 0.97), kinks of 12 / 16 / 20 sigma per decade 0.86 / 0.96 / 0.99 (precision >= 0.95).
   Power is lower on short schedules (24 captures: 6-sigma jumps about 0.3) and for kinks in the
   last ~0.7 decades, which look like the trend's linear-in-step term (break anywhere in 20-80%
   of the range: kinks of 16 sigma per decade 0.71). Smaller breaks are missed on purpose: with
   20-45 points a random walk can mimic them.

5. **Event rows.** ``step`` is the first captured step at or after the change point (the midpoint
   of grid cells tau-1 and tau in log10 step), ``step_start`` / ``step_end`` the captured steps
   bracketing that grid cell. ``magnitude`` is the coefficient of the step (level jump) or hinge
   (slope change per decade), in units of the z-scored series, from the final joint fit, divided
   by the final residual sigma (floored at 1e-3: structure below 0.1% of the series' spread is
   never an event). ``score = F / penalty`` (> 1), ``penalty`` is in F units and ``n_points = n``.
   ``diagnostics`` holds the JSON detector details (grid index, log10_step, F, rho, sigma,
   coefficient, selection order, nuisance terms).

Composite rows come from `squigglray.events.composite`. Scoring baselines (`build_scoring_baseline`)
freeze the penalty tables of given schedules into a JSON artifact with a content-hash id. A detector
given a baseline uses those tables and writes ``baseline_id``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

from squigglray.events.composite import composite_rows
from squigglray.events.schema import COMPOSITE, EVENTS_SCHEMA

DETECTOR = "trend_scan/1"
PROVENANCE_KEYS = ("run_id", "seed", "dataset_slice_hash", "config_hash", "package_version")
SIGMA_FLOOR = 1e-3  # residual sigma floor, in units of the z-scored series
RHO_GRID = np.round(np.linspace(-0.5, 1.0, 31), 4)
NULL_MIX = (0.2, 0.4)  # shares of phi=0 (shuffled values) and phi=1 (shuffled increments) nulls
NUISANCE = ("t^2", "step^-1/2", "step^+1/2")
SINGLE_KINDS = ("mean_shift", "slope_change")
METHODS = ("regression", "ruptures")

__all__ = [
    "EventConfig", "PenaltyTable", "build_scoring_baseline", "calibrate_penalty", "detect_run_events",
    "detect_series_events", "events_table", "null_false_positive_rate", "read_scoring_baseline",
    "series_event_rows", "write_scoring_baseline",
]


@dataclass(frozen=True)
class EventConfig:
    """Knobs of the detector; the defaults are the calibrated ones documented in the module."""

    n_grid: int = 48                 # max log-step grid points (never more than raw points)
    min_size: int = 4                # grid points between change points and from the ends
    min_points: int = 6              # series with fewer captured points are skipped
    max_raw: int = 512               # longer series are averaged in consecutive groups first
    max_events: int = 5              # per series
    max_nuisance: int = 2            # smooth terms that may join the trend per series
    kinds: tuple[str, ...] = SINGLE_KINDS
    penalty_scale: float = 1.0       # multiplies the calibrated penalty
    null_quantile: float = 0.98
    n_null: int = 4000
    null_neighbors: int = 400
    null_seed: int = 0
    composite_window: float = 0.1    # +- decades of log10(step)
    composite_min_metrics: int = 2
    method: str = "regression"       # "regression" (this module) | "ruptures" (events.ruptures_backend)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        object.__setattr__(self, "kinds", tuple(self.kinds))  # hashable: configs key the caches
        bad = set(self.kinds) - set(SINGLE_KINDS)
        if bad or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {SINGLE_KINDS}, got {self.kinds}")
        if self.min_size < 2 or self.n_grid < 5 or self.min_points < 3:
            raise ValueError("need min_size >= 2, n_grid >= 5, min_points >= 3")

    def calibration(self) -> dict[str, Any]:
        """The fields a penalty table depends on (penalty_scale is applied afterwards)."""
        keys = ("n_grid", "min_size", "max_raw", "kinds", "null_quantile", "n_null", "null_neighbors", "null_seed",
                "method")
        d = {k: getattr(self, k) for k in keys}
        d["kinds"] = list(d["kinds"])
        return d


# ----------------------------------------------------------------------------- series preparation
@dataclass
class _Series:
    steps: np.ndarray   # captured steps (int64, unique, sorted): targets of the step mapping
    u: np.ndarray       # log10 step of the model points (after optional grouping)
    v: np.ndarray       # z-scored values at u


def _prepare(steps: Sequence[int], values: Sequence[float], cfg: EventConfig) -> _Series | None:
    """Clean, sort, de-duplicate, z-score, group long series; None when there is nothing to detect."""
    s = np.asarray(steps, dtype=float).ravel()
    v = np.asarray(values, dtype=float).ravel()
    ok = np.isfinite(s) & np.isfinite(v) & (s >= 1)
    s, v = s[ok], v[ok]
    if s.size < cfg.min_points:
        return None
    uniq, inv = np.unique(np.round(s).astype(np.int64), return_inverse=True)
    v = np.bincount(inv, weights=v) / np.bincount(inv)
    if uniq.size < cfg.min_points:
        return None
    u = np.log10(uniq.astype(float))
    if uniq.size > cfg.max_raw:
        groups = np.array_split(np.arange(uniq.size), cfg.max_raw)
        u = np.array([u[g].mean() for g in groups])
        v = np.array([v[g].mean() for g in groups])
    sd = v.std()
    if not sd > 1e-12 * max(abs(v.mean()), 1e-300):
        return None
    return _Series(uniq, u, (v - v.mean()) / sd)


# ----------------------------------------------------------------------------- design per schedule
def _trend(x: np.ndarray, u0: float, u1: float) -> np.ndarray:
    """[1, t, step/step_max] with t = normalized log step: the steady-trend null model."""
    t = (x - u0) / max(u1 - u0, 1e-12)
    return np.column_stack([np.ones_like(x), t, 10.0 ** (x - u1)])


def _nuisance(x: np.ndarray, u0: float, u1: float) -> np.ndarray:
    """Smooth curvature terms (see NUISANCE) that may join the trend instead of becoming events."""
    t = (x - u0) / max(u1 - u0, 1e-12)
    return np.column_stack([t * t, 10.0 ** (-0.5 * (x - u0)), 10.0 ** (0.5 * (x - u1))])


def _step(x: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Level-jump regressors 1[x >= at_j], one column per candidate position."""
    return (x[:, None] >= at[None, :]).astype(float)


def _hinge(x: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Kink regressors max(0, x - at_j): the slope (per decade) changes at at_j."""
    return np.maximum(0.0, x[:, None] - at[None, :])


def _orth(b: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the column space (rank-safe: drops near-null directions)."""
    q, sv, _ = np.linalg.svd(b, full_matrices=False)
    return q[:, sv > 1e-10 * max(sv[0], 1e-300)]


class _Design:
    """Everything about one capture schedule: grid, interpolation, trend, candidate regressors."""

    def __init__(self, u: np.ndarray, cfg: EventConfig):
        self.u = u
        self.m = m = len(u)
        self.n = n = min(cfg.n_grid, m)
        self.g = g = np.linspace(u[0], u[-1], n)
        self.idx = np.clip(np.searchsorted(u, g, side="right") - 1, 0, m - 2)
        self.frac = (g - u[self.idx]) / (u[self.idx + 1] - u[self.idx])
        self.min_size = min(cfg.min_size, max(2, (n - 1) // 3))
        # regressors live at the captured points and are resampled like the data (docstring, 3.)
        u0, u1 = u[0], u[-1]
        self.trend_r, self.nuis_r = _trend(u, u0, u1), _nuisance(u, u0, u1)
        self.trend_g, self.nuis_g = self.interp(self.trend_r.T).T, self.interp(self.nuis_r.T).T
        taus = np.arange(self.min_size, n - self.min_size + 1)
        mids = 0.5 * (g[taus - 1] + g[taus])
        zr, kinds, ztau = [], [], []
        for kind in cfg.kinds:
            zr.append((_step if kind == "mean_shift" else _hinge)(u, mids))
            kinds += [kind] * len(taus)
            ztau.append(taus)
        self.Zr = np.concatenate(zr, 1)
        self.Z = self.interp(self.Zr.T).T
        self.z_norm2 = (self.Z ** 2).sum(0)
        self.kinds, self.ztau = np.array(kinds), np.concatenate(ztau)

    def interp(self, v: np.ndarray) -> np.ndarray:
        return v[..., self.idx] * (1 - self.frac) + v[..., self.idx + 1] * self.frac

    def scan(self, v: np.ndarray, y: np.ndarray, bg: np.ndarray, br: np.ndarray, allowed: np.ndarray):
        """One forward step for rows v (captured points) / y (grid) sharing the design [bg | br].

        Returns per row: F, rho, best candidate column, its gain and coefficient."""
        q = _orth(bg)
        r = y - (y @ q) @ q.T
        mz = self.Z - q @ (q.T @ self.Z)
        den = (mz * mz).sum(0)
        ok = allowed & (den > 1e-9 * self.z_norm2)
        proj = r @ mz
        gain = np.where(ok, proj ** 2 / np.where(ok, den, 1.0), -np.inf)
        best = gain.argmax(1)
        rows = np.arange(len(best))
        g_best = gain[rows, best]
        coef = np.where(np.isfinite(g_best), proj[rows, best] / np.where(den[best] > 0, den[best], 1.0), 0.0)
        beta = np.linalg.lstsq(bg, (y - coef[:, None] * self.Z[:, best].T).T, rcond=None)[0].T
        res = v - beta @ br.T - coef[:, None] * self.Zr[:, best].T
        ss = (res * res).sum(1)
        sig2 = np.maximum(ss / max(self.m - bg.shape[1] - 1, 1), SIGMA_FLOOR ** 2)
        rho = (res[:, 1:] * res[:, :-1]).sum(1) / np.maximum(ss, 1e-300)
        return g_best / sig2, rho, best, g_best, coef


@lru_cache(maxsize=64)
def _design(u_bytes: bytes, cfg: EventConfig) -> _Design:
    return _Design(np.frombuffer(u_bytes, dtype=np.float64).copy(), cfg)


def _schedule_key(u: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(u, dtype=np.float64).tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class PenaltyTable:
    """penalty(rho) on RHO_GRID for one capture schedule, in F units (before penalty_scale)."""

    rho: tuple[float, ...]
    penalty: tuple[float, ...]
    n_raw: int
    n_grid: int
    null_f: Mapping[str, Mapping[str, float]]  # F quantiles of the white / random-walk nulls

    def at(self, rho: float, scale: float = 1.0) -> float:
        return float(np.interp(rho, self.rho, self.penalty)) * scale

    def to_json(self) -> dict[str, Any]:
        return {"rho": list(self.rho), "penalty": list(self.penalty), "n_raw": self.n_raw, "n_grid": self.n_grid,
                "null_f": {k: dict(v) for k, v in self.null_f.items()}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PenaltyTable:
        return cls(tuple(d["rho"]), tuple(d["penalty"]), int(d["n_raw"]), int(d["n_grid"]), d["null_f"])


def _ar1(phis: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """AR(1) rows x_t = phi x_{t-1} + e_t (stationary start; phi=1 is a random walk), z-scored."""
    e = rng.standard_normal((len(phis), m))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0] / np.sqrt(np.maximum(1 - phis ** 2, 1.0 / m))
    for t in range(1, m):
        x[:, t] = phis * x[:, t - 1] + e[:, t]
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)


@lru_cache(maxsize=64)
def _calibrate(u_bytes: bytes, cfg: EventConfig) -> PenaltyTable:
    d = _design(u_bytes, cfg)
    rng = np.random.default_rng(cfg.null_seed)
    n0, n1 = int(cfg.n_null * NULL_MIX[0]), int(cfg.n_null * NULL_MIX[1])
    phis = np.concatenate([np.zeros(n0), np.ones(n1), rng.uniform(0, 1, cfg.n_null - n0 - n1)])
    v = _ar1(phis, d.m, rng)
    f, rho, *_ = d.scan(v, d.interp(v), d.trend_g, d.trend_r, np.ones(d.Z.shape[1], bool))
    k = min(cfg.null_neighbors, len(f))
    pen = [np.quantile(f[np.argsort(np.abs(rho - r0), kind="stable")[:k]], cfg.null_quantile) for r0 in RHO_GRID]
    pen = np.maximum.accumulate(np.asarray(pen))
    qs = {"q50": 0.5, "q90": 0.9, "q95": 0.95, "q99": 0.99}
    null_f = {name: {k_: round(float(np.quantile(f[sel], q)), 4) for k_, q in qs.items()}
              for name, sel in (("white", phis == 0), ("random_walk", phis == 1))}
    return PenaltyTable(tuple(float(r) for r in RHO_GRID), tuple(round(float(p), 6) for p in pen), d.m, d.n, null_f)


def calibrate_penalty(steps: Sequence[int], config: EventConfig | None = None) -> PenaltyTable:
    """Calibrated penalty(rho) for a capture schedule (see module docstring, step 4)."""
    cfg = config or EventConfig()
    s = _prepare(steps, np.arange(len(steps), dtype=float), cfg)
    if s is None:
        raise ValueError("schedule too short to calibrate")
    return _calibrate(s.u.tobytes(), cfg)


# ----------------------------------------------------------------------------- detection
def _select(d: _Design, s: _Series, table: PenaltyTable, cfg: EventConfig) -> tuple[list[dict], dict]:
    """Forward selection of breaks (+ silent nuisance terms); returns picks and the final fit."""
    v, y = s.v[None], d.interp(s.v)[None]
    cols_g, cols_r, labels = [d.trend_g], [d.trend_r], ["trend"] * 3
    allowed = np.ones(d.Z.shape[1], bool)
    nuis_free = list(range(d.nuis_g.shape[1]))
    picks: list[dict] = []
    while len(picks) < cfg.max_events and allowed.any():
        bg, br = np.column_stack(cols_g), np.column_stack(cols_r)
        f, rho, best, gain, _ = d.scan(v, y, bg, br, allowed)
        if not np.isfinite(gain[0]):
            break
        if len(labels) - 3 - len(picks) < cfg.max_nuisance and nuis_free:
            q = _orth(bg)
            r = y[0] - q @ (q.T @ y[0])
            mn = d.nuis_g[:, nuis_free] - q @ (q.T @ d.nuis_g[:, nuis_free])
            den = (mn * mn).sum(0)
            ng = np.where(den > 1e-9, (r @ mn) ** 2 / np.where(den > 0, den, 1.0), -np.inf)
            j = int(ng.argmax())
            if ng[j] > gain[0]:
                k = nuis_free.pop(j)
                cols_g.append(d.nuis_g[:, k])
                cols_r.append(d.nuis_r[:, k])
                labels.append(NUISANCE[k])
                continue
        pen = table.at(float(rho[0]), cfg.penalty_scale)
        if not f[0] > pen:
            break
        b = int(best[0])
        picks.append({"col": b, "pos": len(labels), "F": float(f[0]), "penalty": pen, "rho": float(rho[0]),
                      "order": len(picks)})
        cols_g.append(d.Z[:, b])
        cols_r.append(d.Zr[:, b])
        labels.append(f"event{len(picks) - 1}")
        allowed &= np.abs(d.ztau - d.ztau[b]) >= d.min_size
    bg, br = np.column_stack(cols_g), np.column_stack(cols_r)
    beta = np.linalg.lstsq(bg, y[0], rcond=None)[0]
    res = s.v - br @ beta
    sigma = max(math.sqrt(float(res @ res) / max(d.m - bg.shape[1], 1)), SIGMA_FLOOR)
    return picks, {"beta": beta, "sigma": sigma, "nuisance": [lab for lab in labels if lab in NUISANCE]}


def _snap(steps: np.ndarray, u: float, side: str) -> int:
    """Captured step at or after ('after') / at or before ('before') log10 step u."""
    su = np.log10(steps.astype(float))
    if side == "after":
        i = min(int(np.searchsorted(su, u - 1e-12, side="left")), len(steps) - 1)
    else:
        i = max(int(np.searchsorted(su, u + 1e-12, side="right")) - 1, 0)
    return int(steps[i])


def _table_for(s: _Series, cfg: EventConfig, baseline: Mapping[str, Any] | None) -> tuple[PenaltyTable, str]:
    if baseline is not None:
        if baseline.get("config") != cfg.calibration():
            raise ValueError("scoring baseline was calibrated with another EventConfig")
        t = baseline["tables"].get(_schedule_key(s.u))
        if t is not None:
            return PenaltyTable.from_json(t), str(baseline["baseline_id"])
    return _calibrator(cfg)[0](s.u.tobytes(), cfg), ""


def _calibrator(cfg: EventConfig):
    """(penalty calibration function, detector name) of the configured method."""
    if cfg.method == "ruptures":
        from squigglray.events import ruptures_backend

        return ruptures_backend._calibrate, ruptures_backend.DETECTOR
    return _calibrate, DETECTOR


def _prov(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    p = dict(provenance or {})
    return {"run_id": str(p.get("run_id", "")), "seed": int(p.get("seed", 0) or 0),
            **{k: str(p.get(k, "")) for k in ("dataset_slice_hash", "config_hash", "package_version")}}


def series_event_rows(steps: Sequence[int], values: Sequence[float], *, metric: str, layer: int, module: str,
                      max_steps: int | None = None, provenance: Mapping[str, Any] | None = None,
                      config: EventConfig | None = None,
                      baseline: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Single-metric event rows (EVENTS_SCHEMA dicts) of one series; [] when it is skipped."""
    cfg = config or EventConfig()
    if cfg.method == "ruptures":
        from squigglray.events import ruptures_backend

        return ruptures_backend.series_event_rows(steps, values, metric=metric, layer=layer, module=module,
                                                  max_steps=max_steps, provenance=provenance, config=cfg,
                                                  baseline=baseline)
    s = _prepare(steps, values, cfg)
    if s is None:
        return []
    d = _design(s.u.tobytes(), cfg)
    if d.n < 2 * d.min_size + 1:
        return []
    table, baseline_id = _table_for(s, cfg, baseline)
    picks, fit = _select(d, s, table, cfg)
    prov = _prov(provenance)
    horizon = float(max_steps) if max_steps and max_steps > 0 else float(s.steps[-1])
    rows = []
    for p in sorted(picks, key=lambda p: d.ztau[p["col"]]):
        tau, kind = int(d.ztau[p["col"]]), str(d.kinds[p["col"]])
        u_c = 0.5 * (d.g[tau - 1] + d.g[tau])
        step = _snap(s.steps, u_c, "after")
        coef = float(fit["beta"][p["pos"]])
        diag = {"detector": DETECTOR, "regressor": "step" if kind == "mean_shift" else "hinge",
                "grid_index": tau, "log10_step": round(u_c, 6), "F": round(p["F"], 4), "rho": round(p["rho"], 4),
                "sigma": round(fit["sigma"], 6), "coef": round(coef, 6), "order": p["order"],
                "nuisance": fit["nuisance"], "n_raw": d.m}
        rows.append({
            "event_id": f"{prov['run_id']}:{metric}:{int(layer)}:{module}:{kind}:{step}",
            **{k: prov[k] for k in ("run_id", "seed")}, "metric": metric, "layer": int(layer), "module": module,
            "kind": kind, "step": step, "step_start": _snap(s.steps, float(d.g[tau - 1]), "before"),
            "step_end": _snap(s.steps, float(d.g[tau]), "after"), "step_frac": step / horizon,
            "magnitude": coef / fit["sigma"], "score": p["F"] / p["penalty"], "penalty": p["penalty"],
            "n_points": d.n, "n_members": 1, "members": "[]", "diagnostics": json.dumps(diag, sort_keys=True),
            "baseline_id": baseline_id,
            **{k: prov[k] for k in ("dataset_slice_hash", "config_hash", "package_version")},
        })
    return _unique(rows)


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per event_id (two picks snapped to one captured step: keep the higher score)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["event_id"] not in best or r["score"] > best[r["event_id"]]["score"]:
            best[r["event_id"]] = r
    return [r for r in rows if best[r["event_id"]] is r]


def events_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows -> EVENTS_SCHEMA table, singles by (metric, layer, module, step, kind), then composites."""
    rows = sorted(rows, key=lambda r: (r["metric"] == COMPOSITE, r["metric"], r["layer"], r["module"], r["step"],
                                       r["kind"], r["event_id"]))
    return pa.Table.from_pylist(list(rows), schema=EVENTS_SCHEMA)


def detect_series_events(steps: Sequence[int], values: Sequence[float], *, metric: str = "loss", layer: int = -1,
                         module: str = "scalar", max_steps: int | None = None,
                         provenance: Mapping[str, Any] | None = None, config: EventConfig | None = None,
                         baseline: Mapping[str, Any] | None = None) -> pa.Table:
    """Events of any scalar series (e.g. the loss: metric 'loss', layer -1, module 'scalar')."""
    return events_table(series_event_rows(steps, values, metric=metric, layer=layer, module=module,
                                          max_steps=max_steps, provenance=provenance, config=config,
                                          baseline=baseline))


def detect_run_events(geometry: pa.Table, max_steps: int, config: EventConfig | None = None,
                      baseline: Mapping[str, Any] | None = None) -> pa.Table:
    """Events of every (metric, layer, module) series of a geometry table, plus composites.

    Several run_ids in one table are handled run by run (composites never span runs)."""
    cfg = config or EventConfig()
    if geometry.num_rows == 0:
        return EVENTS_SCHEMA.empty_table()
    cols = {c: geometry.column(c).to_numpy(zero_copy_only=False)
            for c in ("run_id", "metric", "layer", "module", "step", "value")}
    rows: list[dict[str, Any]] = []
    for run_id in sorted(set(cols["run_id"].tolist())):
        in_run = np.flatnonzero(cols["run_id"] == run_id)
        first = geometry.slice(int(in_run[0]), 1).to_pylist()[0]
        prov = {k: first.get(k, "") for k in PROVENANCE_KEYS}
        series: dict[tuple, list[int]] = {}
        for i, key in zip(in_run, zip(cols["metric"][in_run], cols["layer"][in_run], cols["module"][in_run])):
            series.setdefault((str(key[0]), int(key[1]), str(key[2])), []).append(int(i))
        run_rows = []
        for (metric, layer, module), idx in sorted(series.items()):
            run_rows += series_event_rows(cols["step"][idx], cols["value"][idx], metric=metric, layer=layer,
                                          module=module, max_steps=max_steps, provenance=prov, config=cfg,
                                          baseline=baseline)
        rows += run_rows + composite_rows(run_rows, cfg.composite_window, cfg.composite_min_metrics)
    return events_table(_unique(rows))


# ----------------------------------------------------------------------------- scoring baselines
def _content_id(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def build_scoring_baseline(schedules: Iterable[Sequence[int]], config: EventConfig | None = None) -> dict[str, Any]:
    """Penalty tables (null F distribution per rho) of the given capture schedules, as a JSON dict.

    ``baseline_id`` is a hash of the rest of the content, so equal baselines share an id."""
    cfg = config or EventConfig()
    calibrate, detector = _calibrator(cfg)
    tables = {}
    for steps in schedules:
        s = _prepare(steps, np.arange(len(steps), dtype=float), cfg)
        if s is not None:
            tables[_schedule_key(s.u)] = calibrate(s.u.tobytes(), cfg).to_json()
    body = {"kind": "events.changepoints.null", "detector": detector, "config": cfg.calibration(),
            "null_mix": list(NULL_MIX), "tables": tables}
    return {**body, "baseline_id": _content_id(body)}


def write_scoring_baseline(store, baseline: Mapping[str, Any]) -> str:
    """Write under scoring_baselines/<baseline_id>.json; returns the relative path."""
    rel = store.scoring_baseline(baseline["baseline_id"])
    store.write_json(rel, dict(baseline))
    return rel


def read_scoring_baseline(store, baseline_id: str) -> dict[str, Any]:
    """Read a baseline back and check that its content still hashes to its id."""
    baseline = store.read_json(store.scoring_baseline(baseline_id))
    body = {k: v for k, v in baseline.items() if k != "baseline_id"}
    if baseline.get("baseline_id") != baseline_id or _content_id(body) != baseline_id:
        raise ValueError(f"scoring baseline {baseline_id} does not match its content")
    return baseline


# ----------------------------------------------------------------------------- null check
def null_false_positive_rate(steps: Sequence[int], config: EventConfig | None = None, n_series: int = 200,
                             seed: int = 1, noise: float = 0.05) -> dict[str, float]:
    """Share of null series with >= 1 event, per null family, on one capture schedule.

    Base series: a steady trend (linear in step or in log step, range 1) plus white noise of sd
    ``noise``. Families: 'shuffled_values' (its values permuted), 'shuffled_increments' (its
    increments permuted and re-integrated: same drift, no break), 'trend_noise' (the base itself)."""
    cfg = config or EventConfig()
    st = np.asarray(sorted(set(int(x) for x in steps)), dtype=float)
    u = np.log10(st)
    rng = np.random.default_rng(seed)
    hits = {"shuffled_values": 0, "shuffled_increments": 0, "trend_noise": 0}
    for i in range(n_series):
        trend = st / st[-1] if i % 2 else (u - u[0]) / max(u[-1] - u[0], 1e-12)
        base = trend + noise * rng.standard_normal(len(st))
        inc = rng.permutation(np.diff(base))
        for name, vals in (("shuffled_values", rng.permutation(base)), ("trend_noise", base),
                           ("shuffled_increments", np.concatenate([[base[0]], base[0] + np.cumsum(inc)]))):
            hits[name] += bool(series_event_rows(st, vals, metric="null", layer=-1, module="scalar", config=cfg))
    return {k: v / n_series for k, v in hits.items()}


def _main(argv: Sequence[str]) -> None:
    """Print the penalty table and the measured null rates for log-cadence schedules."""
    from squigglray.training.cadence import log_steps

    cfg = EventConfig()
    for max_steps in [int(a) for a in argv] or [200, 300, 500, 800, 1500, 3000]:
        steps = log_steps(max_steps, 64, 25)
        t = calibrate_penalty(steps, cfg)
        print(f"max_steps={max_steps} n_raw={t.n_raw} n_grid={t.n_grid}")
        print("  penalty(rho):", {r: round(p, 1) for r, p in list(zip(t.rho, t.penalty))[::5]})
        print("  null F quantiles:", json.dumps(t.null_f))
        print("  null false-positive rate:", null_false_positive_rate(steps, cfg, n_series=500))


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])

