"""Equations: linear equations and monic quadratics with integer roots."""

from __future__ import annotations

import math

from squigglray.families.base import Family, Knob
from squigglray.families.registry import register


@register
class LinearEquation(Family):
    family_id = "linear_equation"
    target_type = "equations"
    title = "Solve a*x + b = c*x + d"
    knobs = {
        "coef_max": Knob("largest coefficient of x", 9, 30, 200, 3, 1000),
        "const_max": Knob("largest free constant", 20, 200, 5000, 1, 100000),
        "sol_max": Knob("largest solution x", 20, 500, 99999, 1, 99999),
    }
    templates = (
        "Solve for x: {a}x + {b} = {c}x + {d}.",
        "Find the positive integer x such that {a}x + {b} = {c}x + {d}.",
        "If {a} times a number plus {b} equals {c} times the same number plus {d}, what is the number?",
    )
    reasoning = "Collect the x terms on one side and the constants on the other, then divide."

    def draw(self, rng, k):
        a = rng.randint(2, k["coef_max"])
        c = rng.randint(2, k["coef_max"] - 1)
        if c >= a:
            c += 1  # a != c
        x = rng.randint(1, k["sol_max"])
        if a > c:
            b = rng.randint(1, k["const_max"])
            d = b + (a - c) * x
        else:
            d = rng.randint(1, k["const_max"])
            b = d + (c - a) * x
        return {"a": a, "b": b, "c": c, "d": d}

    def solve(self, p):
        return (p["d"] - p["b"]) // (p["a"] - p["c"])

    def brute(self, p):
        for x in range(1, max(p["b"], p["d"]) + 1):
            if p["a"] * x + p["b"] == p["c"] * x + p["d"]:
                return x
        raise AssertionError(f"no positive solution for {p}")

    def code(self, p):
        return f"a, b, c, d = {p['a']}, {p['b']}, {p['c']}, {p['d']}\nprint((d - b) // (a - c))"

    def outline(self, p, answer):
        a, b, c, d = p["a"], p["b"], p["c"], p["d"]
        return [
            ("parse", f"The equation is {a}x + {b} = {c}x + {d}."),
            ("rewrite", f"Move terms: ({a} - {c})x = {d} - {b}, i.e. {a - c}x = {d - b}."),
            ("compute", f"x = {d - b} / {a - c} = {answer}."),
            ("verify", f"{a}*{answer} + {b} = {a * answer + b} = {c}*{answer} + {d}."),
            ("conclude", f"x = {answer}."),
        ]


@register
class QuadraticRoots(Family):
    family_id = "quadratic_roots"
    target_type = "equations"
    title = "Larger root of x^2 - s x + q = 0 with distinct positive integer roots"
    knobs = {"root_max": Knob("largest root", 12, 100, 3000, 2, 49999)}
    templates = (
        "The equation x^2 - {s}x + {q} = 0 has two distinct positive integer roots. What is the larger one?",
        "Find the larger root of x^2 - {s}x + {q} = 0.",
        "Let r < t be the two roots of the quadratic x^2 - {s}x + {q} = 0. Find t.",
    )
    reasoning = "Apply the quadratic formula with an exact integer square root of the discriminant."

    def draw(self, rng, k):
        r, t = sorted(rng.sample(range(1, k["root_max"] + 1), 2))
        return {"s": r + t, "q": r * t}

    def solve(self, p):
        s, q = p["s"], p["q"]
        disc = s * s - 4 * q
        root = math.isqrt(disc)
        assert root * root == disc
        return (s + root) // 2

    def brute(self, p):
        return max(x for x in range(1, p["s"] + 1) if x * x - p["s"] * x + p["q"] == 0)

    def code(self, p):
        return f"s, q = {p['s']}, {p['q']}\nimport math\nprint((s + math.isqrt(s * s - 4 * q)) // 2)"

    def outline(self, p, answer):
        s, q = p["s"], p["q"]
        disc = s * s - 4 * q
        return [
            ("parse", f"The quadratic is x^2 - {s}x + {q} = 0."),
            ("apply_theorem", "By the quadratic formula the roots are (s +- sqrt(s^2 - 4q)) / 2."),
            ("compute", f"The discriminant is {s}^2 - 4*{q} = {disc} = {math.isqrt(disc)}^2."),
            ("compute", f"The larger root is ({s} + {math.isqrt(disc)}) / 2 = {answer}."),
            ("verify", f"The roots {s - answer} and {answer} sum to {s} and multiply to {q}."),
            ("conclude", f"The larger root is {answer}."),
        ]
