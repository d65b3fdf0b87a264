"""The one SymPy -> Z3 translation, used by the inequality verifier and the Z3 tools.

Semantics (`ToZ3`):

- **Variables** are Z3 reals, or integers where ``sorts`` says ``"int"`` for their name. Integer
  literals are Z3 integers when some variable is integer-sorted (integer-only terms stay in
  integer arithmetic) and reals otherwise; rationals and floats are exact rationals (a Float by its
  decimal digits). Z3 promotes a mixed integer/real term to a real one.
- **Division** does not exist in SymPy: ``x/y`` is ``x * y**-1``, so it is a negative power below,
  and is always real division -- never Z3's integer ``div``, also between integer variables.
- **Powers** ``x**n`` with an integer ``|n| <= max_exponent`` (64) are products. A negative ``n``
  becomes a fresh real ``d`` with ``d * x**|n| == 1`` in `side`: the formula is only asserted where
  ``x != 0`` (Z3's own ``x/0`` is an unspecified total function, which must not decide anything).
  A rational exponent ``p/q`` (``sqrt``, ``cbrt``, ``root``) is taken only with ``roots=True``: a
  fresh real ``r >= 0`` with ``r**q == x`` in `side` stands for the principal root, which is real
  only for ``x >= 0`` -- also for odd ``q``, as in SymPy, whose ``(-8)**(1/3)`` is not real -- so
  ``sqrt(x)`` brings ``x >= 0`` with it. Without ``roots`` (the tools), they are refused.
- ``Abs``, ``Min`` and ``Max`` are ``If`` terms; relations (``==, !=, <, <=, >, >=``), ``And``,
  ``Or``, ``Not`` and ``true``/``false`` are Z3 booleans.
- **Refused** (`Untranslatable`, a kind of `ExpressionError`): everything else -- transcendental
  functions (``exp``, ``log``, ``sin``, ...), a symbolic or float exponent, an exponent over the
  limit, ``floor``, ``factorial`` and the like -- since Z3's real arithmetic cannot state them
  exactly and an approximation could "prove" a false claim.

`side` collects the definitions of the fresh variables. The caller asserts them together with the
translated formulas, so the whole query holds only where every translated term is defined: a
denominator or a root under ``Not`` or ``Or`` still has to be defined. A claim is thus "proved"
(its negation unsat together with `side`) wherever its terms are defined, and a model always
lies where they are. One translator shares its fresh variables between identical subterms.
"""

from __future__ import annotations

import operator

import sympy as sp

from squigglray.symbolic.guard import ExpressionError, short

__all__ = ["ToZ3", "Untranslatable", "exact_value", "load_z3"]

_REL = {sp.Eq: operator.eq, sp.Ne: operator.ne, sp.Lt: operator.lt, sp.Le: operator.le,
        sp.Gt: operator.gt, sp.Ge: operator.ge}


class Untranslatable(ExpressionError):
    """A SymPy expression outside what `ToZ3` takes (its module docstring)."""


def load_z3():
    """The z3 module, or None when z3-solver is not installed."""
    try:
        import z3
    except ImportError:
        return None
    return z3


def exact_value(val) -> sp.Rational | None:
    """A Z3 integer or rational numeral as an exact SymPy number; None for anything else (an
    algebraic number, say)."""
    z3 = load_z3()
    if z3.is_int_value(val):
        return sp.Integer(val.as_long())
    if z3.is_rational_value(val):
        return sp.Rational(val.numerator_as_long(), val.denominator_as_long())
    return None


class ToZ3:
    """SymPy -> Z3 (the module docstring). `vars`: Symbol -> Z3 constant, in declaration order
    (`symbols` first); `side`: the assertions that define the fresh variables."""

    def __init__(self, symbols=(), sorts: dict[str, str] | None = None, *, roots: bool = False,
                 max_exponent: int = 64):
        self.z3 = load_z3()
        if self.z3 is None:
            raise RuntimeError("z3-solver is not installed")
        self.sorts = dict(sorts or {})
        self.ints = "int" in self.sorts.values()
        self.roots, self.max_exponent = roots, max_exponent
        self.vars: dict = {}
        self.side: list = []
        self._cache: dict = {}
        for s in symbols:
            self.var(s)

    def var(self, s: sp.Symbol):
        """The Z3 constant of `s` (declared on first use)."""
        if s not in self.vars:
            self.vars[s] = (self.z3.Int if self.sorts.get(s.name) == "int" else self.z3.Real)(s.name)
        return self.vars[s]

    def __call__(self, e: sp.Basic):
        if e not in self._cache:
            self._cache[e] = self._tr(e)
        return self._cache[e]

    def _number(self, n: int):
        return self.z3.IntVal(n) if self.ints else self.z3.RealVal(n)

    def _tr(self, e):
        z3 = self.z3
        if e.is_Symbol:
            return self.var(e)
        if e is sp.true or e is sp.false:
            return z3.BoolVal(bool(e))
        if e.is_Integer:
            return self._number(int(e))
        if e.is_Rational:
            return z3.Q(int(e.p), int(e.q))
        if e.is_Float:
            r = sp.Rational(str(e))
            return z3.Q(int(r.p), int(r.q))
        if e.is_Add:
            return z3.Sum([self(a) for a in e.args])
        if e.is_Mul:
            return z3.Product([self(a) for a in e.args])
        if e.is_Pow:
            return self._pow(e.base, e.exp)
        if isinstance(e, sp.Abs):
            x = self(e.args[0])
            return z3.If(x >= 0, x, -x)
        if isinstance(e, (sp.Min, sp.Max)):
            out = self(e.args[0])
            for a in e.args[1:]:
                y = self(a)
                out = z3.If((y < out) if isinstance(e, sp.Min) else (y > out), y, out)
            return out
        if isinstance(e, sp.Rel) and type(e) in _REL:
            return _REL[type(e)](self(e.lhs), self(e.rhs))
        if isinstance(e, (sp.And, sp.Or)):
            return (z3.And if isinstance(e, sp.And) else z3.Or)(*[self(a) for a in e.args])
        if isinstance(e, sp.Not):
            return z3.Not(self(e.args[0]))
        raise Untranslatable(f"Z3 cannot take {type(e).__name__} ({short(e)}); it takes +, -, *, /, "
                             f"{'rational' if self.roots else 'integer'} powers, Abs, Min, Max, relations, "
                             f"And/Or/Not")

    def _product(self, x, n: int):
        return self.z3.Product([x] * n) if n > 1 else x if n == 1 else self._number(1)

    def _pow(self, base, ex):
        m = self.max_exponent
        if not ex.is_Rational or (ex.q > 1 and not self.roots) or abs(ex.p) > m or ex.q > m:
            kind = f"rational powers p/q with |p|, q <= {m}" if self.roots else f"integer powers up to {m}"
            raise Untranslatable(f"Z3 cannot take the power ** {short(ex, 30)}: it takes {kind} only")
        x = self(base)
        if ex.q > 1:
            r = self.z3.FreshReal("root")
            self.side += [r >= 0, self._product(r, int(ex.q)) == x]
            x = r
        out = self._product(x, abs(int(ex.p)))
        if ex.p < 0:
            d = self.z3.FreshReal("inv")
            self.side.append(d * out == 1)
            return d
        return out
