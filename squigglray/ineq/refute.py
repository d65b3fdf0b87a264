"""Numeric refutation of a claim: sampling over its domain, in the verifier's worker.

Points: log-uniform magnitudes, a grid, the boundary, near the equality case, and a short local
search from the worst points; on a constraint surface via a rescaling (homogeneous constraint
part) or the constraint solved for a variable it is linear or quadratic in. Any violation in floats
is re-checked at ~30 digits (`claim.check_point`) so float noise never refutes a true claim.
`undefined_in_chain` uses the same points to find a chain expression that is not real where the
claim is.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp

from squigglray.ineq.claim import Claim, ExpressionError, check_point, fmt, in_domain, parse, short, value

__all__ = ["refute_by_sampling", "solved_maps", "undefined_in_chain"]

_SCREEN = 1e-9  # relative violation in floats that makes a point worth re-checking


class _Map:
    """Parameters -> a point of the claim's surface (identity without a constraint)."""

    def __init__(self, c: Claim, params: list, coords: list, exact: bool, how: str):
        self.params, self.coords, self.exact, self.how = params, coords, exact, how
        self._f = sp.lambdify(params, coords, "numpy")

    def points(self, P: np.ndarray) -> np.ndarray:
        cols = self._f(*P.T)
        return np.stack([np.broadcast_to(np.asarray(x, dtype=float), P.shape[:1]) for x in cols], axis=1)

    def exact_point(self, c: Claim, row) -> dict:
        vals = {p: sp.Rational(float(x)) for p, x in zip(self.params, row)}
        if self.exact:
            return {v: vals[v] for v in c.order}
        return {v: sp.N(e.xreplace(vals), 50) for v, e in zip(c.order, self.coords)}


def _homogeneous_degree(g: sp.Expr, order: list) -> sp.Rational | None:
    """Degree d with g(t x) = t**d g(x), estimated numerically (exactness is re-checked later)."""
    rng = np.random.default_rng(1)
    ds = []
    for _ in range(3):
        pt = {v: sp.Rational(int(rng.integers(1, 50)), int(rng.integers(1, 50))) for v in order}
        g1, g2 = g.evalf(30, subs=pt), g.evalf(30, subs={v: 2 * x for v, x in pt.items()})
        if not (g1.is_real and g2.is_real) or g1 == 0 or g2 / g1 <= 0:
            return None
        ds.append(math.log2(float(g2 / g1)))
    d = sp.Rational(round(ds[0] * 6), 6)
    return d if d != 0 and all(abs(x - float(d)) < 1e-9 for x in ds) else None


def _surface_maps(c: Claim) -> list[_Map]:
    if c.cons is None:
        return [_Map(c, c.order, c.order, True, "identity")]
    maps = []
    const = sp.Add(*[a for a in sp.Add.make_args(c.cons) if not a.free_symbols])
    g = c.cons - const
    if const != 0:
        d = _homogeneous_degree(g, c.order)
        if d is not None:
            scale = (-const / g) ** (1 / d)
            maps.append(_Map(c, c.order, [v * scale for v in c.order], False, "rescale"))
    return maps + solved_maps(c)


def solved_maps(c: Claim) -> list[_Map]:
    """Solve the constraint for a variable it is linear (else quadratic) in: one map per branch."""
    by_degree = []
    for v in reversed(c.order):
        try:
            deg = sp.Poly(c.cons, v).degree()
        except sp.PolynomialError:
            continue
        if deg in (1, 2):
            by_degree.append((deg, v))
    if not by_degree:
        return []
    v = min(by_degree, key=lambda x: x[0])[1]
    others = [o for o in c.order if o != v]
    return [_Map(c, others, [sol if o == v else o for o in c.order], False, f"solved for {v}")
            for sol in sp.solve(c.cons, v) if v not in sol.free_symbols]


