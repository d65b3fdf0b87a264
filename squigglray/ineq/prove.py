"""Proving a claim, in the verifier's worker: SymPy for exact rewrites and visibly nonnegative
factored forms, then Z3 nonlinear real arithmetic on the negated claim.

Z3 gets the claim through the symbolic core's translation (`squigglray.symbolic.ToZ3`, reals,
``roots=True``: roots and quotients become auxiliary variables, ``r >= 0, r**q == x`` and
``d * y == 1``, so a claim is decided where its terms are defined). Before that, a variable under
q-th roots is replaced by ``t**q`` (positive/nonnegative domains), the slack is put over one
denominator (its sign known, or the claim multiplied by its square), and a homogeneous claim over
positive reals is normalized by fixing one variable to 1. ``unsat`` -> "proved" (with
`check_vacuity`, only once the domain is shown nonempty); a model is re-checked numerically
(`claim.check_point`) before "refuted".
"""

from __future__ import annotations

import math
import time

import sympy as sp

from squigglray.ineq.claim import MAX_OPS, Claim, check_point, fmt, in_domain, is_zero, parse, short
from squigglray.ineq.refute import solved_maps
from squigglray.symbolic import ToZ3, Untranslatable, exact_value, load_z3

__all__ = ["equality_case", "prove", "same_constant"]


def _sympy_equal(c: Claim) -> str | None:
    """Why lhs == rhs holds exactly (on the constraint surface when there is one), or None."""
    d = c.lhs - c.rhs
    if is_zero(d):
        return "SymPy: lhs - rhs simplifies to 0"
    if c.cons is None:
        return None
    num = sp.fraction(sp.cancel(sp.together(d)))[0]
    cnum = sp.fraction(sp.together(c.cons))[0]
    try:
        if sp.reduced(num, [cnum], *c.order)[1] == 0:
            return "SymPy: the numerator of lhs - rhs is a multiple of the constraint"
    except (sp.PolynomialError, sp.GeneratorsNeeded):
        pass
    maps = solved_maps(c)
    if maps and all(is_zero(d.xreplace(dict(zip(c.order, m.coords)))) for m in maps):
        return f"SymPy: lhs - rhs vanishes on the constraint surface ({maps[0].how})"
    return None


def _sympy_sign(c: Claim) -> str | None:
    """Why the slack is >= 0 (> 0 if strict) by SymPy's sign rules on a factored form, or None."""
    if c.cons is not None or sp.count_ops(c.slack) > MAX_OPS:
        return None
    want = "is_positive" if c.strict else "is_nonnegative"
    for form in (lambda e: e, sp.factor, lambda e: sp.factor(sp.cancel(sp.together(e)))):
        try:
            e = form(c.slack)
        except (sp.PolynomialError, ValueError, TypeError):
            continue
        if getattr(e, want):
            return f"SymPy: lhs - rhs = {short(str(e), 80)} is {'positive' if c.strict else 'nonnegative'} " \
                   f"term by term"
    return None


def prove(spec: dict, budget_s: float, check_vacuity: bool = False) -> dict:
    """Worker: {"status", "reason", "method", "point"} from SymPy, then Z3 with the time left."""
    t0 = time.monotonic()
    c = Claim(spec)
    why = _sympy_equal(c) if c.rel == "=" else _sympy_sign(c)
    if why:
        return {"status": "proved", "reason": why, "method": "sympy"}
    return _z3_decide(c, budget_s - (time.monotonic() - t0), check_vacuity)


def same_constant(a: str, b: str) -> bool:
    """Worker: are two constant expressions equal?"""
    return is_zero(parse(a, {}, "answer") - parse(b, {}, "reference answer"))


def equality_case(spec: dict, point: dict[str, str]) -> dict:
    """Worker: lhs == rhs exactly at `point`, which lies in the domain and on the constraint."""
    c = Claim(spec)
    missing = [str(v) for v in c.order if str(v) not in point]
    if missing:
        return {"status": "refuted", "reason": f"the point gives no value for {', '.join(missing)}"}
    vals = {v: parse(point[str(v)], {}, f"value of {v}") for v in c.order}
    fpoint = {str(v): float(x.evalf(20)) for v, x in vals.items()}
    for v, x in vals.items():
        if not (x.is_real and in_domain(x.evalf(50), c.domain)):
            return {"status": "refuted", "reason": f"{v} = {point[str(v)]} is outside the {c.domain} domain",
                    "point": fpoint}
    if c.cons is not None and not is_zero(c.cons.xreplace(vals)):
        return {"status": "refuted", "reason": f"the point is not on the constraint {c.cons} = 0", "point": fpoint}
    if not is_zero((c.lhs - c.rhs).xreplace(vals)):
        lhs, rhs = (e.xreplace(vals).evalf(15) for e in (c.lhs, c.rhs))
        return {"status": "refuted", "reason": f"lhs = {fmt(lhs)} but rhs = {fmt(rhs)} at the point", "point": fpoint}
    return {"status": "proved", "reason": "lhs == rhs exactly at the point"}


