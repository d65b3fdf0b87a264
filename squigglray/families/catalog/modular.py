"""Modular arithmetic and invariants: powers modulo m, Chinese remainders."""

from __future__ import annotations

import math

from squigglray.families.base import Family, Knob
from squigglray.families.registry import register


@register
class ModPower(Family):
    family_id = "mod_power"
    target_type = "modular_arithmetic_invariants"
    title = "Remainder of a^e modulo m"
    knobs = {
        "base_max": Knob("largest base", 20, 99, 999, 2, 9999),
        "exp_max": Knob("largest exponent", 30, 500, 99999, 2, 10**9),
        "mod_max": Knob("largest modulus", 50, 1000, 99999, 3, 99999),
    }
    templates = (
        "Find the remainder when {a}^{e} is divided by {m}.",
        "What is {a}^{e} mod {m}?",
        "Compute the last value of {a} raised to the power {e}, reduced modulo {m}.",
    )
    reasoning = "Use fast modular exponentiation."

    def draw(self, rng, k):
        return {
            "a": rng.randint(2, k["base_max"]),
            "e": rng.randint(2, k["exp_max"]),
            "m": rng.randint(3, k["mod_max"]),
        }

    def solve(self, p):
        return pow(p["a"], p["e"], p["m"])

    def brute(self, p):
        r = 1
        for _ in range(p["e"]):
            r = r * p["a"] % p["m"]
        return r

    def code(self, p):
        return f"print(pow({p['a']}, {p['e']}, {p['m']}))"

    def outline(self, p, answer):
        return [
            ("parse", f"We need {p['a']}^{p['e']} modulo {p['m']}."),
            ("apply_identity", "(x*y) mod m = ((x mod m)(y mod m)) mod m, so reduce after each squaring."),
            ("compute", f"Square-and-multiply gives {answer}."),
            ("conclude", f"The remainder is {answer}."),
        ]


@register
class CRT(Family):
    family_id = "crt"
    target_type = "modular_arithmetic_invariants"
    title = "Smallest x with two given remainders (Chinese remainder theorem)"
    knobs = {"mod_max": Knob("largest modulus", 12, 80, 316, 3, 1000)}
    templates = (
        "Find the smallest non-negative integer x such that x leaves remainder {r1} when divided by {m1} "
        "and remainder {r2} when divided by {m2}.",
        "What is the least non-negative integer x with x = {r1} (mod {m1}) and x = {r2} (mod {m2})?",
        "A number x >= 0 satisfies x mod {m1} = {r1} and x mod {m2} = {r2}. Find the smallest such x.",
    )
    reasoning = "Use the Chinese remainder theorem with the inverse of the first modulus."

    def draw(self, rng, k):
        while True:
            m1 = rng.randint(2, k["mod_max"])
            hi = min(k["mod_max"], 100_000 // m1)  # m1*m2 <= 100000 keeps x <= 99999
            if hi < 2:
                continue
            m2 = rng.randint(2, hi)
            if m1 != m2 and math.gcd(m1, m2) == 1:
                break
        return {"r1": rng.randrange(m1), "m1": m1, "r2": rng.randrange(m2), "m2": m2}

    def solve(self, p):
        r1, m1, r2, m2 = p["r1"], p["m1"], p["r2"], p["m2"]
        return r1 + m1 * ((r2 - r1) * pow(m1, -1, m2) % m2)

    def brute(self, p):
        x = 0
        while x % p["m1"] != p["r1"] or x % p["m2"] != p["r2"]:
            x += 1
        return x

    def code(self, p):
        return (
            f"r1, m1, r2, m2 = {p['r1']}, {p['m1']}, {p['r2']}, {p['m2']}\n"
            "print(r1 + m1 * ((r2 - r1) * pow(m1, -1, m2) % m2))"
        )

    def outline(self, p, answer):
        r1, m1, r2, m2 = p["r1"], p["m1"], p["r2"], p["m2"]
        inv = pow(m1, -1, m2)
        t = (r2 - r1) * inv % m2
        return [
            ("parse", f"x = {r1} (mod {m1}), x = {r2} (mod {m2}), and gcd({m1}, {m2}) = 1."),
            ("apply_theorem", f"By the Chinese remainder theorem there is exactly one solution modulo {m1 * m2}."),
            ("introduce_variable", f"Write x = {r1} + {m1}t; then {m1}t = {r2 - r1} (mod {m2})."),
            ("compute", f"The inverse of {m1} modulo {m2} is {inv}, so t = {t} (mod {m2})."),
            ("conclude", f"The smallest non-negative x is {r1} + {m1}*{t} = {answer}."),
        ]
