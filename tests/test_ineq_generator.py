"""Inequality families, proof text round trip, and the leak-free split."""

from __future__ import annotations

import functools
import random

import pytest
import sympy as sp

from squigglray.ineq.generator import FAMILIES, generate, reverse_chain
from squigglray.ineq.problems import Problem
from squigglray.ineq.proof_text import ProofParseError, parse_answer, parse_proof, reference_text
from squigglray.ineq.split import canonical_claim, split_problems

VARIANTS = {"proof": 0.6, "bound": 0.2, "relation": 0.2}


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return generate(None, 40, seed=0, variants=VARIANTS)


@functools.lru_cache(maxsize=None)
def _compiled(expr: str, names: tuple[str, ...]):
    """The expression as a float function of the named variables (parsed once; sympy's subs is slow)."""
    symbols = [sp.Symbol(v) for v in names]
    return sp.lambdify(symbols, sp.sympify(expr, locals=dict(zip(names, symbols))), modules="math")


def _value(expr: str, point: dict[str, float]) -> float:
    names = tuple(sorted(point))
    return float(_compiled(expr, names)(*(point[v] for v in names)))


def test_every_family_and_variant_is_drawn(problems):
    assert {p.family for p in problems} == set(FAMILIES)
    assert {p.variant for p in problems} == {"proof", "bound", "relation"}
    assert len({p.problem_id for p in problems}) == len(problems)
    assert generate(None, 40, seed=0, variants=VARIANTS) == problems  # deterministic
    assert generate(None, 40, seed=1, variants=VARIANTS) != problems


def test_reference_chains_hold_numerically(problems):
    """Each link of each reference proof holds at random domain points (on the constraint surface),
    the chain ends at the claim's rhs, and the equality case makes both sides equal."""
    rng = random.Random(0)
    for p in problems:
        exprs = [p.lhs] + [s.rhs for s in p.proof]
        lo = -4.0 if p.domain == "real" else 0.05
        for _ in range(4):
            pt = {v: rng.uniform(lo, 4.0) for v in p.variables}
            if p.constraint:
                total = float(p.constraint.rpartition(" - ")[2])
                pt = {k: v * total / sum(pt.values()) for k, v in pt.items()}
            vals = [_value(e, pt) for e in exprs]
            for a, b, s in zip(vals, vals[1:], p.proof):
                tol = 1e-7 * max(1.0, abs(a))
                assert {"=": abs(a - b) <= tol, ">=": a >= b - tol, "<=": a <= b + tol}[s.rel], (p.problem_id, s)
            assert _value(exprs[-1], pt) == pytest.approx(_value(p.rhs, pt), rel=1e-9, abs=1e-9)
        if p.equality:
            point = {k: float(sp.Rational(v)) for k, v in p.equality.items()}
            assert _value(p.lhs, point) == pytest.approx(_value(p.rhs, point), abs=1e-9), p.problem_id


def test_variants(problems):
    for p in problems:
        if p.variant == "bound":
            assert "constant $C$" in p.statement and sp.sympify(p.answer).is_number
        if p.variant == "relation":
            assert p.answer in "AB" and len(p.options) == 6
            assert p.options["ABCDEF".index(p.answer)] == f"L {p.rel} R"
    start, steps = reverse_chain("a", tuple(generate(["sos"], 1, seed=0)[0].proof))
    assert steps[-1].rhs == "a" and all(s.rel in ("=", "<=") for s in steps)


def test_proof_text_round_trip_and_errors(problems):
    for p in problems:
        text = reference_text(p)
        parsed = parse_proof(text)
        assert parsed.start == p.lhs and parsed.steps == p.proof and parsed.equality_text == p.equality_text
        assert parse_answer(text) == (p.answer or None)
    with pytest.raises(ProofParseError, match="no 'Proof:'"):
        parse_proof("I think it is true.")
    with pytest.raises(ProofParseError, match="unknown lemma"):
        parse_proof("Proof: a\n>= b by magic(a)\nQED")
    with pytest.raises(ProofParseError, match="not '<rel> <expr>"):
        parse_proof("Proof: a\nhence b\nQED")
    with pytest.raises(ProofParseError, match="no steps"):
        parse_proof("Proof: a\nQED")


def test_bad_generator_arguments():
    with pytest.raises(ValueError, match="unknown inequality families"):
        generate(["nope"], 3)
    with pytest.raises(ValueError, match="variants"):
        generate(["sos"], 3, variants={"essay": 1.0})


def test_split_is_stratified_disjoint_and_leak_free(problems):
    s = split_problems(problems, test_fraction=0.25, seed=0)
    train_ids, test_ids = {p.problem_id for p in s.train}, {p.problem_id for p in s.test}
    assert not train_ids & test_ids
    assert len(train_ids) + len(test_ids) + len(s.removed) == len(problems)
    assert {p.family for p in s.test} == set(FAMILIES)  # every family is in the test split
    # No claim (up to renaming, variant and side order) is on both sides.
    assert not {canonical_claim(p) for p in s.train} & {canonical_claim(p) for p in s.test}
    for r in s.removed:
        assert r["problem_id"] not in train_ids and r["matched"] in test_ids and r["similarity"] >= 0.6
    again = split_problems(list(reversed(problems)), test_fraction=0.25, seed=0)
    assert [p.problem_id for p in again.test] == [p.problem_id for p in s.test]
    other = split_problems(problems, test_fraction=0.25, seed=1)
    assert [p.problem_id for p in other.test] != [p.problem_id for p in s.test]
    with pytest.raises(ValueError, match="test_fraction"):
        split_problems(problems, test_fraction=1.5)


def test_renamed_claims_share_a_group():
    from squigglray.ineq.generator import make_problem, sos

    rng = random.Random(3)
    draws = [sos(random.Random(i)) for i in range(30)]
    keys = {}
    for d in draws:
        p = make_problem("sos", d, "proof", rng)
        keys.setdefault(canonical_claim(p), set()).add(tuple(p.variables))
    assert any(len(names) > 1 for names in keys.values()), "some claim occurs under two namings"


def test_the_verifier_accepts_every_reference_proof(problems):
    """Two of each family and variant: the mechanical judge proves each reference completion."""
    from squigglray.ineq.verifier import judge_completion

    seen: dict[tuple, int] = {}
    for p in problems:
        key = (p.family, p.variant)
        if seen.get(key, 0) >= 2:
            continue
        seen[key] = seen.get(key, 0) + 1
        r = judge_completion(p, reference_text(p), timeout_s=20)
        assert r["score"] == 1 and r["status"] == "valid", (p.problem_id, r)
