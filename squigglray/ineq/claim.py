"""A parsed inequality claim and what every worker-side check shares (parsing, exact re-checks).

Expression text goes through the symbolic core's parser (`squigglray.symbolic.parse`) with the
verifier's grammar: the claim's variables (SymPy symbols with the domain's assumptions), the
functions of `FUNCTIONS`, ``pi`` and ``E``, exact decimals (``0.1`` is ``1/10``), no relations
and no implicit multiplication; powers and numbers too large to compute are refused. A parsed
expression must be a finite real expression (no ``zoo``, ``oo``, ``I``, no non-real constant).
This module runs in the verifier's worker (`squigglray.ineq.verifier` orchestrates).
"""

from __future__ import annotations

import keyword
from typing import get_args

import sympy as sp

from squigglray.ineq.problems import Domain, Rel
from squigglray.symbolic import ExpressionError, Grammar, Limits, parse as parse_text, short

__all__ = ["Claim", "ExpressionError", "FUNCTIONS", "GRAMMAR", "MAX_OPS", "check_point", "fmt", "in_domain",
           "is_zero", "parse", "short", "spec", "symbols", "value"]

RELS = get_args(Rel)
DOMAINS = get_args(Domain)
TOL = 1e-12  # relative violation that refutes, measured at 30 digits
MAX_OPS = 3000  # larger expressions skip simplify()
FUNCTIONS = {"sqrt": sp.sqrt, "cbrt": sp.cbrt, "root": sp.root, "Rational": sp.Rational, "Abs": sp.Abs,
             "abs": sp.Abs, "Min": sp.Min, "Max": sp.Max, "exp": sp.exp, "log": sp.log}
CONSTANTS = {"pi": sp.pi, "E": sp.E}
GRAMMAR = Grammar(functions=FUNCTIONS, constants=CONSTANTS, exact_decimals=True, limits=Limits(max_chars=4000))


def spec(lhs, rel, rhs, variables, domain, constraint) -> dict:
    """The claim as plain data (what crosses into the worker)."""
    if rel not in RELS:
        raise ValueError(f"relation {rel!r} is not one of {RELS}")
    if domain not in DOMAINS:
        raise ValueError(f"domain {domain!r} is not one of {DOMAINS}")
    return {"lhs": str(lhs), "rel": rel, "rhs": str(rhs), "variables": [str(v) for v in variables],
            "domain": domain, "constraint": constraint or None}


def symbols(variables, domain: str) -> dict[str, sp.Symbol]:
    assumptions = {"positive": {"positive": True}, "nonnegative": {"nonnegative": True},
                   "real": {"real": True}}[domain]
    reserved = sorted({*FUNCTIONS, *CONSTANTS})
    out = {}
    for v in variables:
        if not (isinstance(v, str) and v.isidentifier()) or keyword.iskeyword(v) or v.startswith("_") or v in reserved:
            raise ExpressionError(f"variable name {v!r} is not usable (an identifier, not a keyword, "
                                  f"not starting with '_', not one of {reserved})")
        out[v] = sp.Symbol(v, **assumptions)
    return out


def parse(text, syms: dict[str, sp.Symbol], what: str = "expression") -> sp.Expr:
    """A finite real SymPy expression over `syms` only (the module docstring)."""
    if not isinstance(text, str) or not text.strip() or "\n" in text or len(text) > GRAMMAR.limits.max_chars:
        raise ExpressionError(f"{what} {text!r} is empty, multi-line, too long or not a string")
    try:
        e = parse_text(text, GRAMMAR, syms)
    except ExpressionError as exc:
        raise ExpressionError(f"{what} {text.strip()!r}: {exc}") from None
    if not isinstance(e, sp.Expr) or e.has(sp.zoo, sp.nan, sp.oo, -sp.oo, sp.I) or any(
            x.is_number and x.is_real is False for x in sp.preorder_traversal(e)):
        raise ExpressionError(f"{what} {text!r} is not a finite real expression (got {short(str(e))})")
    return e


class Claim:
    """A parsed claim; `slack` is >= 0 (> 0 strict, == 0 for '=') exactly where it holds."""

    def __init__(self, spec: dict):
        self.domain, self.rel = spec["domain"], spec["rel"]
        self.syms = symbols(spec["variables"], self.domain)
        self.order = [self.syms[v] for v in spec["variables"]]
        self.lhs = parse(spec["lhs"], self.syms, "lhs")
        self.rhs = parse(spec["rhs"], self.syms, "rhs")
        self.cons = parse(spec["constraint"], self.syms, "constraint") if spec.get("constraint") else None
        self.slack = self.rhs - self.lhs if self.rel in ("<=", "<") else self.lhs - self.rhs
        self.strict = self.rel in (">", "<")


def is_zero(e: sp.Expr) -> bool:
    if e == 0 or sp.expand(e) == 0:
        return True
    return sp.count_ops(e) <= MAX_OPS and sp.simplify(e) == 0


def fmt(x) -> str:
    return f"{float(x):.6g}"


# ---- points: exact re-check ---------------------------------------------------------------------
def in_domain(val, domain: str) -> bool:
    return val > 0 if domain == "positive" else val >= 0 if domain == "nonnegative" else True


def check_point(c: Claim, point: dict, exact: bool) -> dict | None:
    """A counterexample {"point", "reason"} if the claim fails at `point` (Symbol -> exact Rational,
    or 50-digit Float when not `exact`), judged at 30 digits; None when it holds or is undefined."""
    try:
        if not all(val.is_real and in_domain(val, c.domain) for val in point.values()):
            return None
        if c.cons is not None:
            r = c.cons.evalf(30, subs=point)
            if not r.is_real or abs(r) > 1e-20 * (1 + max(abs(v) for v in point.values())):
                return None
        lhs, rhs = (e.evalf(30, subs=point, chop=True) for e in (c.lhs, c.rhs))
        s = c.slack.evalf(30, subs=point)
        if not all(v.is_real and v.is_finite for v in (lhs, rhs, s)):
            return None
        tol = TOL * max(1, abs(lhs), abs(rhs))
        if c.rel == "=":
            bad = abs(s) > tol
        elif s < -tol:
            bad = True
        else:  # a strict claim also fails where the sides are exactly equal
            bad = c.strict and exact and abs(s) <= tol and sp.simplify(c.slack.xreplace(point)) == 0
    except (TypeError, ValueError, ZeroDivisionError, ArithmeticError):
        return None
    if not bad:
        return None
    at = ", ".join(f"{k} = {fmt(v)}" for k, v in point.items())
    return {"point": {str(k): float(v) for k, v in point.items()},
            "reason": f"fails at {at}: lhs = {fmt(lhs)}, rhs = {fmt(rhs)}, lhs - rhs = "
                      f"{fmt(-s if c.rel in ('<=', '<') else s)} (claim {c.rel})"}




def value(e: sp.Expr, point: dict) -> sp.Expr | None:
    """`e` at `point` to 30 digits, or None where it is not a finite real number."""
    try:
        v = e.xreplace(point)
        if v.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            return None
        v = sp.N(v, 30)
        return v if v.is_real and v.is_finite else None
    except (TypeError, ValueError, ZeroDivisionError, ArithmeticError):
        return None


