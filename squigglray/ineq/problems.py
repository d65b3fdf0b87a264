"""The inequality problem and proof contract shared by the generator, verifier, judges and SFT.

Expressions are SymPy-parsable strings in Python syntax (``a**2 + b**2``, ``sqrt(a*b)``,
``Rational(1, 3)``); ``to_latex`` renders them for prompts. A claim is ``lhs rel rhs`` over
``variables`` in a ``domain`` (positive, nonnegative or real), optionally on the surface
``constraint = 0``. A proof is a chain of steps ``e0 rel1 e1 rel2 e2 ...`` whose first expression
is the claim's lhs and whose last is its rhs; each step is an exact rewrite (``=``), a named lemma
instance (``lemma`` with its ``args``), or a plain inequality to be checked on its own.

Variants (IneqMath, Stanford 2025): ``proof`` (prove the claim), ``bound`` (find the best constant
``answer`` such that ``lhs rel answer * bound_expr``... stated in ``question``) and ``relation``
(choose the relation between two sides among ``options``; ``answer`` is the option letter).
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Domain = Literal["positive", "nonnegative", "real"]
Rel = Literal["=", ">=", "<=", ">", "<"]
Variant = Literal["proof", "bound", "relation"]

# Named lemmas a step may cite; the verifier checks that the step is an instance of the pattern.
LEMMAS = {
    "am_gm": "(x1+...+xn)/n >= (x1*...*xn)**(1/n) for x_i >= 0; args: terms [x1..xn]",
    "weighted_am_gm": "w1*x1+...+wn*xn >= x1**w1*...*xn**wn for x_i >= 0, w_i > 0, sum w_i = 1; "
                      "args: terms, weights",
    "cauchy_schwarz": "(x1**2+...+xn**2)*(y1**2+...+yn**2) >= (x1*y1+...+xn*yn)**2; args: xs, ys",
    "titu": "x1**2/y1+...+xn**2/yn >= (x1+...+xn)**2/(y1+...+yn) for y_i > 0; args: xs, ys",
    "square_nonneg": "sum of c_i * (p_i)**2 with c_i >= 0 is >= 0; args: squares [p_i], coeffs [c_i]",
    "constraint": "rewrite using the problem's constraint (an equality on the constraint surface)",
    "schur": "x**t*(x-y)*(x-z) + y**t*(y-x)*(y-z) + z**t*(z-x)*(z-y) >= 0 for x, y, z >= 0 and a number t > 0; "
             "args: terms [x, y, z], t [t]",
    "power_mean": "M_p(x1..xn) >= M_q(x1..xn) for numbers p > q, M_r = ((x1**r+...+xn**r)/n)**(1/r), "
                  "M_0 = (x1*...*xn)**(1/n); x_i >= 0 (x_i > 0 when q <= 0; any reals for p = 2, q = 1); "
                  "args: terms, exps [p, q]",
    "chebyshev": "x1*y1+...+xn*yn >= (x1+...+xn)*(y1+...+yn)/n for similarly ordered sequences: "
                 "(x_i-x_j)*(y_i-y_j) >= 0 for all i < j (the side conditions); args: xs, ys",
    "rearrangement": "x1*y1+...+xn*yn >= x1*z1+...+xn*zn where z is a permutation of y and x, y are similarly "
                     "ordered ((x_i-x_j)*(y_i-y_j) >= 0 for all i < j); args: xs, ys, zs",
    "holder": "(x1**3+...+xn**3)*(y1**3+...+yn**3)*(z1**3+...+zn**3) >= (x1*y1*z1+...+xn*yn*zn)**3 for "
              "x_i, y_i, z_i >= 0; args: xs, ys, zs",
}


@dataclass(frozen=True)
class Step:
    rel: Rel
    rhs: str  # the chain's next expression; the step's lhs is the previous expression
    lemma: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    why: str = ""  # a short human justification

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Problem:
    problem_id: str
    family: str
    variant: Variant
    variables: tuple[str, ...]
    domain: Domain
    lhs: str
    rel: Rel
    rhs: str
    constraint: str | None  # expression that is 0 on the allowed surface, e.g. "a + b + c - 3"
    equality: dict[str, str] | None  # a point where lhs == rhs (None: strict or never equal)
    equality_text: str  # e.g. "a = b = c"
    statement: str  # the LaTeX problem text shown to a model
    proof: tuple[Step, ...]  # reference proof, from lhs to rhs
    question: str = ""  # bound/relation variants: what is asked
    answer: str = ""  # bound: the best constant (SymPy string); relation: the option letter
    options: tuple[str, ...] = ()
    knobs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["proof"] = [s.to_dict() for s in self.proof]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Problem:
        d = dict(d)
        d["proof"] = tuple(Step(**s) for s in d["proof"])
        d["variables"] = tuple(d["variables"])
        d["options"] = tuple(d.get("options") or ())
        return cls(**d)

    def claim_key(self) -> str:
        """Identity of the mathematical claim (dedup): family-independent."""
        body = json.dumps([self.variant, sorted(self.variables), self.domain, self.lhs, self.rel, self.rhs,
                           self.constraint, self.question], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def to_latex(expr: str) -> str:
    """LaTeX of an expression string. The generator's own expressions (+ - * / **, sqrt, Rational,
    numbers, names) are rendered from their syntax tree as written; anything else goes through SymPy.
    (SymPy's parse + latex costs ~10 ms an expression: at n_per_family=2500 over every family that
    was most of the generation time, ~90k statements.)"""
    try:
        return _tex(ast.parse(expr, mode="eval").body)[0]
    except (ValueError, SyntaxError, RecursionError):
        import sympy as sp

        return sp.latex(sp.sympify(expr))


def _tex(node) -> tuple[str, int]:
    """(LaTeX, precedence): 1 sum, 2 product, 3 power/atom."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return str(node.value), 3
    if isinstance(node, ast.Name):
        return node.id, 3
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner, prec = _tex(node.operand)
        return "-" + (inner if prec >= 2 else rf"\left({inner}\right)"), 1
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        if node.func.id == "sqrt" and len(node.args) == 1:
            return rf"\sqrt{{{_tex(node.args[0])[0]}}}", 3
        if node.func.id == "Rational" and len(node.args) == 2:
            return rf"\frac{{{_tex(node.args[0])[0]}}}{{{_tex(node.args[1])[0]}}}", 2
    if isinstance(node, ast.BinOp):
        (lt, lp), (rt, rp) = _tex(node.left), _tex(node.right)
        if isinstance(node.op, ast.Add):
            return f"{lt} + {rt}" if not rt.startswith("-") else f"{lt} + \\left({rt}\\right)", 1
        if isinstance(node.op, ast.Sub):
            return f"{lt} - " + (rt if rp >= 2 and not rt.startswith("-") else rf"\left({rt}\right)"), 1
        if isinstance(node.op, ast.Div):
            return rf"\frac{{{lt}}}{{{rt}}}", 2
        if isinstance(node.op, ast.Mult):
            lt = lt if lp >= 2 else rf"\left({lt}\right)"
            rt = rt if rp >= 2 and not rt.startswith("-") else rf"\left({rt}\right)"
            sep = r" \cdot " if rt[:1].isdigit() or rt.startswith(r"\frac") and lt[-1:].isdigit() else " "
            return f"{lt}{sep}{rt}", 2
        if isinstance(node.op, ast.Pow):
            r = node.right
            if isinstance(r, ast.BinOp) and isinstance(r.op, ast.Div) and isinstance(r.left, ast.Constant) \
                    and isinstance(r.right, ast.Constant) and r.left.value == 1 and isinstance(r.right.value, int):
                root = "" if r.right.value == 2 else f"[{r.right.value}]"
                return rf"\sqrt{root}{{{lt}}}", 3
            base = lt if lp >= 3 and not lt.startswith(r"\frac") else rf"\left({lt}\right)"
            return f"{base}^{{{rt}}}", 3
    raise ValueError("not a generator expression")
