"""Divisibility: greatest common divisors and divisor counts."""

from __future__ import annotations

import math

from squigglray.families.base import Family, Knob
from squigglray.families.registry import register


def factorize(n: int) -> dict[int, int]:
    """Prime factorization by trial division: {prime: exponent}."""
    out: dict[int, int] = {}
    d = 2
    while d * d <= n:
        while n % d == 0:
            out[d] = out.get(d, 0) + 1
            n //= d
        d += 1 if d == 2 else 2
    if n > 1:
        out[n] = out.get(n, 0) + 1
    return out


def primes_upto(n: int) -> list[int]:
    return [q for q in range(2, n + 1) if all(q % r for r in range(2, math.isqrt(q) + 1))]


def show_factorization(f: dict[int, int]) -> str:
    return " * ".join(f"{q}^{e}" if e > 1 else str(q) for q, e in sorted(f.items())) or "1"


@register
class GcdLcm(Family):
    family_id = "gcd_lcm"
    target_type = "divisibility"
    title = "Greatest common divisor of two numbers"
    knobs = {
        "gcd_max": Knob("largest possible gcd", 20, 500, 99999, 1, 99999),
        "cof_max": Knob("largest cofactor a/gcd and b/gcd", 20, 500, 100000, 2, 10**6),
    }
    templates = (
        "Find the greatest common divisor of {a} and {b}.",
        "What is gcd({a}, {b})?",
        "What is the largest positive integer that divides both {a} and {b}?",
    )
    reasoning = "Apply the Euclidean algorithm."

    def draw(self, rng, k):
        g = rng.randint(1, k["gcd_max"])
        while True:
            u, v = rng.randint(1, k["cof_max"]), rng.randint(1, k["cof_max"])
            if u != v and math.gcd(u, v) == 1:
                return {"a": g * u, "b": g * v}

    def solve(self, p):
        a, b = p["a"], p["b"]
        while b:
            a, b = b, a % b
        return a

    def brute(self, p):
        return max(d for d in range(1, min(p["a"], p["b"]) + 1) if p["a"] % d == 0 and p["b"] % d == 0)

    def code(self, p):
        return f"a, b = {p['a']}, {p['b']}\nwhile b:\n    a, b = b, a % b\nprint(a)"

    def outline(self, p, answer):
        a, b = p["a"], p["b"]
        return [
            ("parse", f"We need gcd({a}, {b})."),
            ("apply_identity", "gcd(a, b) = gcd(b, a mod b), repeated until the remainder is 0."),
            ("compute", f"gcd({a}, {b}) = gcd({b}, {a % b}) = ... = {answer}."),
            ("verify", f"{a} = {answer}*{a // answer} and {b} = {answer}*{b // answer} with coprime cofactors."),
            ("conclude", f"The greatest common divisor is {answer}."),
        ]


@register
class DivisorCount(Family):
    family_id = "divisor_count"
    target_type = "divisibility"
    title = "Number of positive divisors of n"
    knobs = {
        "num_primes": Knob("distinct prime factors of n", 2, 3, 4, 1, 5),
        "exp_max": Knob("largest exponent in n", 2, 4, 6, 1, 8),  # (8 + 1)^5 <= 99999 divisors
        "prime_max": Knob("largest prime factor", 7, 23, 47, 2, 97),
    }
    templates = (
        "How many positive divisors does {n} have?",
        "Find the number of positive integers that divide {n}.",
        "Let n = {n}. Compute the number of positive divisors of n.",
    )
    reasoning = "Factor n and multiply the exponents plus one."

    def draw(self, rng, k):
        pool = primes_upto(k["prime_max"])
        q = 2
        while len(pool) < k["num_primes"]:  # a prime_max too small for num_primes: take the next primes
            q += 1
            if q not in pool and all(q % r for r in pool):
                pool.append(q)
        n = 1
        for q in rng.sample(pool, k["num_primes"]):
            n *= q ** rng.randint(1, k["exp_max"])
        return {"n": n}

    def solve(self, p):
        return math.prod(e + 1 for e in factorize(p["n"]).values())

    def brute(self, p):
        return sum(1 for d in range(1, p["n"] + 1) if p["n"] % d == 0)

    def code(self, p):
        return (
            f"n, c, d = {p['n']}, 1, 2\n"
            "while n > 1:\n"
            "    e = 0\n"
            "    while n % d == 0: n, e = n // d, e + 1\n"
            "    c, d = c * (e + 1), d + 1\n"
            "print(c)"
        )

    def outline(self, p, answer):
        f = factorize(p["n"])
        return [
            ("parse", f"We count the positive divisors of {p['n']}."),
            ("factor", f"{p['n']} = {show_factorization(f)}."),
            ("apply_theorem", "If n = prod p_i^e_i then n has prod (e_i + 1) divisors."),
            ("compute", " * ".join(str(e + 1) for e in f.values()) + f" = {answer}."),
            ("conclude", f"{p['n']} has {answer} positive divisors."),
        ]
