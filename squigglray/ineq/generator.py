"""Families of easy olympiad inequalities, each drawn with a reference proof in checkable form.

Every draw is a claim (lhs rel rhs over a domain, maybe on a constraint surface), its equality
case, a LaTeX statement, and a chain proof whose steps are exact rewrites or named lemma instances
(see `problems.LEMMAS`), so the mechanical verifier can check every reference proof and every
model-written one the same way. The families of issue 21 (SOS shapes, power means, Schur, ...)
live in `techniques`. Knobs: variable names, number of variables, powers, weights,
scales, the constraint's sum. Variants (IneqMath): `bound` asks for the best constant, `relation`
for the relation between the two sides (sides swapped at random, so both directions occur).

    generate(["am_gm", "nesbitt"], n_per_family=100, seed=0, variants={"proof": 0.6, "bound": 0.2, "relation": 0.2})
"""

from __future__ import annotations

import random
from dataclasses import replace
from fractions import Fraction
from typing import Callable

from squigglray.ineq.draws import NAMES, Draw, all_equal as _all_equal, frac as _frac, pick_vars as _vars
from squigglray.ineq.draws import scaled as _scaled
from squigglray.ineq.problems import Problem, Step, to_latex
from squigglray.ineq.techniques import TECHNIQUES

GENERATOR_VERSION = 2  # bump when a family's draws change: the ineq job keys its problems step on it
RELATION_OPTIONS = ("L <= R", "L >= R", "L = R", "L < R", "L > R", "none of these")
_LETTERS = "ABCDEF"
_FLIP = {">=": "<=", "<=": ">=", ">": "<", "<": ">", "=": "="}


# ---- families ------------------------------------------------------------------------------------


def am_gm(rng: random.Random) -> Draw:
    """x1**p + ... + xn**p >= n*(x1*...*xn)**(p/n); or the reciprocal-cycle form a/b + b/c + c/a >= n."""
    n = rng.randint(2, 5)
    vs = _vars(rng, n)
    if rng.random() < 0.3:
        terms = [f"{vs[i]}/{vs[(i + 1) % n]}" for i in range(n)]
        steps = [Step(">=", f"{n}*({'*'.join(f'({t})' for t in terms)})**(1/{n})", "am_gm", {"terms": terms}),
                 Step("=", str(n))]
        eq, eq_text = _all_equal(vs)
        return Draw(vs, "positive", " + ".join(terms), ">=", str(n), steps, eq, eq_text,
                    bound=(str(n), "1"), knobs={"n": n, "form": "cycle"})
    p = rng.randint(1, 3)
    terms = [v if p == 1 else f"{v}**{p}" for v in vs]
    prod = "*".join(vs)
    rhs = f"{n}*({prod})**({_frac(Fraction(p, n))})" if p % n else f"{n}*{prod}"
    steps = [Step(">=", f"{n}*({'*'.join(terms)})**(1/{n})", "am_gm", {"terms": terms}), Step("=", rhs)]
    eq, eq_text = _all_equal(vs)
    return Draw(vs, "positive", " + ".join(terms), ">=", rhs, steps, eq, eq_text,
                bound=(str(n), rhs[len(str(n)) + 1:]), knobs={"n": n, "p": p})


def reciprocal(rng: random.Random) -> Draw:
    """x + k**2/x >= 2*k (AM-GM on two terms)."""
    k = rng.randint(1, 6)
    (x,) = _vars(rng, 1)
    t2 = f"{k * k}/{x}"
    steps = [Step(">=", f"2*sqrt({x}*{t2})", "am_gm", {"terms": [x, t2]}), Step("=", str(2 * k))]
    return Draw([x], "positive", f"{x} + {t2}", ">=", str(2 * k), steps, {x: str(k)}, f"{x} = {k}",
                bound=(str(2 * k), "1"), knobs={"k": k})


def weighted_am_gm(rng: random.Random) -> Draw:
    """m*a + n*b >= (m+n)*(a**m*b**n)**(1/(m+n)), from weights m/(m+n), n/(m+n)."""
    m, n = rng.sample(range(1, 5), 2)
    a, b = _vars(rng, 2)
    s = m + n
    wa, wb = Fraction(m, s), Fraction(n, s)
    rhs = f"{s}*({a}**{m}*{b}**{n})**(1/{s})"
    steps = [Step(">=", f"{s}*({a}**({_frac(wa)})*{b}**({_frac(wb)}))", "weighted_am_gm",
                  {"terms": [a, b], "weights": [_frac(wa), _frac(wb)]}),
             Step("=", rhs)]
    eq, eq_text = _all_equal([a, b])
    return Draw([a, b], "positive", f"{m}*{a} + {n}*{b}", ">=", rhs, steps, eq, eq_text,
                bound=(str(s), rhs[len(str(s)) + 1:]), knobs={"m": m, "n": n})


