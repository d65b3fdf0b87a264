"""Change points with ruptures: ``EventConfig(method="ruptures")`` (the default is the regression scan).

Same contract as `changepoints.series_event_rows` and the same preparation (`changepoints._prepare`:
clean, z-score, resample onto ``n = min(n_grid, n_raw)`` points evenly spaced in log10 step).

What we chose, and why
----------------------
* **Detector: ruptures ``Pelt`` (jump=1, min_size as the default detector) with a segment-wise
  trend-regression cost.** Each segment gets its *own* steady trend a + b*t + c*step (the basis
  `changepoints._trend`, resampled like the data); the cost of a segment is its residual sum of
  squares. This is ruptures' ``CostLinear`` (model="linear" with the trend basis as covariates),
  re-implemented as a ``BaseCost`` that precomputes every segment's orthonormal basis once per capture
  schedule, because (a) ``CostLinear`` calls ``lstsq`` per segment (26 ms per 44-point series with
  Pelt, 6 s per run) and (b) it returns cost 0 for rank-deficient segments (``lstsq`` gives no
  residual then), which happens on short early segments where step/step_max is ~constant.
  Why not the recipes of the issue: KernelCPD (linear kernel) on the globally detrended series cannot
  share one trend across segments; a jump on a trending series becomes a sawtooth after global
  detrending (the author of changepoints.py measured ~0.1 recall on 6-sigma jumps), and KernelCPD on
  first differences is too noisy for kinks with 20-45 points. A per-segment trend absorbs the trend on
  both sides of a break, so mean shifts *and* kinks are both "a change of the trend coefficients";
  the price is 3 parameters per segment (less power than a shared trend, see the table).
* **Position, kind and magnitude.** For a Pelt breakpoint with neighbours a, b in the segmentation,
  the break is re-placed by the shared-trend fit on y[a:b]: one trend plus a step 1[u >= u_tau]
  (mean_shift) or a hinge max(0, u - u_tau) (slope_change), both resampled like the data, over every
  tau in [a + min_size, b - min_size] and every kind in ``cfg.kinds``; the lowest residual wins.
  Pelt's per-segment trends localize kinks poorly (+-3 grid points; kink precision was 0.44-0.72
  without this step, 0.94-1.00 with it). ``magnitude`` = the step / hinge coefficient (level jump,
  or slope change per decade, in units of the z-scored series) / sigma. ``score = gain / penalty``,
  gain = cost(a, b) - cost(a, tau_pelt) - cost(tau_pelt, b) from the cost object's ``error``, penalty
  in cost units; Pelt's optimality makes every score >= 1. The ``penalty`` column is in F units
  (cost / sigma^2), like the default detector's; diagnostics hold both indices (grid_index,
  pelt_index), the segment, F, rho, sigma, coef.
* **Penalty (calibrated per capture schedule, rho-adaptive).** sigma^2 comes from the best single
  split of the segment cost (its residual sum of squares / residual dof). rho is the default
  detector's whiteness indicator: lag-1 autocorrelation (at the captured points) of the residuals of
  the shared trend + best step or hinge (`_Design.scan`). The rho of the split fit itself did not
  work: three free trend parameters per segment whiten a random walk's residuals, rho stopped
  separating the nulls, and penalty(rho ~ 0) rose to 191 (mean shifts of 6 sigma: recall 0.12). The
  penalty in cost units is ``penalty(rho) * sigma^2``. A fixed penalty does not work: the random-
  walk null (shuffled increments re-integrated) has a best-split F ~ 3-5x that of white noise
  (median 63 vs 19), and a penalty that silences it kills recall on white-noise series with a real
  break. So, as in the default detector, we simulate ``n_null`` AR(1) nulls on the series' own
  schedule (20% phi=0 = shuffled values, 40% phi=1 = shuffled increments, 40% phi ~ U(0, 1)), record
  (F of the best single split, rho), and take penalty(rho) = ``null_quantile`` quantile of F among
  the ``null_neighbors`` nulls with the nearest rho, made non-decreasing (44 captures: 54 at rho <=
  -0.2, 98 at 0.1, 340 at rho >= 0.55; the white null's best split has F q99 = 63, the random walk's
  342). Seeded, cached per schedule (lru_cache on the schedule bytes). The segment cost is invariant
  to adding any steady trend, so the nulls need no trend, and circular shifts of white noise / of
  increments are the same distributions (a circular shift of a *trending* series is not a null: it
  plants a jump at the wrap).

Measured (``python -m squigglray.events.ruptures_backend``; nulls: `changepoints.null_false_positive_rate`,
500 series per family, share of series with >= 1 event; planted: the generator of
tests/test_events_changepoints.py, 800 steps, 44 captures, unit noise around a trend of range 10,
break at 25-65% of the log-step range, 90 series each, hit = right kind and sign within 3 grid points,
precision = share of events within 3 grid points of the planted break):

====================  =====  =====  =====  =====  =====  =====
max_steps              200    300    500    800   1500   3000
captures (n_raw)        20     24     32     44     72    132
====================  =====  =====  =====  =====  =====  =====
shuffled values
  regression          0.000  0.000  0.000  0.008  0.010  0.014
  ruptures            0.000  0.002  0.002  0.010  0.022  0.050
shuffled increments
  regression          0.042  0.028  0.032  0.030  0.034  0.020
  ruptures            0.046  0.032  0.044  0.036  0.038  0.022
trend + noise
  regression          0.000  0.000  0.004  0.004  0.010  0.014
  ruptures            0.000  0.000  0.010  0.002  0.018  0.014
====================  =====  =====  =====  =====  =====  =====

==========================  ==================  ==================
planted (44 captures)       regression          ruptures
                            recall / precision  recall / precision
==========================  ==================  ==================
mean shift 4 sigma          0.64 / 0.97         0.44 / 0.93
mean shift 6 sigma          0.89 / 0.99         0.87 / 0.99
mean shift 8 sigma          0.99 / 1.00         0.94 / 1.00
kink 12 sigma / decade      0.86 / 0.95         0.89 / 0.94
kink 16 sigma / decade      0.96 / 1.00         0.98 / 0.99
kink 20 sigma / decade      0.99 / 1.00         1.00 / 1.00
==========================  ==================  ==================

Both are calibrated to the same null rate (<= 5% of null series with an event; the ruptures backend
sits slightly higher, up to 0.05 on shuffled values with 132 captures). At equal nulls the
regression scan has more power on mean shifts (one shared trend: 3 trend parameters instead of 6),
the ruptures backend is on par for kinks (thanks to the shared-trend re-placement). Runtime, one run
of 250 series x 44 captures (2 schedules): regression 0.17 s, ruptures 0.28 s once calibrated; the
ruptures calibration costs ~1 s per schedule (regression ~0.05 s), cached per process.

Scoring baselines (`changepoints.build_scoring_baseline` with this config) freeze its penalty tables.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import ruptures as rpt
from ruptures.exceptions import NotEnoughPoints

from squigglray.events import changepoints as cp

DETECTOR = "ruptures-pelt-segtrend/1"
JUMP = 1

__all__ = ["DETECTOR", "calibrate_penalty", "series_event_rows"]


class _Schedule:
    """Per capture schedule: the grid design and every admissible segment's trend basis."""

    def __init__(self, d: cp._Design):
        self.d = d
        n, ms = d.n, d.min_size
        X = d.trend_g
        self.n, self.min_size = n, ms
        self.seg = -np.ones((n + 1, n + 1), dtype=np.int64)
        pairs = [(a, b) for a in range(n) for b in range(a + ms, n + 1)]
        self.Q = np.zeros((len(pairs), n, X.shape[1]))
        self.rank = np.zeros(len(pairs), dtype=np.int64)
        for k, (a, b) in enumerate(pairs):
            q = cp._orth(X[a:b])
            self.Q[k, a:b, : q.shape[1]] = q
            self.rank[k] = q.shape[1]
            self.seg[a, b] = k
        self.taus = np.arange(ms, n - ms + 1)
        self.left = self.seg[0, self.taus]
        self.right = self.seg[self.taus, n]

    def costs(self, y: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """Residual sums of squares of segments ks for rows y (N, n) -> (N, len(ks))."""
        Q = self.Q[ks]
        proj = np.einsum("Nn,Snk->NSk", y, Q)
        cs = np.concatenate([np.zeros((len(y), 1)), np.cumsum(y * y, 1)], 1)
        a, b = self._ab[ks, 0], self._ab[ks, 1]
        return np.maximum(cs[:, b] - cs[:, a] - (proj * proj).sum(2), 0.0)

    @property
    def _ab(self) -> np.ndarray:
        if not hasattr(self, "_ab_cache"):
            ab = np.argwhere(self.seg >= 0)
            out = np.zeros((int(self.seg.max()) + 1, 2), dtype=np.int64)
            out[self.seg[ab[:, 0], ab[:, 1]]] = ab
            self._ab_cache = out
        return self._ab_cache

    def best_split(self, y: np.ndarray):
        """Best single split per row: (F, rho, sigma^2, gain, tau index)."""
        c0 = self.costs(y, np.array([self.seg[0, self.n]]))[:, 0]
        cl, cr = self.costs(y, self.left), self.costs(y, self.right)
        gain = c0[:, None] - cl - cr
        j = gain.argmax(1)
        rows = np.arange(len(y))
        ss = cl[rows, j] + cr[rows, j]
        dof = self.n - self.rank[self.left[j]] - self.rank[self.right[j]]
        sig2 = np.maximum(ss / np.maximum(dof, 1), cp.SIGMA_FLOOR ** 2)
        # residuals of the split fit, for rho
        ql, qr = self.Q[self.left[j]], self.Q[self.right[j]]
        fit = np.einsum("Nnk,Nk->Nn", ql, np.einsum("Nn,Nnk->Nk", y, ql))
        fit += np.einsum("Nnk,Nk->Nn", qr, np.einsum("Nn,Nnk->Nk", y, qr))
        res = y - fit
        rho = (res[:, 1:] * res[:, :-1]).sum(1) / np.maximum((res * res).sum(1), 1e-300)
        return gain[rows, j] / sig2, rho, sig2, gain[rows, j], j


@lru_cache(maxsize=64)
def _schedule(u_bytes: bytes, cfg: cp.EventConfig) -> _Schedule:
    return _Schedule(cp._design(u_bytes, cfg))


class _SegTrendCost(rpt.base.BaseCost):
    """ruptures cost: residual sum of squares of a per-segment steady-trend regression (lookup table)."""

    model = "segtrend"

    def __init__(self, sched: _Schedule):
        self.sched = sched
        self.min_size = sched.min_size
        self.signal = None
        self.table = None

    def fit(self, signal) -> _SegTrendCost:
        self.signal = np.asarray(signal, dtype=float).reshape(len(signal), -1)
        y = self.signal[:, 0][None]
        self.table = self.sched.costs(y, np.arange(len(self.sched.rank)))[0]
        return self

    def error(self, start, end) -> float:
        if end - start < self.min_size:
            raise NotEnoughPoints
        return float(self.table[self.sched.seg[start, end]])


def _rho(d: cp._Design, v: np.ndarray) -> np.ndarray:
    """Whiteness indicator of rows v (captured points): lag-1 autocorrelation of the residuals after the
    default detector's first selection step (shared trend + best step or hinge, `_Design.scan`)."""
    return d.scan(v, d.interp(v), d.trend_g, d.trend_r, np.ones(d.Z.shape[1], bool))[1]


@lru_cache(maxsize=64)
def _calibrate(u_bytes: bytes, cfg: cp.EventConfig) -> cp.PenaltyTable:
    sc = _schedule(u_bytes, cfg)
    d = sc.d
    rng = np.random.default_rng(cfg.null_seed)
    n0, n1 = int(cfg.n_null * cp.NULL_MIX[0]), int(cfg.n_null * cp.NULL_MIX[1])
    phis = np.concatenate([np.zeros(n0), np.ones(n1), rng.uniform(0, 1, cfg.n_null - n0 - n1)])
    v = cp._ar1(phis, d.m, rng)
    f, *_ = sc.best_split(d.interp(v))
    rho = _rho(d, v)
    k = min(cfg.null_neighbors, len(f))
    pen = [np.quantile(f[np.argsort(np.abs(rho - r0), kind="stable")[:k]], cfg.null_quantile) for r0 in cp.RHO_GRID]
    pen = np.maximum.accumulate(np.asarray(pen))
    qs = {"q50": 0.5, "q90": 0.9, "q95": 0.95, "q99": 0.99}
    null_f = {name: {k_: round(float(np.quantile(f[sel], q)), 4) for k_, q in qs.items()}
              for name, sel in (("white", phis == 0), ("random_walk", phis == 1))}
    return cp.PenaltyTable(tuple(float(r) for r in cp.RHO_GRID), tuple(round(float(p), 6) for p in pen), d.m, d.n,
                           null_f)


def calibrate_penalty(steps: Sequence[int], config: cp.EventConfig | None = None) -> cp.PenaltyTable:
    """Calibrated penalty(rho) of this backend for a capture schedule (F units)."""
    cfg = config or cp.EventConfig(method="ruptures")
    s = cp._prepare(steps, np.arange(len(steps), dtype=float), cfg)
    if s is None:
        raise ValueError("schedule too short to calibrate")
    return _calibrate(s.u.tobytes(), cfg)


def _refine(d: cp._Design, s: cp._Series, y: np.ndarray, a: int, b: int, kinds) -> tuple[int, str, float]:
    """Position, kind and coefficient of the best single step / hinge on [a, b) with one shared trend.

    Pelt's per-segment trends localize kinks poorly (+-3 grid points), so the break that Pelt found in
    (a, b) is re-placed by the shared-trend fit on its two neighbouring segments."""
    ms = d.min_size
    best = None
    for tau in range(a + ms, b - ms + 1):
        u_c = 0.5 * (d.g[tau - 1] + d.g[tau])
        for kind in kinds:
            z = (cp._step if kind == "mean_shift" else cp._hinge)(s.u, np.array([u_c]))
            zg = d.interp(z.T)[0]
            X = np.column_stack([d.trend_g[a:b], zg[a:b]])
            beta, *_ = np.linalg.lstsq(X, y[a:b], rcond=None)
            r = y[a:b] - X @ beta
            rss = float(r @ r)
            if best is None or rss < best[0]:
                best = (rss, tau, kind, float(beta[-1]))
    return best[1], best[2], best[3]


def series_event_rows(steps: Sequence[int], values: Sequence[float], *, metric: str, layer: int, module: str,
                      max_steps: int | None = None, provenance: Mapping[str, Any] | None = None,
                      config: cp.EventConfig | None = None,
                      baseline: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Single-metric event rows (EVENTS_SCHEMA dicts) of one series with the ruptures backend."""
    cfg = config or cp.EventConfig(method="ruptures")
    s = cp._prepare(steps, values, cfg)
    if s is None:
        return []
    d = cp._design(s.u.tobytes(), cfg)
    if d.n < 2 * d.min_size + 1:
        return []
    sc = _schedule(s.u.tobytes(), cfg)
    table, baseline_id = cp._table_for(s, cfg, baseline)
    y = d.interp(s.v)
    f1, _, sig2, _, _ = sc.best_split(y[None])
    rho, sig2 = float(_rho(d, s.v[None])[0]), float(sig2[0])
    pen_f = table.at(rho, cfg.penalty_scale)
    if not f1[0] > pen_f:
        return []
    pen_cost = pen_f * sig2
    cost = _SegTrendCost(sc)
    bkps = rpt.Pelt(custom_cost=cost, min_size=sc.min_size, jump=JUMP).fit(y).predict(pen=pen_cost)
    bounds = [0] + list(bkps)
    cands = []
    for i in range(1, len(bounds) - 1):
        a, tau, b = bounds[i - 1], bounds[i], bounds[i + 1]
        gain = cost.error(a, b) - cost.error(a, tau) - cost.error(tau, b)
        cands.append((gain, a, tau, b))
    cands = sorted(cands, reverse=True)[: cfg.max_events]
    prov = cp._prov(provenance)
    horizon = float(max_steps) if max_steps and max_steps > 0 else float(s.steps[-1])
    sigma = max(math.sqrt(sig2), cp.SIGMA_FLOOR)
    rows = []
    for order, (gain, a, pelt_tau, b) in sorted(enumerate(cands), key=lambda t: t[1][2]):
        tau, kind, coef = _refine(d, s, y, a, b, cfg.kinds)
        u_c = 0.5 * (d.g[tau - 1] + d.g[tau])
        step = cp._snap(s.steps, u_c, "after")
        diag = {"detector": DETECTOR, "regressor": "step" if kind == "mean_shift" else "hinge",
                "grid_index": tau, "pelt_index": pelt_tau, "segment": [a, b], "log10_step": round(float(u_c), 6),
                "F": round(gain / sig2, 4), "rho": round(rho, 4), "sigma": round(sigma, 6),
                "coef": round(coef, 6), "order": order, "n_bkps": len(bkps) - 1, "n_raw": d.m}
        rows.append({
            "event_id": f"{prov['run_id']}:{metric}:{int(layer)}:{module}:{kind}:{step}",
            **{k: prov[k] for k in ("run_id", "seed")}, "metric": metric, "layer": int(layer), "module": module,
            "kind": kind, "step": step, "step_start": cp._snap(s.steps, float(d.g[tau - 1]), "before"),
            "step_end": cp._snap(s.steps, float(d.g[tau]), "after"), "step_frac": step / horizon,
            "magnitude": coef / sigma, "score": gain / pen_cost, "penalty": pen_f,
            "n_points": d.n, "n_members": 1, "members": "[]", "diagnostics": json.dumps(diag, sort_keys=True),
            "baseline_id": baseline_id,
            **{k: prov[k] for k in ("dataset_slice_hash", "config_hash", "package_version")},
        })
    return cp._unique(rows)


def _main(argv: Sequence[str]) -> None:
    """Print null false-positive rates of both methods on log-cadence schedules (as in changepoints)."""
    from squigglray.training.cadence import log_steps  # (imports torch via squigglray.training)

    for max_steps in [int(a) for a in argv] or [200, 300, 500, 800, 1500, 3000]:
        steps = log_steps(max_steps, 64, 25)
        for method in cp.METHODS:
            rates = cp.null_false_positive_rate(steps, cp.EventConfig(method=method), n_series=500)
            print(f"max_steps={max_steps} n_raw={len(steps)} {method}: {rates}", flush=True)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
