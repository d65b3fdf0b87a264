"""H3, "not reducible to loss alone", as a predictive test (seed 000's success criterion).

Question: does the geometry of a run predict its probe answer-accuracy increments better than
the loss (and the schedule, and time) already do, on a seed the model never saw?

- **Rows**: one per probe interval of a run (consecutive probe evaluations, the logging cadence).
  Target y: the increment of answer accuracy over the interval (jumps are its large values).
- **Loss-only features** (`interval_rows`): log loss at the interval start, its change over the
  interval and that change squared, aligned time, and one indicator per schedule change that falls
  in the interval (warmup end, curriculum switch, cadence change).
- **Geometry features**: per metric, the change over the interval of the metric's z-scored value
  averaged over its sites (layers x matrices, or hidden layers).
- **Statistic**: ``gain`` = 1 - MSE(loss + geometry) / MSE(loss only), both ridge regressions
  fitted leave-one-seed-out (each seed predicted by a model of the other seeds), so a geometry
  feature helps only if what it says about jumps holds across seeds.
- **Null**: geometry carries nothing about y beyond the loss features. Per run, the geometry
  features are split into what the loss features explain (least squares within the run) and a
  residual. A null draw gives each run the residual of *another* run (runs of one config are
  exchangeable; it is independent of this run's y by construction), rotated in time by a random
  lag and made orthogonal to this run's loss features again, as the observed residual is; the
  run keeps its own loss-explained part. p = (1 + #null >= observed) / (1 + n_perm).
  Chosen by calibration (bench/calibration.py, `simulate.interval_experiment`, including geometry
  that follows the loss non-linearly and jumps at the curriculum switch): rotating a run's own
  residual rejected 6-7% at 0.05 with uniform or concentrated jump timing; another run's residual
  holds the level.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

RIDGE = 20.0  # strong shrinkage: ~8 geometry features on ~90 rows (calibration: power 0.61 vs 0.46 at 1.0, same false-positive rate)
MIN_ROWS = 6  # per run


def _finite_series(scalars: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    steps = np.asarray(scalars.column("step").to_numpy(zero_copy_only=False), dtype=np.float64)
    vals = np.asarray(scalars.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)
    ok = np.isfinite(steps) & np.isfinite(vals)
    order = np.argsort(steps[ok], kind="stable")
    s, v = steps[ok][order], vals[ok][order]
    keep = np.ones(len(s), dtype=bool)
    keep[:-1] = s[1:] != s[:-1]
    return s[keep], v[keep]


def geometry_by_metric(geometry: pa.Table) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metric -> (capture steps, mean over the metric's sites of the per-site z-scored value)."""
    cols = {c: geometry.column(c).to_numpy(zero_copy_only=False) for c in ("step", "value")}
    keys = {c: np.asarray(geometry.column(c).to_pylist(), dtype=object) for c in ("metric", "layer", "module")}
    out = {}
    for metric in sorted(set(keys["metric"].tolist())):
        rows = keys["metric"] == metric
        steps = np.unique(cols["step"][rows])
        total, count = np.zeros(len(steps)), np.zeros(len(steps))
        site = np.asarray([f"{la}|{mo}" for la, mo in zip(keys["layer"][rows], keys["module"][rows])])
        for s in np.unique(site):
            r = site == s
            v = np.asarray(cols["value"][rows][r], dtype=np.float64)
            sd = np.std(v)
            if len(v) < 3 or not sd > 0:
                continue
            idx = np.searchsorted(steps, cols["step"][rows][r])
            total[idx] += (v - np.mean(v)) / sd
            count[idx] += 1
        ok = count > 0
        if ok.sum() >= 3:
            out[metric] = (steps[ok].astype(np.float64), total[ok] / count[ok])
    return out


