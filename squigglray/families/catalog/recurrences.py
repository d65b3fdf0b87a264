"""Paths and recurrences: climbing stairs with a set of step sizes, lattice paths around a blocked point."""

from __future__ import annotations

import math

from squigglray.families.base import Family, Knob
from squigglray.families.registry import register

MOD = 99991  # the largest prime below 10^5; stated in every stair_climb template


@register
class StairClimb(Family):
    family_id = "stair_climb"
    target_type = "graph_path_recurrence"
    title = "Ways to climb n stairs with step sizes from a set S"
    answer_modulus = MOD
    knobs = {
        "n_max": Knob("largest number of stairs", 10, 40, 1000, 2, 10000),
        "step_max": Knob("largest allowed step size", 3, 5, 9, 2, 20),
        "num_steps": Knob("number of allowed step sizes", 2, 3, 4, 1, 10),
    }
    templates = (
        "A staircase has {n} stairs. Each move climbs {step_text} stairs. In how many different ways "
        "(ordered sequences of moves) can you climb from the bottom to the top? Give the answer modulo 99991.",
        "How many ordered sequences with every term in {{{step_set}}} have sum {n}? Give the answer modulo 99991.",
        "A frog climbs a ladder of {n} rungs, jumping up {step_text} rungs at a time. Count the ways it can "
        "land exactly on rung {n}, starting from the ground. Give the answer modulo 99991.",
    )
    reasoning = "Let w(i) be the number of ways to reach stair i; then w(i) = sum of w(i - s) over allowed steps s."

    def draw(self, rng, k):
        size = min(k["num_steps"], k["step_max"])
        while True:
            steps = sorted(rng.sample(range(1, k["step_max"] + 1), size))
            if math.gcd(*steps) == 1:
                break
        text = str(steps[0]) if size == 1 else ", ".join(map(str, steps[:-1])) + f" or {steps[-1]}"
        return {
            "n": rng.randint(2, k["n_max"]),
            "steps": steps,
            "step_text": text,
            "step_set": ", ".join(map(str, steps)),
        }

    def solve(self, p):
        n, steps = p["n"], p["steps"]
        w = [1] + [0] * n
        for i in range(1, n + 1):
            w[i] = sum(w[i - s] for s in steps if s <= i) % MOD
        return w[n]

    def brute(self, p):
        steps = p["steps"]

        def sequences(left):  # every ordered sequence of steps summing to `left`
            if left == 0:
                yield ()
            for s in steps:
                if s <= left:
                    for rest in sequences(left - s):
                        yield (s, *rest)

        return sum(1 for _ in sequences(p["n"])) % MOD

    def code(self, p):
        return (
            f"n, S = {p['n']}, {p['steps']}\n"
            "w = [1] + [0] * n\n"
            "for i in range(1, n + 1):\n"
            "    w[i] = sum(w[i - s] for s in S if s <= i) % 99991\n"
            "print(w[n])"
        )

    def outline(self, p, answer):
        n, steps = p["n"], p["steps"]
        rec = " + ".join(f"w(i-{s})" for s in steps)
        return [
            ("parse", f"Count ordered sequences of steps from {{{p['step_set']}}} with sum {n}."),
            ("case_split", f"Split by the last step s in {{{p['step_set']}}}."),
            ("apply_identity", f"w(0) = 1 and w(i) = {rec}, with w(j) = 0 for j < 0."),
            ("compute", f"Iterating up to i = {n} modulo {MOD} gives w({n}) = {answer}."),
            ("conclude", f"The number of ways modulo {MOD} is {answer}."),
        ]


@register
class GridPaths(Family):
    family_id = "grid_paths"
    target_type = "graph_path_recurrence"
    title = "Monotone lattice paths from (0,0) to (w,h) avoiding one point"
    knobs = {"size_max": Knob("largest width and height of the grid", 4, 7, 9, 1, 9)}
    templates = (
        "How many lattice paths from (0, 0) to ({w}, {h}), using unit steps right or up, do not pass "
        "through the point ({a}, {b})?",
        "A walker moves from (0, 0) to ({w}, {h}) one unit right or one unit up at a time. The point "
        "({a}, {b}) is blocked. How many paths are there?",
        "Count the monotone (right/up) lattice paths from the origin to ({w}, {h}) that avoid ({a}, {b}).",
    )
    reasoning = "Count all paths with binomial coefficients and subtract those through the blocked point."

    def draw(self, rng, k):
        w, h = rng.randint(1, k["size_max"]), rng.randint(1, k["size_max"])
        while True:
            a, b = rng.randint(0, w), rng.randint(0, h)
            if (a, b) not in ((0, 0), (w, h)):
                return {"w": w, "h": h, "a": a, "b": b}

    def solve(self, p):
        w, h, a, b = p["w"], p["h"], p["a"], p["b"]
        return math.comb(w + h, w) - math.comb(a + b, a) * math.comb(w + h - a - b, w - a)

    def brute(self, p):
        w, h = p["w"], p["h"]
        ways = [[0] * (h + 1) for _ in range(w + 1)]
        for x in range(w + 1):
            for y in range(h + 1):
                if (x, y) == (p["a"], p["b"]):
                    ways[x][y] = 0
                elif (x, y) == (0, 0):
                    ways[x][y] = 1
                else:
                    ways[x][y] = (ways[x - 1][y] if x else 0) + (ways[x][y - 1] if y else 0)
        return ways[w][h]

    def code(self, p):
        return (
            f"w, h, a, b = {p['w']}, {p['h']}, {p['a']}, {p['b']}\n"
            "import math\n"
            "print(math.comb(w + h, w) - math.comb(a + b, a) * math.comb(w + h - a - b, w - a))"
        )

    def outline(self, p, answer):
        w, h, a, b = p["w"], p["h"], p["a"], p["b"]
        total = math.comb(w + h, w)
        first, second = math.comb(a + b, a), math.comb(w + h - a - b, w - a)
        return [
            ("parse", f"Right/up paths from (0, 0) to ({w}, {h}) avoiding ({a}, {b})."),
            ("apply_identity", f"A path is a word of {w} R's and {h} U's, so there are C({w + h}, {w}) = {total} in all."),
            ("case_split", f"Paths through ({a}, {b}): C({a + b}, {a}) * C({w + h - a - b}, {w - a}) = {first}*{second}."),
            ("compute", f"{total} - {first * second} = {answer}."),
            ("conclude", f"There are {answer} paths."),
        ]