def _param_points(domain: str, k: int, n: int, rng, near: np.ndarray | None) -> np.ndarray:
    """Grid, log-uniform (1e-3..1e3), moderate, boundary and near-equality points."""
    if k == 0:
        return np.zeros((1, 0))
    m = max(n, 30)
    blocks = [np.ones((1, k)), np.full((1, k), 2.0)]
    if k <= 4:
        blocks.append(np.array(np.meshgrid(*[[0.5, 1.0, 2.0]] * k)).reshape(k, -1).T)
    blocks.append(10 ** rng.uniform(-3, 3, (m // 3, k)))
    blocks.append(rng.uniform(0.05, 4, (m // 3, k)))
    edge = {"positive": [1e-6, 1e-3], "nonnegative": [0.0, 1e-6], "real": [0.0, 1e-6, -1e-6]}[domain]
    bd = rng.uniform(0.05, 4, (m // 6, k))
    mask = rng.random(bd.shape) < 0.4
    bd[mask] = rng.choice(edge, int(mask.sum()))
    blocks.append(bd)
    if near is not None:
        scales = rng.choice([1e-4, 1e-2, 0.1, 0.5], (m // 6, 1))
        blocks += [near[None, :], near * (1 + rng.normal(0, 1, (m // 6, k)) * scales)
                   + rng.normal(0, 1, (m // 6, k)) * scales * 0.1]
    P = np.vstack(blocks)
    if domain == "real":
        return np.vstack([P, P * rng.choice([-1.0, 1.0], P.shape)])
    return np.abs(P) if domain == "nonnegative" else np.where(P > 0, P, 1e-6)


def _scores(c: Claim, smap: _Map, fns, P: np.ndarray) -> np.ndarray:
    """Relative slack per parameter row (lower is worse for the claim; inf where undefined)."""
    with np.errstate(all="ignore"):
        X = smap.points(P)
        ok = np.isfinite(X).all(axis=1)
        ok &= (X > 0).all(axis=1) if c.domain == "positive" else (X >= 0).all(axis=1) if c.domain == "nonnegative" \
            else True
        L, R = (np.broadcast_to(np.asarray(f(*X.T), dtype=float), ok.shape) for f in fns)
        s = R - L if c.rel in ("<=", "<") else L - R
        rel = s / (np.abs(L) + np.abs(R) + 1e-300)
        if c.rel == "=":
            rel = -np.abs(rel)
    return np.where(ok & np.isfinite(rel), rel, np.inf)


def _local_search(c: Claim, smap: _Map, fns, P, score, rng, keep: int = 4, width: int = 24):
    """Shrinking random perturbations of the worst rows: finds narrow counterexample regions."""
    best = P[np.argsort(score)[:keep]]
    best_s = np.sort(score)[:keep]
    for sigma in (0.5, 0.2, 0.05, 0.01, 0.002):
        Q = np.repeat(best, width, axis=0)
        Q = Q * np.exp(rng.normal(0, sigma, Q.shape))
        if c.domain == "real":
            Q = Q + rng.normal(0, sigma, Q.shape) * 0.1
        qs = _scores(c, smap, fns, Q)
        allP, allS = np.vstack([best, Q]), np.concatenate([best_s, qs])
        idx = np.argsort(allS)[:keep]
        best, best_s = allP[idx], allS[idx]
    return best, best_s


def _near_vector(c: Claim, smap: _Map, near: dict | None) -> np.ndarray | None:
    if not near:
        return None
    try:
        vals = {c.syms[k]: float(parse(str(v), {}, "near value").evalf(20)) for k, v in near.items() if k in c.syms}
        return np.array([vals[p] for p in smap.params])
    except (ExpressionError, KeyError, TypeError, ValueError):
        return None


def _sampled(c: Claim, samples: int, seed: int, near: dict | None):
    """(map, parameter rows, their scores) per surface map; scores are inf where undefined."""
    rng = np.random.default_rng(seed)
    fns = [sp.lambdify(c.order, e, "numpy") for e in (c.lhs, c.rhs)]
    for smap in _surface_maps(c):
        P = _param_points(c.domain, len(smap.params), samples, rng, _near_vector(c, smap, near))
        score = _scores(c, smap, fns, P)
        if np.isfinite(score).any() and c.rel != "=":
            Q, qs = _local_search(c, smap, fns, P, score, rng)
            P, score = np.vstack([P, Q]), np.concatenate([score, qs])
        yield smap, P, score


def refute_by_sampling(spec: dict, samples: int = 300, seed: int = 0, near: dict | None = None) -> dict:
    """Worker: {"cex": a counterexample {"point", "reason"} confirmed at 30 digits or None,
    "defined": how many sampled points had both sides defined (None: the surface was not sampled)}."""
    c = Claim(spec)
    defined = None
    for smap, P, score in _sampled(c, samples, seed, near):
        defined = (defined or 0) + int(np.isfinite(score).sum())
        limit = _SCREEN if c.strict else -_SCREEN
        for i in [i for i in np.argsort(score)[:12] if score[i] < limit]:
            cex = check_point(c, smap.exact_point(c, P[i]), smap.exact)
            if cex:
                return {"cex": cex, "defined": defined}
    return {"cex": None, "defined": defined}




def undefined_in_chain(spec: dict, exprs: list[str], samples: int = 150, seed: int = 0,
                        near: dict | None = None) -> dict | None:
    """Worker: the first chain expression that is not a finite real number at a sampled point of
    the domain where the claim's sides are: {"index", "point", "reason"}, or None. (A step proved
    only where its expressions are defined must not shrink the claim's domain.)"""
    c = Claim(spec)
    parsed = [parse(e, c.syms, f"chain expression {i}") for i, e in enumerate(exprs)]
    fns = [sp.lambdify(c.order, e, "numpy") for e in parsed]
    for smap, P, score in _sampled(c, samples, seed, near):
        P = P[np.isfinite(score)]
        with np.errstate(all="ignore"):
            X = smap.points(P)
            bad = [~np.isfinite(np.broadcast_to(np.asarray(f(*X.T), dtype=float), X.shape[:1])) for f in fns]
        for i, rows in enumerate(bad):
            for r in np.flatnonzero(rows)[:5]:
                point = smap.exact_point(c, P[r])
                if not all(v.is_real and in_domain(v, c.domain) for v in point.values()) \
                        or value(c.lhs, point) is None or value(c.rhs, point) is None \
                        or value(parsed[i], point) is not None:
                    continue
                at = ", ".join(f"{k} = {fmt(v)}" for k, v in point.items())
                return {"index": i, "point": {str(k): float(v) for k, v in point.items()},
                        "reason": f"{short(exprs[i])} is not a real number at {at}, where the claim is defined"}
    return None