def titu(rng: random.Random) -> Draw:
    """k1**2/x1 + ... >= (k1+...)**2/(x1+...) (Engel form of Cauchy-Schwarz); 1/a + 1/b + 1/c >= 9/(a+b+c)."""
    n = rng.randint(2, 4)
    vs = _vars(rng, n)
    ks = [rng.randint(1, 3) for _ in range(n)]
    lhs = " + ".join(f"{k * k}/{v}" for k, v in zip(ks, vs))
    total = sum(ks)
    rhs = f"{total * total}/({' + '.join(vs)})"
    steps = [Step(">=", f"({' + '.join(str(k) for k in ks)})**2/({' + '.join(vs)})", "titu",
                  {"xs": [str(k) for k in ks], "ys": vs}),
             Step("=", rhs)]
    # Equality when v_i proportional to k_i.
    eq = {v: str(k) for k, v in zip(ks, vs)}
    eq_text = " : ".join(vs) + " = " + " : ".join(str(k) for k in ks)
    return Draw(vs, "positive", lhs, ">=", rhs, steps, eq, eq_text, bound=(str(total * total), f"1/({' + '.join(vs)})"),
                knobs={"n": n, "ks": ks})


def cauchy_schwarz(rng: random.Random) -> Draw:
    """(a**2 + b**2)*(x**2 + y**2) >= (a*x + b*y)**2 over the reals."""
    n = rng.randint(2, 3)
    names = rng.choice(NAMES)
    xs, ys = list(names[:n]), list(names[3:3 + n])
    lhs = f"({' + '.join(f'{x}**2' for x in xs)})*({' + '.join(f'{y}**2' for y in ys)})"
    rhs = f"({' + '.join(f'{x}*{y}' for x, y in zip(xs, ys))})**2"
    steps = [Step(">=", rhs, "cauchy_schwarz", {"xs": xs, "ys": ys})]
    eq = {**{x: "1" for x in xs}, **{y: "2" for y in ys}}
    eq_text = f"{' : '.join(xs)} = {' : '.join(ys)}"  # the two vectors are proportional
    return Draw(xs + ys, "real", lhs, ">=", rhs, steps, eq, eq_text, knobs={"n": n})


def nesbitt(rng: random.Random) -> Draw:
    """a/(b+c) + b/(c+a) + c/(a+b) >= 3/2 through Titu and (a+b+c)**2 - 3*(ab+bc+ca) as a sum of squares."""
    a, b, c = _vars(rng, 3)
    k = rng.choice([1, 1, 2, 3])
    lhs_terms = [(a, f"{b} + {c}"), (b, f"{c} + {a}"), (c, f"{a} + {b}")]
    lhs = " + ".join(f"{k}*{x}/({d})" if k > 1 else f"{x}/({d})" for x, d in lhs_terms)
    c_total = Fraction(3 * k, 2)
    sq = [(x, f"{x}*({d})") for x, d in lhs_terms]
    rewritten = " + ".join(f"{k}*{x}**2/({d})" if k > 1 else f"{x}**2/({d})" for x, d in sq)
    xs = [f"sqrt({k})*{x}" if k > 1 else x for x, _ in sq]
    s, pq = f"{a} + {b} + {c}", f"{a}*{b} + {b}*{c} + {c}*{a}"
    titu_rhs = f"{k}*({s})**2/(2*({pq}))" if k > 1 else f"({s})**2/(2*({pq}))"
    # (a+b+c)**2 - 3*(ab+bc+ca) = ((a-b)**2 + (b-c)**2 + (c-a)**2)/2, written out: the last step drops it
    tail = _scaled(k, f"(({a} - {b})**2 + ({b} - {c})**2 + ({c} - {a})**2)/(4*({pq}))")
    steps = [Step("=", rewritten), Step(">=", titu_rhs, "titu", {"xs": xs, "ys": [d for _, d in sq]}),
             Step("=", f"{_frac(c_total)} + {tail}"), Step(">=", _frac(c_total))]
    eq, eq_text = _all_equal([a, b, c])
    return Draw([a, b, c], "positive", lhs, ">=", _frac(c_total), steps, eq, eq_text,
                bound=(_frac(c_total), "1"), knobs={"k": k})


