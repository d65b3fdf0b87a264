"""Functional equations: Cauchy-type equations with a polynomial correction term."""

from __future__ import annotations

from squigglray.families.base import AIMO_MAX, Family, Knob
from squigglray.families.registry import register


def _term(c: int) -> str:
    """c*x*y as it reads after 'f(x) + f(y) ': '+ 3xy', '- xy'."""
    sign = "+" if c > 0 else "-"
    mag = "" if abs(c) == 1 else str(abs(c))
    return f"{sign} {mag}xy"


@register
class FunctionalEquation(Family):
    family_id = "functional_equation"
    target_type = "functional_equations"
    title = "f(x + y) = f(x) + f(y) + c*x*y with f(1) = a; find f(n)"
    knobs = {
        "n_max": Knob("largest argument n", 10, 50, 200, 2, 2000),
        "c_max": Knob("largest |c| in the c*x*y term", 3, 5, 9, 1, 50),
        "a_max": Knob("largest |f(1)|", 10, 50, 200, 1, 1000),
    }
    templates = (
        "A function f from the integers to the integers satisfies f(x + y) = f(x) + f(y) {term} for all "
        "integers x and y, and f(1) = {a}. Find f({n}).",
        "Let f: Z -> Z be such that f(1) = {a} and f(x + y) = f(x) + f(y) {term} for all integers x, y. "
        "What is f({n})?",
        "Suppose f(x + y) = f(x) + f(y) {term} holds for all integers x, y, where f takes integer values and "
        "f(1) = {a}. Compute f({n}).",
    )
    reasoning = "Set x = y = 0 to get f(0) = 0, then y = 1 gives a recurrence that sums to a closed form."

    def draw(self, rng, k):
        for _ in range(1000):
            n = rng.randint(2, k["n_max"])
            c = rng.choice([s * m for m in range(1, k["c_max"] + 1) for s in (1, -1)])
            base = c * n * (n - 1) // 2
            lo = max(-k["a_max"], -(base // n))  # a*n + base >= 0
            hi = min(k["a_max"], (AIMO_MAX - base) // n)  # a*n + base <= 99999
            if lo <= hi:
                return {"a": rng.randint(lo, hi), "c": c, "n": n, "term": _term(c)}
        return {"a": 1, "c": 1, "n": 2, "term": _term(1)}  # only for knob settings with no valid instance

    def solve(self, p):
        a, c, n = p["a"], p["c"], p["n"]
        return a * n + c * n * (n - 1) // 2

    def brute(self, p):
        # f(0) = 0 (from x = y = 0), then f(k + 1) = f(k) + f(1) + c*k (from x = k, y = 1)
        f = 0
        for k in range(p["n"]):
            f = f + p["a"] + p["c"] * k
        return f

    def code(self, p):
        return f"a, c, n = {p['a']}, {p['c']}, {p['n']}\nprint(a * n + c * n * (n - 1) // 2)"

    def outline(self, p, answer):
        a, c, n = p["a"], p["c"], p["n"]
        sc = f"+ {c}" if c > 0 else f"- {-c}"
        cx = _term(c)[:-1]  # '+ 3x', '- x'
        return [
            ("substitute", "x = y = 0 gives f(0) = 2f(0), so f(0) = 0."),
            ("substitute", f"y = 1 gives f(x + 1) = f(x) + f(1) {cx} = f(x) + ({a}) {cx}."),
            ("apply_identity", f"Summing over x = 0, ..., n - 1: f(n) = ({a})n {sc}*n(n - 1)/2."),
            ("compute", f"f({n}) = ({a})*{n} {sc}*{n}*{n - 1}/2 = {answer}."),
            ("verify", f"f(n) = ({a})n {sc}*n(n - 1)/2 satisfies the equation: (x + y)(x + y - 1) - x(x - 1) - y(y - 1) = 2xy."),
            ("conclude", f"f({n}) = {answer}."),
        ]
