"""The one guard against numbers too large to compute, and the errors of the symbolic core.

SymPy computes constant powers and factorials exactly as soon as it builds them (``9**9**9``,
``factorial(10**7)``), and memory can run out before any deadline stops it. So every place that
builds a SymPy object from untrusted input -- the parser (`squigglray.symbolic.parse`) and the
LaTeX tree rebuild of the tools -- builds powers and calls through `apply`, which checks the
operands against `Limits` first:

- a numeric exponent (integer, rational or float) larger than ``max_exponent`` in absolute value
  is refused, whatever the base (``x**5000`` is as refused as ``1**5000`` under the default);
- a rational base with a rational exponent is refused when the exact result would need more
  than ``max_bits`` bits (``|exponent| * log2(max(|p|, |q|)) > max_bits`` for the base ``p/q``);
- ``factorial``/``binomial``/``gamma`` of a number above ``max_factorial`` is refused;
- a numeric literal longer than ``max_number_chars`` characters, or a literal with a decimal point
  or exponent above ``max_float`` (``1e400``), is refused by the parser (`check_literal`).

Refusals raise `TooLarge`, a kind of `ExpressionError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import sympy as sp

__all__ = ["ExpressionError", "Limits", "TooLarge", "apply", "check_literal", "check_power", "short"]

_BIG_ARGUMENT = ("factorial", "binomial", "gamma")


class ExpressionError(ValueError):
    """Text that is not an acceptable expression: bad syntax, a name, function or construct that is
    not allowed, or a limit passed (`TooLarge`)."""


class TooLarge(ExpressionError):
    """An expression that would build a number too large to compute, or text over a size limit."""


@dataclass(frozen=True)
class Limits:
    """Size limits on untrusted expression text and on the numbers built from it."""

    max_chars: int = 4000  # length of the text
    max_nodes: int = 4000  # expression nodes of its syntax tree (never more than its characters)
    max_exponent: int = 1000  # |numeric exponent|, any base
    max_bits: int = 100_000  # size of an exact rational power
    max_number_chars: int = 60  # characters of one numeric literal
    max_float: float = 1e300  # a literal with a decimal point or exponent
    max_factorial: int = 10_000  # numeric argument of factorial, binomial, gamma


def short(x, n: int = 60) -> str:
    """`x` as one line of at most `n` characters (for messages)."""
    s = " ".join(str(x).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def check_power(base, exp, limits: Limits) -> None:
    """Raise TooLarge when ``base**exp`` is over `limits` (the module docstring)."""
    if not exp.is_Number or exp is sp.nan:
        return
    if exp.is_infinite or abs(exp) > limits.max_exponent:
        raise TooLarge(f"exponent {short(exp)} is too large (limit {limits.max_exponent})")
    if base.is_Rational and exp.is_Rational:
        big = max(abs(int(base.p)), abs(int(base.q)))
        if big > 1 and abs(int(exp.p)) > limits.max_bits * int(exp.q) / math.log2(big):  # ints: no overflow
            raise TooLarge(f"{short(base)}**{short(exp)} is too large to compute (over {limits.max_bits} bits)")


def apply(func: Callable, args: list, limits: Limits, name: str | None = None):
    """``func(*args)`` (a SymPy class or function), refusing a power or a factorial over `limits`."""
    name = name or getattr(func, "__name__", "")
    if func is sp.Pow or name == "Pow":
        check_power(args[0], args[1], limits)
    elif name in _BIG_ARGUMENT and any(a.is_Number and abs(a) > limits.max_factorial for a in args):
        raise TooLarge(f"{name} of a number above {limits.max_factorial} is too large to compute")
    return func(*args)


def check_literal(literal: str, is_float: bool, limits: Limits) -> None:
    """Raise TooLarge for a numeric literal over `limits` (its text, and whether it is a float)."""
    if len(literal) > limits.max_number_chars or (is_float and not float(literal) <= limits.max_float):
        raise TooLarge(f"the number {short(literal)} is too large")
