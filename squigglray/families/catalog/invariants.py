"""Invariants and monovariants: a quantity that a board operation leaves unchanged."""

from __future__ import annotations

import random

from squigglray.families.base import Family, Knob
from squigglray.families.registry import register

MOD = 99991  # the largest prime below 10^5; stated in every template


@register
class BoardInvariant(Family):
    family_id = "board_invariant"
    target_type = "invariant_monovariant"
    title = "Merge a, b into a + b + ab on a board of 1..n; the last number mod M"
    answer_modulus = MOD
    knobs = {"n_max": Knob("largest n (numbers 1..n on the board)", 40, 300, 5000, 2, 50000)}
    templates = (
        "The numbers 1, 2, ..., {n} are written on a board. A move erases two numbers a and b and writes "
        "a + b + ab in their place. After {nm1} moves a single number remains. Find its remainder when "
        "divided by 99991.",
        "Starting with the integers 1 through {n} on a blackboard, we repeatedly replace two of them, x and y, "
        "by x + y + xy until one number is left. What is that number modulo 99991?",
        "On a board are the numbers 1 to {n}. Any two numbers a, b may be replaced by ab + a + b. When only one "
        "number N is left, what is N mod 99991?",
    )
    reasoning = "The product of (x + 1) over the board is invariant, so the last number is (n + 1)! - 1."

    def draw(self, rng, k):
        n = rng.randint(2, k["n_max"])
        return {"n": n, "nm1": n - 1}

    def solve(self, p):
        r = 1
        for k in range(2, p["n"] + 2):
            r = r * k % MOD
        return (r - 1) % MOD

    def brute(self, p):
        # Simulate the merges in a random (seeded) order with exact integers.
        rng = random.Random(p["n"] * 7919 + 17)
        board = list(range(1, p["n"] + 1))
        while len(board) > 1:
            i, j = sorted(rng.sample(range(len(board)), 2))
            b = board.pop(j)
            a = board.pop(i)
            board.append(a + b + a * b)
        return board[0] % MOD

    def code(self, p):
        return (
            f"n = {p['n']}\n"
            "r = 1\n"
            "for k in range(2, n + 2): r = r * k % 99991\n"
            "print((r - 1) % 99991)"
        )

    def outline(self, p, answer):
        n = p["n"]
        return [
            ("introduce_variable", "Let P be the product of (x + 1) over all numbers x on the board."),
            ("apply_identity", "(a + b + ab) + 1 = (a + 1)(b + 1), so a move does not change P."),
            ("compute", f"Initially P = 2 * 3 * ... * {n + 1} = {n + 1}!; at the end P = N + 1."),
            ("compute", f"N = {n + 1}! - 1 = {answer} (mod {MOD})."),
            ("conclude", f"The last number leaves remainder {answer} modulo {MOD}."),
        ]
