"""What a family function of the inequality generator returns (`Draw`), and the small helpers the
families share (`generator` holds the first families and the variants, `techniques` the rest)."""

from __future__ import annotations

import random
from fractions import Fraction

__all__ = ["NAMES", "Draw", "all_equal", "frac", "pick_vars", "scaled"]

NAMES = [("a", "b", "c", "d", "e", "f"), ("x", "y", "z", "u", "v", "w"), ("p", "q", "r", "s", "t", "m")]


class Draw:
    """What a family function returns: the claim and proof before variants are applied."""

    def __init__(self, variables, domain, lhs, rel, rhs, steps, equality, equality_text, constraint=None,
                 bound=None, knobs=None):
        self.variables, self.domain, self.lhs, self.rel, self.rhs = tuple(variables), domain, lhs, rel, rhs
        self.steps, self.equality, self.equality_text = tuple(steps), equality, equality_text
        self.constraint, self.knobs = constraint, knobs or {}
        self.bound = bound  # (C, g): rhs == C * g, for the bound variant; None = no bound variant


def frac(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def scaled(k: int, expr: str) -> str:
    return expr if k == 1 else f"{k}*({expr})"


def pick_vars(rng: random.Random, n: int) -> list[str]:
    return list(rng.choice(NAMES)[:n])


def all_equal(vs: list[str], value: str = "1") -> tuple[dict, str]:
    return {v: value for v in vs}, " = ".join(vs)
