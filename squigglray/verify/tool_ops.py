"""What the `ToolBox` worker process runs: parsing, SymPy, Z3 and math-verify work for each op.

Why a separate module: it is preloaded by the worker (`TimedWorker(preload=...)`), so importing
SymPy, Z3 and the LaTeX parser never counts against a call's deadline, and the parent process
never has to import any of it. The one entry point is `run(op, args, timeout_s)`; `args` are the
canonical arguments from `canonical.canonical_args` (each expression a ``[syntax, text]`` pair).
It returns ``{"ok": True, "result": ...}`` or ``{"ok": False, "error_type", "error"}`` for
bad or oversized input; anything else that raises comes back to the parent as a WorkerError.

Parsing never runs ``eval``: SymPy syntax goes through the symbolic core's whitelisting parser
(`squigglray.symbolic.parse`) with the tools' grammar (`GRAMMAR`: any identifier is a Symbol,
known functions and constants, relations and logic, implicit multiplication). LaTeX goes through
latex2sympy2_extended (an ANTLR grammar, no eval) and its tree is rebuilt bottom-up. Both paths
refuse constant powers and factorials too big to compute (``9**9**9``) before SymPy tries, since
memory can run out before a deadline (`squigglray.symbolic.guard`). The Z3 ops use the core's
translation (`squigglray.symbolic.ToZ3`) without roots: integer powers only, ``x/y`` asserted
only where ``y != 0``, variables real unless ``vars`` says "int".
"""

from __future__ import annotations

import math
import random
import sys

import sympy as sp
from latex2sympy2_extended import NormalizationConfig, latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig

from squigglray.symbolic import ExpressionError, Grammar, Limits, ToZ3, TooLarge, apply, exact_value, load_z3
from squigglray.symbolic import parse as parse_text, short as _short

z3 = load_z3()  # None: the z3 ops then report an error; the rest works

__all__ = ["BadInput", "TooLarge", "parse", "run"]

BadInput = ExpressionError  # the input is not something the op can take (error_type 'bad_input');
# TooLarge, a kind of it, is input that would build a number too large to compute ('too_large')