def sos(rng: random.Random) -> Draw:
    """Sum-of-squares rewrites: a**2 + b**2 >= 2*a*b, a**2 + b**2 + c**2 >= ab + bc + ca, QM >= AM squared."""
    form = rng.choice(["two", "three", "qm"])
    k = rng.choice([1, 1, 2, 3])
    if form == "two":
        a, b = _vars(rng, 2)
        vs, base_l, base_r, squares, coeff = [a, b], f"{a}**2 + {b}**2", f"2*{a}*{b}", [f"{a} - {b}"], Fraction(1)
    else:
        a, b, c = _vars(rng, 3)
        vs, squares = [a, b, c], [f"{a} - {b}", f"{b} - {c}", f"{c} - {a}"]
        base_l = f"{a}**2 + {b}**2 + {c}**2"
        if form == "three":
            base_r, coeff = f"{a}*{b} + {b}*{c} + {c}*{a}", Fraction(1, 2)
        else:
            base_r, coeff = f"({a} + {b} + {c})**2/3", Fraction(1, 3)
    lhs, rhs = _scaled(k, base_l), _scaled(k, base_r)
    coeffs = [_frac(coeff * k)] * len(squares)
    tail = " + ".join(f"({q})**2" for q in squares)
    total = _frac(coeff * k)
    rewrite = f"{rhs} + {total}*({tail})" if total != "1" else f"{rhs} + {tail}"
    steps = [Step("=", rewrite), Step(">=", rhs, "square_nonneg", {"squares": squares, "coeffs": coeffs})]
    eq, eq_text = _all_equal(vs)
    coef = 2 * k if form == "two" else None
    bound = (str(coef), f"{a}*{b}") if coef else None
    return Draw(vs, "real", lhs, ">=", rhs, steps, eq, eq_text, bound=bound, knobs={"form": form, "k": k})


def constrained(rng: random.Random) -> Draw:
    """On a + b + c = s (positive): ab+bc+ca <= s**2/3, a**2+b**2+c**2 >= s**2/3, 1/a+1/b+1/c >= 9/s;
    on a + b = s: ab <= s**2/4."""
    form = rng.choice(["pq", "squares", "recip", "two"])
    s = rng.choice([1, 2, 3, 3, 6])
    if form == "two":
        a, b = _vars(rng, 2)
        vs, cons = [a, b], f"{a} + {b} - {s}"
        value = Fraction(s * s, 4)
        steps = [Step("<=", f"({a} + {b})**2/4", "square_nonneg", {"squares": [f"{a} - {b}"], "coeffs": ["1/4"]}),
                 Step("=", _frac(value), "constraint")]
        lhs, rel = f"{a}*{b}", "<="
    else:
        a, b, c = _vars(rng, 3)
        vs, cons = [a, b, c], f"{a} + {b} + {c} - {s}"
        squares = [f"{a} - {b}", f"{b} - {c}", f"{c} - {a}"]
        if form == "pq":
            value = Fraction(s * s, 3)
            lhs, rel = f"{a}*{b} + {b}*{c} + {c}*{a}", "<="
            steps = [Step("<=", f"({a} + {b} + {c})**2/3", "square_nonneg", {"squares": squares, "coeffs": ["1/6"] * 3}),
                     Step("=", _frac(value), "constraint")]
        elif form == "squares":
            value = Fraction(s * s, 3)
            lhs, rel = f"{a}**2 + {b}**2 + {c}**2", ">="
            steps = [Step(">=", f"({a} + {b} + {c})**2/3", "square_nonneg", {"squares": squares, "coeffs": ["1/3"] * 3}),
                     Step("=", _frac(value), "constraint")]
        else:
            value = Fraction(9, s)
            lhs, rel = f"1/{a} + 1/{b} + 1/{c}", ">="
            steps = [Step(">=", f"(1 + 1 + 1)**2/({a} + {b} + {c})", "titu", {"xs": ["1", "1", "1"], "ys": [a, b, c]}),
                     Step("=", _frac(value), "constraint")]
    point = _frac(Fraction(s, len(vs)))
    eq = {v: point for v in vs}
    return Draw(vs, "positive", lhs, rel, _frac(value), steps, eq, f"{' = '.join(vs)} = {point}", constraint=cons,
                bound=(_frac(value), "1"), knobs={"form": form, "s": s})


FAMILIES: dict[str, Callable[[random.Random], Draw]] = {
    "am_gm": am_gm, "reciprocal": reciprocal, "weighted_am_gm": weighted_am_gm, "titu": titu,
    "cauchy_schwarz": cauchy_schwarz, "nesbitt": nesbitt, "sos": sos, "constrained": constrained,
    **TECHNIQUES,  # issue 21's families (techniques.py)
}

# ---- statements and variants ----------------------------------------------------------------------


def _domain_text(d: Draw) -> str:
    kind = {"positive": "positive real numbers", "nonnegative": "nonnegative real numbers", "real": "real numbers"}
    names = ", ".join(f"${v}$" for v in d.variables)
    one = len(d.variables) == 1
    text = f"Let {names} be {'a ' + kind[d.domain][:-1] if one else kind[d.domain]}"
    if d.constraint:
        lhs, _, total = d.constraint.rpartition(" - ")
        text += f" with ${to_latex(lhs)} = {total}$"
    return text + "."


