"""Lemma instances for the inequality verifier, in its worker: a cited lemma of `problems.LEMMAS`
with its arguments -> the inequality ``L >= R`` it states and its side conditions.

`match_lemma` asks the proof checker's matcher (`proof_check._match`, rule 3 of its rule book)
whether a step is a positive constant multiple of the instance, for `verifier.check_step`.
"""

from __future__ import annotations

import sympy as sp

from squigglray.ineq.claim import Claim, ExpressionError, is_zero, parse, spec

__all__ = ["lemma_instance", "match_lemma"]


def lemma_instance(lemma: str, args: dict, syms) -> tuple[sp.Expr, sp.Expr, list, str]:
    """(L, R, side conditions [[expr, rel]], text) with L >= R the lemma's instance."""
    def exprs(key, required=True):
        raw = args.get(key)
        if raw is None and not required:
            return None, []
        if not isinstance(raw, (list, tuple)) or not raw:
            raise ExpressionError(f"{lemma} needs a non-empty argument list {key!r}")
        return [parse(str(x), syms, f"{lemma} argument") for x in raw], [str(x) for x in raw]

    if lemma in ("am_gm", "weighted_am_gm"):
        xs, raw = exprs("terms")
        n = len(xs)
        if lemma == "am_gm":
            ws = [sp.Rational(1, n)] * n
        else:
            ws, _ = exprs("weights")
            if len(ws) != n or not all(w.is_number and w.is_positive for w in ws) or not is_zero(sp.Add(*ws) - 1):
                raise ExpressionError(f"weighted_am_gm weights {args.get('weights')} are not {n} positive "
                                      f"numbers summing to 1")
        L = sp.Add(*[w * x for w, x in zip(ws, xs)])
        R = sp.Mul(*xs) ** ws[0] if lemma == "am_gm" else sp.Mul(*[x**w for w, x in zip(ws, xs)])
        return L, R, [[x, ">="] for x in raw], f"{lemma}({', '.join(raw)})"
    if lemma in ("cauchy_schwarz", "titu"):
        (xs, rx), (ys, ry) = exprs("xs"), exprs("ys")
        if len(xs) != len(ys):
            raise ExpressionError(f"{lemma} needs as many xs as ys, got {len(xs)} and {len(ys)}")
        text = f"{lemma}({', '.join(rx)}; {', '.join(ry)})"
        if lemma == "cauchy_schwarz":
            L = sp.Add(*[x**2 for x in xs]) * sp.Add(*[y**2 for y in ys])
            return L, sp.Add(*[x * y for x, y in zip(xs, ys)]) ** 2, [], text
        L = sp.Add(*[x**2 / y for x, y in zip(xs, ys)])
        return L, sp.Add(*xs) ** 2 / sp.Add(*ys), [[y, ">"] for y in ry], text
    if lemma == "square_nonneg":
        ps, rp = exprs("squares")
        cs, rc = exprs("coeffs", required=False)
        cs, rc = (cs, rc) if cs else ([sp.Integer(1)] * len(ps), ["1"] * len(ps))
        if len(cs) != len(ps):
            raise ExpressionError(f"square_nonneg needs one coefficient per square, got {len(cs)} for {len(ps)}")
        side = [[r, ">="] for r, cc in zip(rc, cs) if not (cc.is_number and cc.is_nonnegative)]
        if any(cc.is_number and cc.is_negative for cc in cs):
            raise ExpressionError(f"square_nonneg coefficients {rc} include a negative number")
        return sp.Add(*[cc * p**2 for cc, p in zip(cs, ps)]), sp.Integer(0), side, \
            f"square_nonneg({', '.join(rp)}; {', '.join(rc)})"

    def numbers(key, count):
        vals, raw = exprs(key)
        if len(vals) != count or not all(v.is_number and v.is_real for v in vals):
            raise ExpressionError(f"{lemma} needs {count} real number(s) as {key!r}, got {args.get(key)}")
        return vals, raw

    def nonneg(pairs):  # side conditions x >= 0, except for numbers that are evidently so
        return [[r, ">="] for x, r in pairs if not (x.is_number and x.is_nonnegative)]

    def ordered(xs, rx, ys, ry):  # similarly ordered: (x_i - x_j)*(y_i - y_j) >= 0 for all i < j
        n = len(xs)
        return [[f"(({rx[i]}) - ({rx[j]}))*(({ry[i]}) - ({ry[j]}))", ">="] for i in range(n) for j in range(i + 1, n)
                if not (((xs[i] - xs[j]) * (ys[i] - ys[j])).is_number
                        and ((xs[i] - xs[j]) * (ys[i] - ys[j])).is_nonnegative)]

    if lemma == "schur":
        xs, raw = exprs("terms")
        (t,), (rt,) = numbers("t", 1)
        if len(xs) != 3 or not t.is_positive:
            raise ExpressionError(f"schur needs three terms and a number t > 0, got {args.get('terms')} and {rt}")
        a, b, c = xs
        L = a**t * (a - b) * (a - c) + b**t * (b - a) * (b - c) + c**t * (c - a) * (c - b)
        return L, sp.Integer(0), nonneg(zip(xs, raw)), f"schur({', '.join(raw)}; {rt})"
    if lemma == "power_mean":
        xs, raw = exprs("terms")
        (p, q), rpq = numbers("exps", 2)
        if not p > q:
            raise ExpressionError(f"power_mean needs exps p > q, got {rpq}")
        n = len(xs)

        def mean(r):
            if r == 0:
                return sp.Mul(*xs) ** sp.Rational(1, n)
            return (sp.Add(*[x**r for x in xs]) / n) ** (1 / r)

        if (p, q) == (2, 1):
            side = []  # QM >= |AM| >= AM over the reals
        elif q <= 0:
            side = [[r, ">"] for x, r in zip(xs, raw) if not (x.is_number and x.is_positive)]
        else:
            side = nonneg(zip(xs, raw))
        return mean(p), mean(q), side, f"power_mean({', '.join(raw)}; {', '.join(rpq)})"
    if lemma in ("chebyshev", "rearrangement", "holder"):
        (xs, rx), (ys, ry) = exprs("xs"), exprs("ys")
        zs, rz = exprs("zs") if lemma != "chebyshev" else (None, None)
        if len({len(xs), len(ys), len(zs if zs is not None else xs)}) != 1 or len(xs) < 2 and lemma != "holder":
            raise ExpressionError(f"{lemma} needs sequences of one length (at least 2), got "
                                  f"{[len(v) for v in (xs, ys, zs) if v is not None]}")
        text = f"{lemma}({'; '.join(', '.join(r) for r in (rx, ry, rz) if r is not None)})"
        if lemma == "chebyshev":
            n = len(xs)
            return (sp.Add(*[x * y for x, y in zip(xs, ys)]), sp.Add(*xs) * sp.Add(*ys) / n, ordered(xs, rx, ys, ry),
                    text)
        if lemma == "rearrangement":
            if sorted(map(sp.srepr, ys)) != sorted(map(sp.srepr, zs)):
                raise ExpressionError(f"rearrangement: zs {rz} is not a permutation of ys {ry}")
            return (sp.Add(*[x * y for x, y in zip(xs, ys)]), sp.Add(*[x * z for x, z in zip(xs, zs)]),
                    ordered(xs, rx, ys, ry), text)
        L = sp.Add(*[x**3 for x in xs]) * sp.Add(*[y**3 for y in ys]) * sp.Add(*[z**3 for z in zs])
        return L, sp.Add(*[x * y * z for x, y, z in zip(xs, ys, zs)]) ** 3, \
            nonneg(list(zip(xs, rx)) + list(zip(ys, ry)) + list(zip(zs, rz))), text
    raise ExpressionError(f"lemma {lemma!r} has no instance pattern")


def match_lemma(prev: str, rel: str, nxt: str, lemma: str, args: dict, variables: list, domain: str) -> dict:
    """Worker: is ``prev rel nxt`` a positive constant multiple of the lemma's instance? The proof
    checker's matcher (`proof_check._match`, rule 3), for `check_step`.
    Returns {"ok", "reason", "side": [[expr, rel], ...]}."""
    from squigglray.ineq import proof_check  # it imports this module

    c = Claim(spec(prev, rel, nxt, variables, domain, None))
    return proof_check._match(c, rel, c.slack if rel in (">=", "<=") else c.lhs - c.rhs, lemma, args or {})