# ==================================== parsing ====================================
_FUNCS = {name: getattr(sp, name) for name in (
    "sqrt", "cbrt", "root", "exp", "log", "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan",
    "atan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "Abs", "floor", "ceiling", "factorial",
    "binomial", "gamma", "Min", "Max", "Rational", "re", "im", "sign", "gcd", "lcm", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not")}
_FUNCS.update(ln=sp.log, abs=sp.Abs, arcsin=sp.asin, arccos=sp.acos, arctan=sp.atan)
_CONSTANTS = {"pi": sp.pi, "E": sp.E, "I": sp.I, "oo": sp.oo, "true": sp.true, "false": sp.false}
# texts are at most 2,000 characters (the parent refuses longer); exponents up to 10**6 and literals
# of any length within that, as numbers for a calculator (the verifier's grammar is stricter)
_LIMITS = Limits(max_chars=4000, max_exponent=10**6, max_number_chars=4000)
GRAMMAR = Grammar(functions=_FUNCS, constants=_CONSTANTS, free_names=True, relations=True, implicit_mul=True,
                  limits=_LIMITS)
_LATEX_NORM = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=False,
                                  boxed="none", equations=False)
_LATEX_CONV = ConversionConfig(lowercase_symbols=False, interpret_as_mixed_fractions=False)


def _parse_sympy(text: str):
    try:
        return parse_text(text, GRAMMAR)
    except TooLarge:
        raise
    except ExpressionError as e:
        raise BadInput(f"{_short(text)!r} is not a valid SymPy expression: {e}") from None


def _rebuild(e):
    """Evaluate latex2sympy's unevaluated tree bottom-up, refusing oversized powers and factorials."""
    if not isinstance(e, sp.Basic) or not e.args or e.is_Atom:
        return e
    args = [_rebuild(a) for a in e.args]
    return apply(e.func, args, _LIMITS)


def _parse_latex(text: str):
    try:
        e = latex2sympy(text, normalization_config=_LATEX_NORM, conversion_config=_LATEX_CONV)
    except Exception as exc:  # noqa: BLE001 - the ANTLR parser raises plain Exceptions
        raise BadInput(f"{_short(text)!r} is not valid LaTeX: {' '.join(str(exc).split())[:300]}") from None
    return _rebuild(e)


def parse(pair, want: str = "expr"):
    """[syntax, text] -> SymPy. `want`: 'expr' (an expression), 'equation' (an expression or a
    relation), 'bool' (a relation or a logical combination of relations)."""
    syntax, text = pair
    if not text.strip():
        raise BadInput("empty expression")
    e = _parse_latex(text) if syntax == "latex" else _parse_sympy(text)
    if want == "expr" and not isinstance(e, sp.Expr):
        raise BadInput(f"{_short(text)!r} is not an expression (it parses to a {type(e).__name__})")
    if want == "equation" and not isinstance(e, (sp.Expr, sp.Rel)):
        raise BadInput(f"{_short(text)!r} is not an expression or an equation (it parses to a {type(e).__name__})")
    if want == "bool" and not isinstance(e, sp.logic.boolalg.Boolean):
        raise BadInput(f"{_short(text)!r} is not a relation or a logical formula (it parses to a {type(e).__name__})")
    return e


def _variable(e, name: str | None, what: str = "var"):
    """The symbol called `name` in e (or a new one), or e's only free symbol when name is None."""
    free = sorted(e.free_symbols, key=str)
    if name is None:
        if len(free) != 1:
            raise BadInput(f"give {what}: the expression has {len(free)} free symbols "
                           f"({', '.join(map(str, free)) or 'none'})")
        return free[0]
    return next((s for s in free if s.name == name), sp.Symbol(name))


# ==================================== SymPy ops ====================================
def _simplify(a, _t):
    return str(sp.simplify(parse(a["expr"])))


def _expand(a, _t):
    return str(sp.expand(parse(a["expr"])))


def _factor(a, _t):
    return str(sp.factor(parse(a["expr"])))


def _evaluate(a, _t):
    e = parse(a["expr"])
    if e.free_symbols:
        raise BadInput(f"evaluate needs a constant; free symbols: {', '.join(sorted(map(str, e.free_symbols)))}")
    return str(sp.N(e, a["digits"]))


def _diff(a, _t):
    e = parse(a["expr"])
    return str(sp.diff(e, _variable(e, a.get("var")), a["order"]))


def _integrate(a, _t):
    e = parse(a["expr"])
    v = _variable(e, a.get("var"))
    if "lower" in a:
        return str(sp.integrate(e, (v, parse(a["lower"]), parse(a["upper"]))))
    return str(sp.integrate(e, v))


def _solve(a, _t):
    e = parse(a["equation"], "equation")
    if isinstance(e, sp.Rel) and not isinstance(e, sp.Eq):
        raise BadInput(f"solve takes an equation, not the inequality {e}")
    f = e.lhs - e.rhs if isinstance(e, sp.Eq) else e
    return [str(s) for s in sp.solve(f, _variable(f, a.get("var")))]


# ------------------------------ symbolic equivalence ------------------------------
def _sample_points(symbols, n: int = 12):
    rng = random.Random(20240521)  # fixed: the same call must give the same answer (it is cached)
    for _ in range(n):
        yield {s: sp.Rational(rng.choice([-1, 1]) * rng.randint(1, 400), rng.randint(7, 97)) for s in symbols}


def _numeric_verdict(a, b) -> bool | None:
    """False if a and b differ at a sampled point, True if they agree at enough points, else None."""
    agree = 0
    for point in _sample_points(sorted(a.free_symbols | b.free_symbols, key=str)):
        try:
            va, vb = complex(a.evalf(30, subs=point)), complex(b.evalf(30, subs=point))
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            continue  # undefined there (a pole, a non-number)
        if not all(map(math.isfinite, (va.real, va.imag, vb.real, vb.imag))):
            continue
        if abs(va - vb) > 1e-9 * (1 + abs(va) + abs(vb)):
            return False
        agree += 1
    return True if agree >= 5 else None


def _expressions_equivalent(a, b) -> bool:
    if a == b:
        return True
    symbolic = bool(a.free_symbols | b.free_symbols)
    sampled = _numeric_verdict(a, b) if symbolic else None
    if sampled is False:
        return False
    d = sp.simplify(a - b)
    if d == 0:
        return True
    if not d.free_symbols:
        return bool(d.equals(0))
    return bool(sampled)


def _relation_form(r):
    """(kind, g) with r equivalent to ``g kind 0``; kind in '=', '!=', '>=', '>'."""
    g = r.lhs - r.rhs
    if isinstance(r, (sp.Lt, sp.Le)):
        return (">" if isinstance(r, sp.Lt) else ">="), -g
    return {sp.Eq: "=", sp.Ne: "!=", sp.Gt: ">", sp.Ge: ">="}[type(r)], g


def _equivalent(a, _t):
    x, y = parse(a["a"], "equation"), parse(a["b"], "equation")
    if isinstance(x, sp.Rel) and isinstance(y, sp.Rel):  # same relation up to a constant factor
        (kx, gx), (ky, gy) = _relation_form(x), _relation_form(y)
        if kx != ky:
            return False
        if gx == 0 or gy == 0:
            return gx == gy
        ratio = sp.simplify(gx / gy)
        return bool(ratio.is_number and ratio.is_nonzero and (kx in ("=", "!=") or ratio.is_positive))
    if isinstance(x, sp.Rel) or isinstance(y, sp.Rel):  # "x = 2" vs "2": compare the value
        rel, other = (x, y) if isinstance(x, sp.Rel) else (y, x)
        return isinstance(rel, sp.Eq) and rel.lhs.is_Symbol and _expressions_equivalent(rel.rhs, other)
    return _expressions_equivalent(x, y)


def _answer_equivalent(a, _t):
    from squigglray.solve.equivalence_worker import equivalent  # preloaded by ToolBox's worker

    return a["a"] == a["b"] or equivalent(a["a"], a["b"])


# ==================================== Z3 ops ====================================
def _model(model, tr: ToZ3) -> dict[str, str]:
    out = {}
    for s, v in sorted(tr.vars.items(), key=lambda kv: kv[0].name):
        val = model.eval(v, model_completion=True)
        exact = exact_value(val)
        if exact is not None:
            out[s.name] = str(exact)
        elif z3.is_algebraic_value(val):
            out[s.name] = val.as_decimal(30).rstrip("?")
        else:
            out[s.name] = str(val)
    return out


def _check(formulas: list, sorts: dict, timeout_s: float):
    """(z3 result, model dict or None) for the conjunction of SymPy booleans `formulas`."""
    if z3 is None:
        raise RuntimeError("z3-solver is not installed")
    tr = ToZ3(sorts=sorts)  # integer powers only (no roots); reals unless sorts says "int"
    assertions = [tr(f) for f in formulas]
    solver = z3.Solver()
    solver.set("timeout", max(10, int(timeout_s * 800)))  # Z3's own clock, inside the worker deadline
    solver.add(*assertions, *tr.side)
    for f in formulas:  # declare every variable, even one that simplified away
        for s in f.free_symbols:
            tr.var(s)
    result = solver.check()
    return result, (_model(solver.model(), tr) if result == z3.sat else None)


def _status(result) -> str:
    return "sat" if result == z3.sat else "unsat" if result == z3.unsat else "unknown"


def _satisfiable(a, t):
    formulas = [parse(c, "bool") for c in a["constraints"]]
    result, model = _check(formulas, a.get("vars") or {}, t)
    return {"status": _status(result), "model": model}


def _violates(claim, point: dict[str, str]) -> bool:
    """Does the SymPy claim really fail at the point (exactly, or at 50 digits for decimals)?"""
    vals = {s: sp.Rational(point[s.name]) if "." not in point[s.name] else sp.Float(point[s.name], 50)
            for s in claim.free_symbols if s.name in point}
    try:
        return claim.xreplace(vals).simplify() is sp.false
    except (TypeError, ValueError):
        return False


def _prove(a, t):
    claim = parse(a["claim"], "bool")
    assumptions = [parse(x, "bool") for x in a["assumptions"]]
    result, model = _check(assumptions + [sp.Not(claim)], a.get("vars") or {}, t)
    if result == z3.unsat:
        return {"status": "proved", "counterexample": None}
    if result == z3.sat and _violates(claim, model):
        return {"status": "refuted", "counterexample": model}
    return {"status": "unknown", "counterexample": None}


def _counterexample(a, t):
    out = _prove(a, t)
    return {"found": out["status"] == "refuted", "counterexample": out["counterexample"], "status": out["status"]}


# ==================================== entry point ====================================
OPS = {"simplify": _simplify, "expand": _expand, "factor": _factor, "evaluate": _evaluate, "diff": _diff,
       "integrate": _integrate, "solve": _solve, "equivalent": _equivalent, "answer_equivalent": _answer_equivalent,
       "z3_satisfiable": _satisfiable, "z3_prove": _prove, "z3_counterexample": _counterexample}


def run(op: str, args: dict, timeout_s: float = 2.0) -> dict:
    """Run one op on canonical args (the worker's entry point; see the module docstring)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))  # deep but small expressions
    try:
        return {"ok": True, "result": OPS[op](args, timeout_s)}
    except TooLarge as e:
        return {"ok": False, "error_type": "too_large", "error": f"{op}: {e}"}
    except BadInput as e:
        return {"ok": False, "error_type": "bad_input", "error": f"{op}: {e}"}
