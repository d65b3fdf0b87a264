"""Wrong proofs made from right ones: the null on which the proof judge's false-pass rate is measured.

Hand-written adversarial proofs (tests/test_ineq_proof_check.py) show the judge rejects the tricks we
thought of; this module makes the slips a model makes, at scale, from every reference proof. Each
mutation changes one thing in a reference proof (`problems.Problem.proof`):

- ``nudge``: one number in one chain expression moves by 1 (``2*a*b`` -> ``3*a*b``, ``3/2`` -> ``5/2``);
- ``drop``: one link is removed, so the next link's citation must carry a step it was not written for;
- ``equal``: an inequality link is written as ``=``;
- ``flip``: an inequality link's direction is reversed;
- ``cite``: one argument of a lemma citation moves by 1 (``am_gm(a**2, b**2)`` -> ``am_gm(a**2 + 1, b**2)``).

Ground truth does not come from the rule book (`proof_check`), which is what is being measured:
`falsified` asks the verifier's claim checker (`verifier.check_claim`: sampling with counterexamples
confirmed at 30 digits, then SymPy/Z3) whether a link, or an end against the claim, is false, and
a proof with a false link (or relations that do not compose) is wrong whatever any rule says. A
``cite`` mutation keeps every link true; its citation is wrong where the link's gap is not a constant
multiple of the cited instance's at random points (`citation_matches`, floats, independent of the
judge's exact matcher). The judge must score no wrong proof and no wrong citation.

    python bench/ineq_proof_null.py        # the false-pass table (`judge_mutants`) on the README config's test split
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import sympy as sp

from squigglray.ineq.problems import Problem, Step

KINDS = ("nudge", "drop", "equal", "flip", "cite")
_FLIP = {">=": "<=", "<=": ">=", ">": "<", "<": ">"}


def _nudged(expr: str, rng: random.Random) -> str | None:
    """`expr` with one of its numbers moved by 1 (None where it has none)."""
    e = sp.sympify(expr)
    numbers = sorted({n for n in e.atoms(sp.Number) if n not in (-1,)}, key=str)
    if not numbers:
        return None
    n = rng.choice(numbers)
    out = e.xreplace({n: n + 1})
    return None if out == e else str(out)


def mutate(p: Problem, kind: str, rng: random.Random) -> tuple[Step, ...] | None:
    """The reference proof of `p` with one `kind` mutation (`KINDS`), or None where it does not apply."""
    steps = list(p.proof)
    if kind == "nudge":
        for i in rng.sample(range(len(steps)), len(steps)):
            new = _nudged(steps[i].rhs, rng)
            if new:
                steps[i] = replace(steps[i], rhs=new)
                return tuple(steps)
        return None
    if kind == "drop":
        if len(steps) < 2:
            return None
        del steps[rng.randrange(len(steps) - 1)]  # never the last: the chain still ends at the rhs
        return tuple(steps)
    unequal = [i for i, s in enumerate(steps) if s.rel != "="]
    if kind in ("equal", "flip"):
        if not unequal:
            return None
        i = rng.choice(unequal)
        steps[i] = replace(steps[i], rel="=" if kind == "equal" else _FLIP[steps[i].rel])
        return tuple(steps)
    if kind == "cite":
        cited = [i for i in unequal if steps[i].lemma and steps[i].lemma != "constraint" and steps[i].args]
        if not cited:
            return None
        i = rng.choice(cited)
        args = {k: list(v) for k, v in steps[i].args.items()}
        key = rng.choice(sorted(k for k, v in args.items() if v))
        j = rng.randrange(len(args[key]))
        args[key][j] = f"{args[key][j]} + 1"
        steps[i] = replace(steps[i], args=args)
        return tuple(steps)
    raise ValueError(f"unknown mutation {kind!r}; known: {', '.join(KINDS)}")


def falsified(p: Problem, steps: tuple[Step, ...], timeout_s: float = 4.0, worker=None) -> str | None:
    """Why the chain `p.lhs steps...` is wrong as mathematics -- a link (or an end against the claim)
    that the claim checker refutes, or relations that do not compose -- or None where none is found."""
    from squigglray.ineq import verifier as V

    err = V._composition_error(p.rel, [s.rel for s in steps])
    if err:
        return err
    links = [(e, s.rel, s.rhs) for e, s in zip([p.lhs] + [s.rhs for s in steps], steps)] + [(steps[-1].rhs, "=", p.rhs)]
    for a, rel, b in links:
        v = V.check_claim(a, rel, b, p.variables, p.domain, p.constraint, timeout_s=timeout_s, near=p.equality,
                          worker=worker)
        if v.status == "refuted":
            return f"{a} {rel} {b} is false: {v.reason}"
    return None


def citation_matches(p: Problem, prev: str, step: Step, points: int = 24, seed: int = 0) -> bool:
    """Is the link ``prev step.rel step.rhs`` a constant multiple of its cited lemma instance? Floats at
    random points of the domain: the ratio of the link's gap to the instance's must not vary. A
    citation whose arguments make no instance (weights not summing to 1) does not match."""
    from squigglray.ineq import verifier as V

    syms = V._symbols(p.variables, p.domain)
    try:
        L, R, _, _ = V._lemma_instance(step.lemma, step.args, syms)
    except V.ExpressionError:  # e.g. weights that no longer sum to 1: no instance at all
        return False
    a, b = V._parse(prev, syms), V._parse(step.rhs, syms)
    gap = a - b if step.rel in (">=", ">") else b - a
    order = [syms[v] for v in p.variables]
    f = sp.lambdify(order, [gap, L - R], "numpy")
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.2, 3.0, (points, len(order)))
    if p.domain == "real":
        X *= rng.choice([-1.0, 1.0], X.shape)
    with np.errstate(all="ignore"):
        g, d = (np.broadcast_to(np.asarray(v, dtype=complex), (points,)) for v in f(*X.T))
    ok = np.isfinite(g) & np.isfinite(d) & (abs(d) > 1e-9) & (abs(g.imag) < 1e-9) & (abs(d.imag) < 1e-9)
    if ok.sum() < 3:
        return bool(np.allclose(g[np.isfinite(g)], 0))
    k = g[ok].real / d[ok].real
    return bool(k.min() > 0 and np.allclose(k, k[0], rtol=1e-6))


def judge_mutants(problems, seed: int = 0, timeout_s: float = 10.0) -> list[dict]:
    """Every `KINDS` mutant of every problem's reference proof (where it applies), labelled and judged:
    {"problem_id", "family", "kind", "wrong" (shown wrong by ground truth), "why", "score" (the proof
    score of `verifier.judge_completion`), "text"}. A "wrong" row with score 1 is a false pass."""
    from squigglray.ineq.proof_text import format_proof
    from squigglray.ineq.verifier import judge_completion

    rng, rows = random.Random(seed), []
    for p in problems:
        for kind in KINDS:
            steps = mutate(p, kind, rng)
            if steps is None:
                continue
            if kind == "cite":
                i = next(i for i, (s, o) in enumerate(zip(steps, p.proof)) if s != o)
                why = None if citation_matches(p, p.lhs if i == 0 else steps[i - 1].rhs, steps[i]) else \
                    f"the citation of link {i + 1} does not match it"
            else:
                why = falsified(p, steps)
            text = format_proof(p.lhs, steps, p.equality_text) + (f"\nAnswer: {p.answer}" if p.variant != "proof" else "")
            r = judge_completion(p, text, timeout_s=timeout_s, verify_claim=False)
            rows.append({"problem_id": p.problem_id, "family": p.family, "kind": kind, "wrong": why is not None,
                         "why": why or "", "score": r["score"], "text": text})
    return rows
