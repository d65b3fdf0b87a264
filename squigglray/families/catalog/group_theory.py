"""Discrete logarithms, multiplicative orders and element orders in cyclic groups."""

from __future__ import annotations

import math

from squigglray.families.base import Family, Knob
from squigglray.families.catalog.divisibility import factorize, show_factorization
from squigglray.families.registry import register


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def phi(n: int) -> int:
    out = n
    for q in factorize(n):
        out = out // q * (q - 1)
    return out


def carmichael(n: int) -> int:
    """lambda(n): the exponent of the unit group modulo n."""
    out = 1
    for q, e in factorize(n).items():
        lam = 2 ** (e - 2) if q == 2 and e >= 3 else (q - 1) * q ** (e - 1)
        out = out * lam // math.gcd(out, lam)
    return out


def order_mod(a: int, n: int) -> int:
    """Multiplicative order of a modulo n, by dividing lambda(n) down by its prime factors."""
    t = carmichael(n)
    for q in factorize(t):
        while t % q == 0 and pow(a, t // q, n) == 1:
            t //= q
    return t


@register
class DiscreteLog(Family):
    family_id = "discrete_log"
    target_type = "discrete_log_order_cyclic"
    title = "Smallest k >= 1 with g^k = h (mod p)"
    knobs = {"p_max": Knob("largest prime modulus", 50, 1000, 99999, 5, 99999)}
    templates = (
        "Find the smallest positive integer k such that {g}^k = {h} (mod {p}).",
        "Let p = {p}, a prime. What is the least positive integer k for which {g}^k leaves remainder {h} "
        "when divided by p?",
        "Solve the discrete logarithm problem: find the smallest k >= 1 with {g}^k mod {p} = {h}.",
    )
    reasoning = "Solve the discrete logarithm by stepping through the powers of g modulo p."

    def draw(self, rng, k):
        while True:
            p = rng.randint(5, k["p_max"])
            if is_prime(p):
                break
        g = rng.randint(2, p - 2)
        k0 = rng.randint(1, p - 2)
        return {"p": p, "g": g, "h": pow(g, k0, p)}

    def solve(self, p):
        # Baby-step giant-step for the smallest j >= 0 with g^j = h * g^(-1); then k = j + 1.
        mod, g = p["p"], p["g"]
        target = p["h"] * pow(g, -1, mod) % mod
        m = math.isqrt(mod - 1) + 1
        baby: dict[int, int] = {}
        x = 1
        for j in range(m):
            baby.setdefault(x, j)
            x = x * g % mod
        giant = pow(g, -m, mod)
        y = target
        for i in range(m + 1):
            if y in baby:
                return i * m + baby[y] + 1
            y = y * giant % mod
        raise AssertionError(f"{p['h']} is not a power of {g} modulo {mod}")

    def brute(self, p):
        return next(k for k in range(1, p["p"]) if pow(p["g"], k, p["p"]) == p["h"])

    def code(self, p):
        return (
            f"p, g, h = {p['p']}, {p['g']}, {p['h']}\n"
            "k, x = 1, g % p\n"
            "while x != h: k, x = k + 1, x * g % p\n"
            "print(k)"
        )

    def outline(self, p, answer):
        mod, g, h = p["p"], p["g"], p["h"]
        return [
            ("parse", f"We need the least k >= 1 with {g}^k = {h} (mod {mod})."),
            ("apply_theorem", f"By Fermat, {g}^{mod - 1} = 1 (mod {mod}), so k <= {mod - 1}."),
            ("compute", f"Step through {g}^1, {g}^2, ... modulo {mod} (or baby-step giant-step) until {h} appears."),
            ("verify", f"{g}^{answer} mod {mod} = {pow(g, answer, mod)}."),
            ("conclude", f"k = {answer}."),
        ]


@register
class MultOrder(Family):
    family_id = "mult_order"
    target_type = "discrete_log_order_cyclic"
    title = "Multiplicative order of a modulo n"
    knobs = {"n_max": Knob("largest modulus", 50, 2000, 99999, 3, 99999)}
    templates = (
        "Find the multiplicative order of {a} modulo {n}.",
        "What is the smallest positive integer k such that {a}^k = 1 (mod {n})?",
        "Let n = {n}. Find the least k >= 1 for which {a}^k - 1 is divisible by n.",
    )
    reasoning = "The order divides the Carmichael function of n; find the smallest power of a that is 1."

    def draw(self, rng, k):
        n = rng.randint(3, k["n_max"])
        while True:
            a = rng.randint(2, n - 1)
            if math.gcd(a, n) == 1:
                return {"a": a, "n": n}

    def solve(self, p):
        return order_mod(p["a"], p["n"])

    def brute(self, p):
        return next(k for k in range(1, p["n"]) if pow(p["a"], k, p["n"]) == 1)

    def code(self, p):
        return (
            f"a, n = {p['a']}, {p['n']}\n"
            "k, x = 1, a % n\n"
            "while x != 1: k, x = k + 1, x * a % n\n"
            "print(k)"
        )

    def outline(self, p, answer):
        a, n = p["a"], p["n"]
        lam = carmichael(n)
        return [
            ("parse", f"gcd({a}, {n}) = 1, so {a} is a unit modulo {n}."),
            ("factor", f"{n} = {show_factorization(factorize(n))}, so phi({n}) = {phi(n)} and lambda({n}) = {lam}."),
            ("apply_theorem", f"By Lagrange's theorem the order of {a} divides lambda({n}) = {lam}."),
            ("compute", f"Test the divisors of {lam}: the smallest k with {a}^k = 1 (mod {n}) is {answer}."),
            ("conclude", f"The order of {a} modulo {n} is {answer}."),
        ]


@register
class CyclicElements(Family):
    family_id = "cyclic_elements"
    target_type = "discrete_log_order_cyclic"
    title = "Number of elements of order d in the cyclic group Z/nZ"
    knobs = {"n_max": Knob("largest group order n", 60, 3000, 99999, 2, 99999)}
    templates = (
        "How many elements of the additive group Z/{n}Z have order exactly {d}?",
        "In a cyclic group of order {n}, how many elements have order {d}?",
        "Count the residues x in {{0, 1, ..., {nm1}}} whose order in the group of integers modulo {n} under "
        "addition is exactly {d}.",
    )
    reasoning = "In a cyclic group, the elements of order d are the generators of its subgroup of order d: phi(d) of them."

    def draw(self, rng, k):
        n = rng.randint(2, k["n_max"])
        divisors = [d for d in range(2, n + 1) if n % d == 0]
        return {"n": n, "d": rng.choice(divisors), "nm1": n - 1}

    def solve(self, p):
        return phi(p["d"])

    def brute(self, p):
        n = p["n"]
        return sum(1 for x in range(n) if n // math.gcd(x, n) == p["d"])

    def code(self, p):
        return (
            f"n, d = {p['n']}, {p['d']}\n"
            "import math\n"
            "print(sum(1 for x in range(1, d + 1) if math.gcd(x, d) == 1))"
        )

    def outline(self, p, answer):
        n, d = p["n"], p["d"]
        return [
            ("parse", f"{d} divides {n}, so Z/{n}Z has a unique subgroup of order {d}."),
            ("apply_theorem", f"x has order {n}/gcd(x, {n}); order {d} means x lies in that subgroup and generates it."),
            ("apply_identity", f"A cyclic group of order {d} has phi({d}) generators."),
            ("factor", f"{d} = {show_factorization(factorize(d))}, so phi({d}) = {answer}."),
            ("conclude", f"There are {answer} elements of order {d}."),
        ]