_REL_TEX = {">=": r"\ge", "<=": r"\le", ">": ">", "<": "<", "=": "="}


def _proof_problem(d: Draw, family: str) -> dict:
    statement = f"{_domain_text(d)} Prove that ${to_latex(d.lhs)} {_REL_TEX[d.rel]} {to_latex(d.rhs)}$."
    return dict(variant="proof", lhs=d.lhs, rel=d.rel, rhs=d.rhs, proof=d.steps, statement=statement, question="",
                answer="", options=())


def _bound_problem(d: Draw) -> dict | None:
    if d.bound is None or d.rel not in (">=", "<="):
        return None
    value, g = d.bound
    best = "largest" if d.rel == ">=" else "smallest"
    g_tex = "" if g == "1" else r" \cdot " + to_latex(g)
    question = f"Find the {best} constant $C$ such that ${to_latex(d.lhs)} {_REL_TEX[d.rel]} C{g_tex}$ for all such numbers."
    return dict(variant="bound", lhs=d.lhs, rel=d.rel, rhs=d.rhs, proof=d.steps,
                statement=f"{_domain_text(d)} {question}", question=question, answer=value, options=())


def reverse_chain(start: str, steps: tuple[Step, ...]) -> tuple[str, tuple[Step, ...]]:
    """The same chain read from its end: e0 r1 e1 ... en  ->  en r'n e(n-1) ... e0 (relations flipped,
    each step keeping its justification)."""
    exprs = [start] + [s.rhs for s in steps]
    out = [replace(s, rel=_FLIP[s.rel], rhs=exprs[i]) for i, s in reversed(list(enumerate(steps)))]
    return exprs[-1], tuple(out)


def _option_tex(option: str) -> str:
    return option.replace("<=", _REL_TEX["<="]).replace(">=", _REL_TEX[">="])


def _relation_problem(d: Draw, rng: random.Random) -> dict:
    lhs, rel, rhs, steps = d.lhs, d.rel, d.rhs, d.steps
    if rng.random() < 0.5:
        lhs, steps = reverse_chain(d.lhs, d.steps)
        rhs, rel = d.lhs, _FLIP[d.rel]
    answer = _LETTERS[RELATION_OPTIONS.index(f"L {rel} R")]
    opts = " ".join(f"({_LETTERS[i]}) ${_option_tex(o)}$" if i < 5 else f"({_LETTERS[i]}) {o}"
                    for i, o in enumerate(RELATION_OPTIONS))
    question = (f"Let $L = {to_latex(lhs)}$ and $R = {to_latex(rhs)}$. Which relation holds for all such numbers "
                f"(choose the strongest)? {opts}")
    return dict(variant="relation", lhs=lhs, rel=rel, rhs=rhs, proof=steps, statement=f"{_domain_text(d)} {question}",
                question=question, answer=answer, options=RELATION_OPTIONS)


def make_problem(family: str, d: Draw, variant: str, rng: random.Random) -> Problem | None:
    parts = (_proof_problem(d, family) if variant == "proof" else _bound_problem(d) if variant == "bound"
             else _relation_problem(d, rng))
    if parts is None:
        return None
    p = Problem(problem_id="", family=family, variables=d.variables, domain=d.domain, constraint=d.constraint,
                equality=d.equality, equality_text=d.equality_text, knobs=d.knobs, **parts)
    return replace(p, problem_id=f"{family}-{variant}-{p.claim_key()[:12]}")


def generate(families: list[str] | None = None, n_per_family: int = 50, seed: int = 0,
             variants: dict[str, float] | None = None, max_tries: int = 50) -> list[Problem]:
    """Up to `n_per_family` distinct problems per family (fewer when a family's space is small:
    draws stop after `max_tries` consecutive duplicates). Deterministic in (families, n, seed, variants)."""
    families = families or list(FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown inequality families {unknown}; known: {', '.join(FAMILIES)}")
    variants = variants or {"proof": 1.0}
    bad = [v for v in variants if v not in ("proof", "bound", "relation")]
    if bad or not variants or any(w < 0 for w in variants.values()) or sum(variants.values()) <= 0:
        raise ValueError(f"variants must map proof/bound/relation to non-negative weights, got {variants}")
    out: list[Problem] = []
    for family in families:
        rng = random.Random(f"{seed}:{family}")
        seen: set[str] = set()
        misses = 0
        while len(seen) < n_per_family and misses < max_tries:
            d = FAMILIES[family](rng)
            variant = rng.choices(list(variants), weights=list(variants.values()))[0]
            p = make_problem(family, d, variant, rng) or make_problem(family, d, "proof", rng)
            if p.problem_id in seen:
                misses += 1
                continue
            misses = 0
            seen.add(p.problem_id)
            out.append(p)
    return out