# ---- Z3 ----------------------------------------------------------------------------------------------
def _root_substitution(c: Claim) -> dict:
    """v -> t**q when v appears under q-th roots (non-real domains would need v >= 0 anyway)."""
    if c.domain == "real":
        return {}
    exprs = [c.slack] + ([c.cons] if c.cons is not None else [])
    sub = {}
    for v in c.order:
        qs = [int(p.exp.q) for e in exprs for p in e.atoms(sp.Pow) if p.base == v and p.exp.is_Rational]
        q = math.lcm(*qs) if qs else 1
        if 1 < q <= 12:
            sub[v] = sp.Symbol(f"{v.name}_root{q}", **v.assumptions0) ** q
    return sub


def _z3_goal(c: Claim, sub: dict):
    """(G, D, how): the claim holds iff G >= 0 (> 0 strict, == 0 for '=') wherever D != 0."""
    s = c.slack.xreplace(sub)
    n, d = sp.fraction(sp.cancel(sp.together(s)))
    if d.is_positive or d == 1:
        return n, None
    if d.is_negative:
        return -n, None
    return n * d, d


def _z3_decide(c: Claim, budget_s: float, check_vacuity: bool = False) -> dict:
    """Z3 on the negated claim. `check_vacuity`: before accepting unsat, make sure the domain
    (with constraint and definitions) is nonempty, for when sampling could not show it."""
    z3 = load_z3()
    if z3 is None:
        return {"status": "unknown", "reason": "z3-solver is not installed", "method": "z3"}
    t0 = time.monotonic()
    try:
        base, negated, tr, sub, note = _z3_problem(c)
    except Untranslatable as e:
        return {"status": "unknown", "reason": f"no proof: {e}", "method": "z3"}
    ms = max(50, int(budget_s * 1000))
    solver = _z3_solver(z3, base + [negated], ms)
    result = solver.check()
    if result == z3.unsat:
        if check_vacuity:
            left = max(50, ms - int((time.monotonic() - t0) * 1000))
            nonempty = _z3_solver(z3, base, left).check()
            if nonempty != z3.sat:
                why = "the domain is empty" if nonempty == z3.unsat else "could not show the domain is nonempty"
                return {"status": "unknown", "reason": f"Z3: the negated claim is unsatisfiable, but {why}",
                        "method": "z3"}
        return {"status": "proved", "reason": f"Z3: the negated claim is unsatisfiable{note}", "method": "z3"}
    if result == z3.sat:
        point, exact = _z3_point(z3, solver.model(), tr, sub, c)
        cex = check_point(c, point, exact) if point else None
        if cex:
            return {"status": "refuted", "reason": f"Z3 model {cex['reason']}", "method": "z3", "point": cex["point"]}
        return {"status": "unknown", "reason": "Z3 found a model that does not check numerically", "method": "z3"}
    return {"status": "unknown", "reason": f"Z3 gave up after {ms / 1000:g} s: {solver.reason_unknown()}",
            "method": "z3"}


def _z3_solver(z3, assertions: list, timeout_ms: int):
    solver = z3.SolverFor("QF_NRA")
    solver.set("timeout", timeout_ms)
    solver.add(*assertions)
    return solver


def _z3_problem(c: Claim):
    """(base assertions: domain, constraint, definitions; the negated claim; translator; root
    substitution; a note on normalization)."""
    sub = _root_substitution(c)
    goal, den = _z3_goal(c, sub)
    cons = c.cons.xreplace(sub) if c.cons is not None else None
    symbols = set().union(*(e.free_symbols for e in (goal, cons, *sub.values()) if e is not None))
    symbols |= {v for v in c.order if v not in sub}
    tr = ToZ3(sorted(symbols, key=str), roots=True)  # reals; roots as auxiliary variables
    base = [zv > 0 if s.is_positive else zv >= 0 for s, zv in tr.vars.items() if s.is_nonnegative]
    G = tr(goal)
    negated = G != 0 if c.rel == "=" else G <= 0 if c.strict else G < 0
    if den is not None:
        base.append(tr(den) != 0)
    if cons is not None:
        base.append(tr(cons) == 0)
    note = ""
    if cons is None and c.domain == "positive" and len(tr.vars) > 1:
        try:
            homogeneous = sp.Poly(goal, *tr.vars).is_homogeneous
        except sp.PolynomialError:
            homogeneous = False
        if homogeneous:  # the sign is scale-invariant: fix one variable
            first = next(iter(tr.vars))
            base.append(tr.vars[first] == 1)
            note = f" (homogeneous: normalized {first} = 1)"
    return base + tr.side, negated, tr, sub, note


def _z3_point(z3, model, tr: ToZ3, sub: dict, c: Claim) -> tuple[dict, bool]:
    exact, vals = True, {}
    for s, zv in tr.vars.items():
        val = model.eval(zv, model_completion=True)
        r = exact_value(val)
        if r is not None:
            vals[s] = r
        elif z3.is_algebraic_value(val):
            approx = val.approx(45)
            vals[s], exact = sp.Rational(approx.numerator_as_long(), approx.denominator_as_long()), False
        else:
            return {}, False
    point = {}
    for v in c.order:
        e = sub.get(v, v).xreplace(vals)
        point[v] = e if e.is_Rational else sp.N(e, 50)
        exact &= bool(e.is_Rational)
    return point, exact