def interval_rows(scalars: pa.Table, geometry: pa.Table, marks: Sequence[int], max_steps: int,
                  column: str = "probe_b_answer_acc", metrics: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """One run's rows (module doc): {'base', 'geometry', 'y', 'steps'}; 'metrics' names the geometry columns."""
    steps, acc = _finite_series(scalars, column)
    loss_col = "loss_window_mean" if "loss_window_mean" in scalars.column_names else "loss"
    ls, lv = _finite_series(scalars, loss_col)
    if len(steps) < 2 or len(ls) < 2:
        return {"base": np.zeros((0, 4 + len(marks))), "geometry": np.zeros((0, 0)), "y": np.zeros(0),
                "steps": np.zeros(0), "metrics": []}
    log_loss = np.interp(steps, ls, np.log(np.maximum(lv, 1e-12)))
    dl = np.diff(log_loss)
    base = [log_loss[:-1], dl, dl ** 2, np.log1p(steps[1:]) / np.log1p(max_steps)]
    base += [((steps[:-1] < m) & (steps[1:] >= m)).astype(np.float64) for m in marks]
    by_metric = geometry_by_metric(geometry)
    names = list(metrics) if metrics is not None else sorted(by_metric)
    geo = []
    for name in names:
        if name in by_metric:
            gs, gv = by_metric[name]
            at = np.interp(steps, gs, gv)
            at[steps < gs[0]] = gv[0]  # before the metric's first capture: no change
            geo.append(np.diff(at))
        else:
            geo.append(np.zeros(len(steps) - 1))
    return {"base": np.column_stack(base), "geometry": np.column_stack(geo) if geo else np.zeros((len(dl), 0)),
            "y": np.diff(acc), "steps": steps[1:], "metrics": names}


# --------------------------------------------------------------------------- the test


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = train.mean(axis=0), train.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return (train - mu) / sd, (test - mu) / sd


def _ridge_predict(x_train, y_train, x_test, ridge: float) -> np.ndarray:
    xt, xs = _standardize(x_train, x_test)
    ym = y_train.mean()
    w = np.linalg.solve(xt.T @ xt + ridge * np.eye(xt.shape[1]), xt.T @ (y_train - ym))
    return ym + xs @ w


def loso_mse(xs: list[np.ndarray], ys: list[np.ndarray], ridge: float = RIDGE) -> float:
    """Mean squared error of leave-one-seed-out ridge predictions, pooled over all rows."""
    sse, n = 0.0, 0
    for held in range(len(xs)):
        xt = np.concatenate([x for i, x in enumerate(xs) if i != held])
        yt = np.concatenate([y for i, y in enumerate(ys) if i != held])
        pred = _ridge_predict(xt, yt, xs[held], ridge)
        sse += float(np.sum((ys[held] - pred) ** 2))
        n += len(ys[held])
    return sse / n


def _gain(base, geo, ys, ridge) -> float:
    mse_base = loso_mse(base, ys, ridge)
    mse_full = loso_mse([np.column_stack([b, g]) for b, g in zip(base, geo)], ys, ridge)
    return 1.0 - mse_full / mse_base if mse_base > 0 else 0.0


def beyond_loss_test(runs: Sequence[Mapping[str, np.ndarray]], n_perm: int = 500, seed: int = 0,
                     ridge: float = RIDGE) -> dict:
    """Leave-one-seed-out gain of geometry over loss-only features, with its rotation p-value.

    ``runs``: per run {'base': (n, p), 'geometry': (n, q), 'y': (n,)} (`interval_rows`). Runs with
    fewer than MIN_ROWS rows are left out; fewer than 2 runs left, or no geometry column: untestable
    (p_value None). A donor residual of another length is cropped or repeated cyclically.
    """
    runs = [r for r in runs if len(r["y"]) >= MIN_ROWS]
    out = {"test": "beyond_loss", "statistic": "loso_gain", "n_runs": len(runs),
           "n_rows": int(sum(len(r["y"]) for r in runs)), "n_perm": int(n_perm), "ridge": ridge}
    if len(runs) < 2 or runs[0]["geometry"].shape[1] == 0:
        return out | {"gain": None, "mse_loss_only": None, "mse_with_geometry": None, "null_mean": None,
                      "p_value": None}
    base = [np.asarray(r["base"], dtype=np.float64) for r in runs]
    geo = [np.asarray(r["geometry"], dtype=np.float64) for r in runs]
    ys = [np.asarray(r["y"], dtype=np.float64) for r in runs]
    mse_base = loso_mse(base, ys, ridge)
    observed = _gain(base, geo, ys, ridge)
    fitted, resid, orth = [], [], []
    for b, g in zip(base, geo):
        design = np.column_stack([np.ones(len(b)), b])
        hat = design @ np.linalg.pinv(design)
        fitted.append(hat @ g)
        resid.append(g - hat @ g)
        orth.append(np.eye(len(b)) - hat)  # a rotated residual is made orthogonal to the loss again
    rng = np.random.default_rng(seed)
    null = np.empty(n_perm)
    for p in range(n_perm):
        donors = [int(rng.choice([k for k in range(len(runs)) if k != r])) for r in range(len(runs))]
        shifted = [f + m @ np.roll(np.resize(resid[d], (len(f), resid[d].shape[1])), int(rng.integers(len(f))), axis=0)
                   for f, m, d in zip(fitted, orth, donors)]
        null[p] = _gain(base, shifted, ys, ridge)
    return out | {"gain": observed, "mse_loss_only": mse_base, "mse_with_geometry": mse_base * (1 - observed),
                  "null_mean": float(np.mean(null)), "null_q95": float(np.quantile(null, 0.95)),
                  "p_value": (1 + int(np.sum(null >= observed))) / (1 + n_perm)}
