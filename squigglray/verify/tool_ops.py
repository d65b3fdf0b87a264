"""What the `ToolBox` worker process runs: parsing, SymPy, Z3 and math-verify work for each op.

Why a separate module: it is preloaded by the worker (`TimedWorker(preload=...)`), so importing
SymPy, Z3 and the LaTeX parser never counts against a call's deadline, and the parent process
never has to import any of it. The one entry point is `run(op, args, timeout_s)`; `args` are the
canonical arguments from `canonical.canonical_args` (each expression a ``[syntax, text]`` pair).
It returns ``{"ok": True, "result": ...}`` or ``{"ok": False, "error_type", "error"}`` for
bad or oversized input; anything else that raises comes back to the parent as a WorkerError.

Parsing never runs ``eval``: SymPy syntax is parsed with Python's ``ast`` and only whitelisted
nodes (numbers, names, arithmetic, comparisons, calls of known functions) are turned into SymPy
objects; names starting with ``_`` are refused. LaTeX goes through latex2sympy2_extended (an
ANTLR grammar, no eval) and its tree is rebuilt bottom-up. Both paths refuse constant powers
too big to compute (``9**9**9``) before SymPy tries, since memory can run out before a deadline.
"""

from __future__ import annotations

import ast
import math
import operator
import random
import re
import sys
from functools import reduce

import sympy as sp
from latex2sympy2_extended import NormalizationConfig, latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig

try:
    import z3
except ImportError:  # the z3 ops then report an error; the rest works
    z3 = None

__all__ = ["BadInput", "TooLarge", "parse", "run"]

_MAX_BITS = 100_000  # a constant power above this many bits is refused
_MAX_FACTORIAL = 10_000
_Z3_MAX_EXP = 64


class BadInput(ValueError):
    """The input is not something the op can take (reported as error_type 'bad_input')."""


class TooLarge(BadInput):
    """The input would build a number too large to compute (reported as 'too_large')."""


# ==================================== parsing ====================================
_FUNCS = {name: getattr(sp, name) for name in (
    "sqrt", "cbrt", "root", "exp", "log", "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan",
    "atan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "Abs", "floor", "ceiling", "factorial",
    "binomial", "gamma", "Min", "Max", "Rational", "re", "im", "sign", "gcd", "lcm", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not")}
_FUNCS.update(ln=sp.log, abs=sp.Abs, arcsin=sp.asin, arccos=sp.acos, arctan=sp.atan)
_CONSTANTS = {"pi": sp.pi, "E": sp.E, "I": sp.I, "oo": sp.oo, "true": sp.true, "false": sp.false}
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_LOGIC = {ast.BitAnd: sp.And, ast.BitOr: sp.Or}
_COMPARE = {ast.Eq: sp.Eq, ast.NotEq: sp.Ne, ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge}
_SINGLE_EQ = re.compile(r"(?<![<>=!])=(?!=)")
_IMPLICIT = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?)(?![eE][+-]?\d)(?=[A-Za-z_(])"
                       r"|(\))(?=[\d(]|(?!(?:and|or|not|in|is)\b)[A-Za-z_])")
_LATEX_NORM = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=False,
                                  boxed="none", equations=False)
_LATEX_CONV = ConversionConfig(lowercase_symbols=False, interpret_as_mixed_fractions=False)


def _short(x, n: int = 60) -> str:
    s = str(x)
    return s if len(s) <= n else s[: n - 3] + "..."


def _check_power(base, ex) -> None:
    if not (base.is_Number and ex.is_Number) or base.is_Float or ex.is_Float:
        if ex.is_Number and not ex.is_Float and abs(ex) > 10**6:
            raise TooLarge(f"exponent {_short(ex)} is too large (limit 10**6)")
        return
    big = max(abs(int(base.p)), abs(int(base.q))) if base.is_Rational else 0
    if big > 1 and abs(int(ex.p)) > _MAX_BITS * int(ex.q) / math.log2(big):  # ints: no float overflow
        raise TooLarge(f"{_short(base)}**{_short(ex)} is too large to compute (over {_MAX_BITS} bits)")


def _power(base, ex):
    _check_power(base, ex)
    return sp.Pow(base, ex)


def _call(name: str, args: list):
    if name in ("factorial", "binomial", "gamma") and any(a.is_Number and abs(a) > _MAX_FACTORIAL for a in args):
        raise TooLarge(f"{name} of a number above {_MAX_FACTORIAL} is too large to compute")
    try:
        return _FUNCS[name](*args)
    except (TypeError, ValueError) as e:
        raise BadInput(f"{name}{_short(tuple(args))}: {e}") from None


