"""Inequalities via AM-GM: minima of a*x + b/x over positive reals."""

from __future__ import annotations

import math
from fractions import Fraction

from squigglray.families.base import Family, Knob
from squigglray.families.registry import register


@register
class AmGmMin(Family):
    family_id = "amgm_min"
    target_type = "inequality_amgm"
    title = "Minimum of a*x + b/x over x > 0"
    knobs = {
        "scale_max": Knob("largest common factor t in a = t*u^2, b = t*v^2", 3, 6, 12, 1, 20),
        "root_max": Knob("largest u and v in a = t*u^2, b = t*v^2", 4, 10, 30, 1, 40),
    }
    templates = (
        "Find the minimum value of {a}x + {b}/x over all positive real numbers x.",
        "For x > 0, what is the smallest possible value of {a}x + {b}/x?",
        "Let f(x) = {a}x + {b}/x for real x > 0. Find the minimum of f.",
    )
    reasoning = "By AM-GM, a*x + b/x >= 2*sqrt(a*b), with equality at x = sqrt(b/a)."

    def draw(self, rng, k):
        t = rng.randint(1, k["scale_max"])
        u, v = rng.randint(1, k["root_max"]), rng.randint(1, k["root_max"])
        return {"a": t * u * u, "b": t * v * v}  # a*b = (t*u*v)^2, a perfect square

    def solve(self, p):
        ab = p["a"] * p["b"]
        r = math.isqrt(ab)
        assert r * r == ab, f"a*b = {ab} is not a perfect square"
        return 2 * r

    def brute(self, p):
        # Minimize over the rationals i/j with j <= sqrt(a) (the optimum sqrt(b/a) = v/u has u <= sqrt(a))
        # and i/j <= sqrt(b) + 1 (the optimum is at most sqrt(b)), exactly with Fractions.
        a, b = p["a"], p["b"]
        jmax, xmax = math.isqrt(a) + 1, math.isqrt(b) + 2
        best = min(a * Fraction(i, j) + b / Fraction(i, j) for j in range(1, jmax + 1) for i in range(1, xmax * j + 1))
        assert best.denominator == 1, f"grid minimum {best} is not an integer"
        return int(best)

    def code(self, p):
        return f"a, b = {p['a']}, {p['b']}\nimport math\nprint(2 * math.isqrt(a * b))"

    def outline(self, p, answer):
        a, b = p["a"], p["b"]
        x = Fraction(math.isqrt(b * a), a)  # sqrt(b/a) = sqrt(ab)/a
        x = str(x) if x.denominator == 1 else f"({x})"
        return [
            ("parse", f"Minimize {a}x + {b}/x over x > 0."),
            ("apply_theorem", f"AM-GM: {a}x + {b}/x >= 2*sqrt({a}x * {b}/x) = 2*sqrt({a * b})."),
            ("compute", f"sqrt({a * b}) = {answer // 2}, so the bound is {answer}."),
            ("verify", f"Equality holds when {a}x = {b}/x, i.e. x = {x.strip('()')}: {a}*{x} + {b}/{x} = {answer}."),
            ("conclude", f"The minimum value is {answer}."),
        ]
