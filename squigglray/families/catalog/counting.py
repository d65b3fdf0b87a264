"""Bijections and counting: stars and bars."""

from __future__ import annotations

import math

from squigglray.families.base import Family, Knob
from squigglray.families.registry import register

MOD = 99991  # the largest prime below 10^5; stated in every template


@register
class StarsBars(Family):
    family_id = "stars_bars"
    target_type = "bijections_counting"
    title = "Non-negative integer solutions of x_1 + ... + x_k = n"
    answer_modulus = MOD
    knobs = {
        "vars_max": Knob("largest number of variables k", 3, 5, 12, 2, 50),
        "total_max": Knob("largest total n", 10, 40, 500, 1, 5000),
    }
    templates = (
        "How many solutions in non-negative integers does x_1 + x_2 + ... + x_{k} = {n} have? "
        "Give the answer modulo 99991.",
        "In how many ways can {n} identical balls be placed into {k} distinct boxes, where boxes may stay empty? "
        "Give the answer modulo 99991.",
        "Count the ordered {k}-tuples of non-negative integers whose entries add up to {n}. "
        "Give the answer modulo 99991.",
    )
    reasoning = "By stars and bars the count is C(n + k - 1, k - 1)."

    def draw(self, rng, k):
        return {"n": rng.randint(1, k["total_max"]), "k": rng.randint(2, k["vars_max"])}

    def solve(self, p):
        return math.comb(p["n"] + p["k"] - 1, p["k"] - 1) % MOD

    def brute(self, p):
        # ways[s]: tuples of the first j variables summing to s (j = 0 first), one variable added at a time
        n = p["n"]
        ways = [1] + [0] * n
        for _ in range(p["k"]):
            acc = 0
            for s in range(n + 1):
                acc += ways[s]
                ways[s] = acc
        return ways[n] % MOD

    def code(self, p):
        return f"n, k = {p['n']}, {p['k']}\nimport math\nprint(math.comb(n + k - 1, k - 1) % 99991)"

    def outline(self, p, answer):
        n, k = p["n"], p["k"]
        return [
            ("parse", f"Count non-negative integer {k}-tuples with sum {n}."),
            ("apply_theorem", f"Stars and bars: a tuple is a row of {n} stars and {k - 1} bars, in bijection."),
            ("compute", f"The count is C({n + k - 1}, {k - 1})."),
            ("compute", f"C({n + k - 1}, {k - 1}) mod {MOD} = {answer}."),
            ("conclude", f"The answer modulo {MOD} is {answer}."),
        ]