class _Builder:
    """Python AST of a SymPy-syntax expression -> SymPy object, whitelisted node by node."""

    def __call__(self, node):
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise BadInput(f"{type(node).__name__} is not allowed in an expression")
        return method(node)

    def _Expression(self, node):
        return self(node.body)

    def _Constant(self, node):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadInput(f"literal {_short(repr(v))} is not allowed")
        return sp.Integer(v) if isinstance(v, int) else sp.Float(repr(v))

    def _Name(self, node):
        name = node.id
        if name.startswith("_"):
            raise BadInput(f"name {name!r} is not allowed (names may not start with '_')")
        return _CONSTANTS[name] if name in _CONSTANTS else sp.Symbol(name)

    def _UnaryOp(self, node):
        x = self(node.operand)
        if isinstance(node.op, ast.USub):
            return -x
        if isinstance(node.op, ast.UAdd):
            return x
        if isinstance(node.op, (ast.Not, ast.Invert)):
            return sp.Not(x)
        raise BadInput(f"operator {type(node.op).__name__} is not allowed")

    def _BinOp(self, node):
        a, b = self(node.left), self(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(a, b)
        if type(node.op) in _LOGIC:
            return _LOGIC[type(node.op)](a, b)
        if type(node.op) not in _ARITH:
            raise BadInput(f"operator {type(node.op).__name__} is not allowed")
        try:
            return _ARITH[type(node.op)](a, b)
        except TypeError as e:  # e.g. arithmetic on a relation
            raise BadInput(str(e)) from None

    def _BoolOp(self, node):
        return (sp.And if isinstance(node.op, ast.And) else sp.Or)(*[self(v) for v in node.values])

    def _Compare(self, node):
        sides = [self(node.left)] + [self(c) for c in node.comparators]
        rels = [_COMPARE[type(op)](l, r, evaluate=False) if type(op) in _COMPARE else None
                for op, l, r in zip(node.ops, sides, sides[1:])]
        if None in rels:
            raise BadInput("only ==, !=, <, <=, >, >= (and =) comparisons are allowed")
        return rels[0] if len(rels) == 1 else sp.And(*rels)

    def _Call(self, node):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
            what = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
            raise BadInput(f"unknown function {what!r} (known: {', '.join(sorted(_FUNCS))})")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise BadInput(f"{node.func.id}(...) takes positional arguments only")
        return _call(node.func.id, [self(a) for a in node.args])


def _parse_sympy(text: str):
    src = _SINGLE_EQ.sub("==", text.replace("^", "**"))
    src = _IMPLICIT.sub(lambda m: (m.group(1) or m.group(2)) + "*", src)  # 2x -> 2*x, )( -> )*(
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        raise BadInput(f"{_short(text)!r} is not a valid SymPy expression: {e.msg}") from None
    return _Builder()(tree)


def _rebuild(e):
    """Evaluate latex2sympy's unevaluated tree bottom-up, refusing oversized constant powers."""
    if not isinstance(e, sp.Basic) or not e.args or e.is_Atom:
        return e
    args = [_rebuild(a) for a in e.args]
    if e.is_Pow:
        return _power(*args)
    return e.func(*args)


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
class _ToZ3:
    """SymPy -> Z3 over declared sorts. x**-n becomes 1/x**n with the side condition x != 0."""

    def __init__(self, sorts: dict[str, str]):
        self.sorts = sorts
        self.vars: dict[str, object] = {}
        self.side: list = []

    def var(self, s):
        if s.name not in self.vars:
            self.vars[s.name] = (z3.Int if self.sorts.get(s.name) == "int" else z3.Real)(s.name)
        return self.vars[s.name]

    def __call__(self, e):
        if e.is_Symbol:
            return self.var(e)
        if e is sp.true or e is sp.false:
            return z3.BoolVal(bool(e))
        if e.is_Integer:
            return z3.IntVal(int(e))
        if e.is_Rational:
            return z3.Q(int(e.p), int(e.q))
        if e.is_Float:
            r = sp.Rational(str(e))
            return z3.Q(int(r.p), int(r.q))
        if e.is_Add:
            return reduce(operator.add, map(self, e.args))
        if e.is_Mul:
            return reduce(operator.mul, map(self, e.args))
        if e.is_Pow:
            return self._pow(e.base, e.exp)
        if isinstance(e, sp.Abs):
            x = self(e.args[0])
            return z3.If(x >= 0, x, -x)
        if isinstance(e, sp.Rel) and type(e) in _Z3_REL:
            return _Z3_REL[type(e)](self(e.lhs), self(e.rhs))
        if isinstance(e, (sp.And, sp.Or)):
            return (z3.And if isinstance(e, sp.And) else z3.Or)(*map(self, e.args))
        if isinstance(e, sp.Not):
            return z3.Not(self(e.args[0]))
        raise BadInput(f"Z3 cannot take {type(e).__name__} ({str(e)[:60]}); use +, -, *, /, integer powers, "
                       "Abs, relations, And/Or/Not")

    def _pow(self, base, ex):
        if not ex.is_Integer or abs(ex) > _Z3_MAX_EXP:
            raise BadInput(f"Z3 takes integer powers up to {_Z3_MAX_EXP} only, not ** {ex}")
        x = self(base)
        n = abs(int(ex))
        out = reduce(operator.mul, [x] * n) if n else z3.IntVal(1)
        if ex < 0:
            self.side.append(x != 0)
            return z3.RealVal(1) / (z3.ToReal(out) if z3.is_int(out) else out)
        return out


_Z3_REL = {sp.Eq: operator.eq, sp.Ne: operator.ne, sp.Lt: operator.lt, sp.Le: operator.le,
           sp.Gt: operator.gt, sp.Ge: operator.ge}


def _model(model, tr: _ToZ3) -> dict[str, str]:
    out = {}
    for name, v in sorted(tr.vars.items()):
        val = model.eval(v, model_completion=True)
        if z3.is_int_value(val):
            out[name] = str(val.as_long())
        elif z3.is_rational_value(val):
            n, d = val.numerator_as_long(), val.denominator_as_long()
            out[name] = str(n) if d == 1 else f"{n}/{d}"
        elif z3.is_algebraic_value(val):
            out[name] = val.as_decimal(30).rstrip("?")
        else:
            out[name] = str(val)
    return out


def _check(formulas: list, sorts: dict, timeout_s: float):
    """(z3 result, model dict or None) for the conjunction of SymPy booleans `formulas`."""
    if z3 is None:
        raise RuntimeError("z3-solver is not installed")
    tr = _ToZ3(sorts)
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
