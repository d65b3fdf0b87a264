"""Plain arithmetic: evaluate an expression with integer operands."""

from __future__ import annotations

from squigglray.families.base import Family, Knob
from squigglray.families.registry import register


@register
class Arithmetic(Family):
    family_id = "arithmetic"
    target_type = "arithmetic"
    title = "Evaluate a*b + c*d - e"
    knobs = {"digits": Knob("digits of each operand", 1, 2, 3, 1, 3)}
    templates = (
        "Compute {a} * {b} + {c} * {d} - {e}.",
        "What is the value of {a} times {b}, plus {c} times {d}, minus {e}?",
        "Evaluate the expression {a}*{b} + {c}*{d} - {e}.",
    )
    reasoning = "Evaluate the products first, then add and subtract."

    def draw(self, rng, k):
        hi = 10 ** k["digits"] - 1
        lo = 10 ** (k["digits"] - 1) if k["digits"] > 1 else 1
        a, b, c, d = (rng.randint(lo, hi) for _ in range(4))
        total = a * b + c * d
        e = rng.randint(max(0, total - 99_999), total)  # keeps the answer in [0, 99999]
        return {"a": a, "b": b, "c": c, "d": d, "e": e}

    def solve(self, p):
        return p["a"] * p["b"] + p["c"] * p["d"] - p["e"]

    def brute(self, p):
        # repeated addition and subtraction, no multiplication
        total = 0
        for _ in range(p["b"]):
            total += p["a"]
        for _ in range(p["d"]):
            total += p["c"]
        for _ in range(p["e"]):
            total -= 1
        return total

    def code(self, p):
        return f"print({p['a']} * {p['b']} + {p['c']} * {p['d']} - {p['e']})"

    def outline(self, p, answer):
        ab, cd = p["a"] * p["b"], p["c"] * p["d"]
        return [
            ("parse", "Read off the five operands."),
            ("compute", f"{p['a']}*{p['b']} = {ab} and {p['c']}*{p['d']} = {cd}."),
            ("compute", f"{ab} + {cd} - {p['e']} = {answer}."),
            ("conclude", f"The value is {answer}."),
        ]
