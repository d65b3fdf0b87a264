"""The proof checker's rule book (`ineq/proof_check.py`): every reference proof of every generator
family passes, an adversarial set of proofs that skip the work is rejected in full, and on the
README's ineq config no test problem is scored 1 for a one-step unjustified proof."""

from __future__ import annotations

from pathlib import Path

import pytest
import sympy as sp
import yaml

from squigglray.ineq.config import IneqConfig
from squigglray.ineq.generator import FAMILIES, generate
from squigglray.ineq.problems import Problem, Step
from squigglray.ineq.proof_check import asks_equality, sign
from squigglray.ineq.proof_text import reference_text
from squigglray.ineq.split import split_problems
from squigglray.ineq.verifier import check_proof, judge_completion

CONFIG = Path(__file__).resolve().parents[1] / "squigglray" / "configs" / "ineq.yaml"


def _problem(lhs, rel, rhs, variables, domain="positive", constraint=None, equality=None, family="test",
             proof=(), statement="", variant="proof", answer="", equality_text="") -> Problem:
    return Problem(problem_id="t", family=family, variant=variant, variables=tuple(variables), domain=domain,
                   lhs=lhs, rel=rel, rhs=rhs, constraint=constraint, equality=equality, equality_text=equality_text,
                   statement=statement, proof=tuple(proof), answer=answer)


def _judge(p: Problem, text: str) -> dict:
    return judge_completion(p, text, timeout_s=10, verify_claim=False)


AMGM2 = _problem("a**2 + b**2", ">=", "2*a*b", "ab", equality={"a": "1", "b": "1"})
TITU2 = _problem("1/a + 1/b", ">=", "4/(a + b)", "ab", equality={"a": "1", "b": "1"})
CONS = _problem("a*b + b*c + c*a", "<=", "3", "abc", constraint="a + b + c - 3",
                equality={"a": "1", "b": "1", "c": "1"})
NESBITT = _problem("a/(b + c) + b/(c + a) + c/(a + b)", ">=", "3/2", "abc", equality={"a": "1", "b": "1", "c": "1"})
GOOD = "Proof: a**2 + b**2\n>= 2*sqrt(a**2*b**2) by am_gm(a**2, b**2)\n= 2*a*b by algebra\nEquality: a = b\nQED"
SOS = "Proof: a**2 + b**2\n= 2*a*b + (a - b)**2\n>= 2*a*b\nQED"


# ---------------------------------------------------------------- every reference proof passes
def _reference_problems() -> list[Problem]:
    """One problem per family and variant (a bound falls back to a proof where a family has none),
    and a second proof: four seeds."""
    out = []
    for seed, variant in ((0, "proof"), (1, "proof"), (2, "bound"), (3, "relation")):
        out += generate(None, n_per_family=1, seed=seed, variants={variant: 1})
    return out


def test_every_reference_proof_of_every_family_and_variant_passes():
    problems = _reference_problems()
    assert {p.family for p in problems} == set(FAMILIES)
    assert {p.variant for p in problems} == {"proof", "bound", "relation"}
    failed = []
    for p in problems:
        r = _judge(p, reference_text(p))
        if (r["score"], r["status"]) != (1, "valid") or not all(j["justified"] for j in r["justification"]):
            failed.append((p.problem_id, r["status"], r["reasons"][:2]))
        elif p.equality_text:
            assert r["equality"]["ok"] is True, (p.problem_id, r["equality"])
    assert not failed, failed


def test_justification_names_the_rule_of_each_step():
    r = judge_completion(AMGM2, GOOD, timeout_s=10)
    assert (r["score"], r["status"], r["proof_ok"], r["claim_verified"]) == (1, "valid", True, True)
    assert [j["rule"] for j in r["justification"]] == ["lemma:am_gm", "identity"]
    assert r["equality"] == {"written": True, "ok": True, "why": "lhs == rhs wherever a = b"}
    r = _judge(AMGM2, SOS)
    assert r["score"] == 1 and [j["rule"] for j in r["justification"]] == ["identity", "elementary"]
    pv = check_proof(CONS, "a*b + b*c + c*a", [
        Step("<=", "(a + b + c)**2/3", "square_nonneg",
             {"squares": ["a - b", "b - c", "c - a"], "coeffs": ["1/6"] * 3}),
        Step("=", "3", "constraint")], timeout_s=10)
    assert pv.valid and [j["rule"] for j in pv.justification] == ["lemma:square_nonneg", "constraint"]
    strict = _problem("a**2 + b**2 + 1", ">", "2*a*b", "ab", domain="real")
    pv = check_proof(strict, "a**2 + b**2 + 1", [Step("=", "2*a*b + (a - b)**2 + 1"), Step(">", "2*a*b")], timeout_s=10)
    assert pv.valid, pv


# ---------------------------------------------------------------- the adversarial set
RESTATEMENTS = [
    "Proof: (a**2 + b**2)\n>= 2*a*b\nQED",
    "Proof: 1*(a**2 + b**2)\n>= 2*a*b\nQED",
    "Proof: a**2 + b**2 + 0\n>= 2*(a*b)\nQED",
    "Proof: b**2 + a**2\n\n\n>= b*a*2\n\nQED",
    "Proof: ((a**2 + b**2))\n>= 2*a*b by algebra\nEquality: a = b\nQED",
    "Proof: a**2 + b**2\n= (a**2 + b**2)*(a + b)/(a + b) by algebra\n>= 2*a*b\nQED",  # = lhs, then the leap
    "Proof: a**2 + b**2\n= a**2 + b**2 by algebra\n>= 2*a*b by algebra\nQED",
    "Proof: a**2 + b**2\n= (a + b)**2 - 2*a*b by algebra\n>= 2*a*b by algebra\nQED",  # the leap behind a rewrite
    "Proof: a**2 + b**2\n>= 2*a*b by algebra(checked at a = b = 1)\nQED",  # numeric only
]
MISMATCHED = [
    "Proof: a**2 + b**2\n>= 2*sqrt(a**2*b**2) by am_gm(a, b)\n= 2*a*b\nQED",  # am_gm with the wrong terms
    "Proof: a**2 + b**2\n>= 2*sqrt(a**2*b**2) by am_gm(a**2, 2*b**2)\n= 2*a*b\nQED",
    "Proof: a**2 + b**2\n= 2*a*b + (a - b)**2\n>= 2*a*b by am_gm(a, b)\nQED",  # a true step, the wrong lemma
    "Proof: a**2 + b**2\n>= 2*a*b by square_nonneg(a + b; 1)\nQED",
    "Proof: a**2 + b**2\n>= 2*a*b by cauchy_schwarz(a, b; b, a)\nQED",
]
SOLVER_IN_DISGUISE = [  # the hard part hidden in a lemma argument, a side condition or an Abs
    "Proof: a**2 + b**2\n>= 2*a*b by square_nonneg(sqrt(a**2 + b**2 - 2*a*b); 1)\nQED",
    "Proof: a**2 + b**2\n>= 2*a*b by am_gm(a**2 + b**2 - 2*a*b, 0)\nQED",
    "Proof: a**2 + b**2\n>= 2*a*b by square_nonneg(1; a**2 + b**2 - 2*a*b)\nQED",
    "Proof: a**2 + b**2\n= 2*a*b + Abs(a**2 + b**2 - 2*a*b)\n>= 2*a*b\nQED",
    "Proof: a**2 + b**2\n= 2*a*b + sqrt((a**2 - 2*a*b + b**2)**2)\n>= 2*a*b\nQED",
]
WRONG_ENDS = [
    "Proof: a**2 + b**2\n>= 2*sqrt(a**2*b**2) by am_gm(a**2, b**2)\n= 2*a*b\n>= a*b\nQED",  # ends at another rhs
    "Proof: a**2 + b**2\n>= (a + b)**2/2 by cauchy_schwarz(a, b; 1, 1)\nQED",  # stops short (true missing link)
    "Proof: a**2 + 2*b**2\n= 2*a*b + (a - b)**2 + b**2\n>= 2*a*b\nQED",  # starts elsewhere
    "Proof: a**2 + b**2\n= 2\n>= 2*a*b\nQED",  # "at a = b = 1 both sides are 2"
    "Proof: a**2 + b**2\nCheck: at a = b = 1 both sides are 2\nQED",
    "Proof: a**2 + b**2\n<= 2*a*b + (a - b)**2\n>= 2*a*b\nQED",
]
WRONG_EQUALITY = [SOS.replace("QED", f"Equality: {e}\nQED") for e in
                  ("a = 2*b", "a = 1, b = 2", "never", "a = -1, b = -1", "the two numbers agree")]


@pytest.mark.parametrize("text", RESTATEMENTS + MISMATCHED + SOLVER_IN_DISGUISE + WRONG_ENDS + WRONG_EQUALITY)
def test_adversarial_proofs_of_amgm2_fail(text):
    r = _judge(AMGM2, text)
    assert r["score"] == 0 and not r["proof_ok"] and r["status"] != "valid", r


def test_restatements_are_circular_and_still_verified_by_the_solver():
    for text in RESTATEMENTS[:5] + RESTATEMENTS[-1:]:
        r = _judge(AMGM2, text)
        assert r["status"] == "circular" and r["justification"][-1]["rule"] is None, (text, r)
    r = judge_completion(AMGM2, RESTATEMENTS[1], timeout_s=10)  # the old score: the solver proves the chain
    assert (r["score"], r["claim_verified"], r["claim_status"]) == (0, True, "valid"), r
    r = _judge(AMGM2, RESTATEMENTS[7])
    assert r["status"] == "unjustified" and [j["justified"] for j in r["justification"]] == [True, False], r


def test_mismatched_citations_say_so():
    for text in MISMATCHED:
        r = _judge(AMGM2, text)
        assert r["status"] == "unjustified" and any("does not justify" in j["why"] for j in r["justification"]), r
    r = _judge(TITU2, "Proof: 1/a + 1/b\n>= (1 + 1)**2/(a + b) by titu(a, b; 1, 1)\n= 4/(a + b)\nQED")  # swapped
    assert r["score"] == 0 and "does not justify" in r["justification"][0]["why"], r
    assert _judge(TITU2, "Proof: 1/a + 1/b\n>= (1 + 1)**2/(a + b) by titu(1, 1; a, b)\n= 4/(a + b)\nQED")["score"] == 1


def test_side_conditions_are_evident_not_solved():
    reasons = [_judge(AMGM2, t)["justification"][0]["why"] for t in SOLVER_IN_DISGUISE[:3]]
    assert "not evidently real" in reasons[0] and all("not evident" in r for r in reasons[1:]), reasons


def test_wrong_ends_and_equality_lines():
    statuses = [_judge(AMGM2, t)["status"] for t in WRONG_ENDS]
    assert statuses == ["incomplete", "incomplete", "incomplete", "unjustified", "unparsed", "invalid"], statuses
    r = judge_completion(AMGM2, WRONG_ENDS[0], timeout_s=10)  # with the solver: the missing link is false
    assert r["status"] == "invalid" and any("ends at a*b" in why for why in r["reasons"]), r
    eq = [_judge(AMGM2, t)["equality"] for t in WRONG_EQUALITY]
    assert [e["ok"] for e in eq] == [False, False, False, False, None], eq
    assert [_judge(AMGM2, t)["status"] for t in WRONG_EQUALITY] == ["invalid"] * 4 + ["unjustified"]
    for right in ("a = b", "b = a", "a : b = 1 : 1", "when a = b."):
        assert _judge(AMGM2, SOS.replace("QED", f"Equality: {right}\nQED"))["score"] == 1, right


def test_a_question_that_asks_for_the_equality_case_needs_the_line():
    asks = _problem("a**2 + b**2", ">=", "2*a*b", "ab", equality={"a": "1", "b": "1"},
                    statement="Prove that $a^2 + b^2 \\ge 2ab$ and find when equality holds.")
    assert asks_equality(asks) and not asks_equality(AMGM2)
    r = _judge(asks, SOS)
    assert (r["score"], r["status"], r["equality"]["written"]) == (0, "incomplete", False), r
    assert _judge(asks, SOS.replace("QED", "Equality: a = b\nQED"))["score"] == 1
    assert _judge(asks, SOS.replace("QED", "Equality: a = 2*b\nQED"))["score"] == 0
    strict = _problem("a**2 + b**2 + 1", ">", "2*a*b", "ab", domain="real", statement="When does equality hold?")
    text = "Proof: a**2 + b**2 + 1\n= 2*a*b + (a - b)**2 + 1\n> 2*a*b\nEquality: never\nQED"
    assert _judge(strict, text)["score"] == 1


def test_citing_the_problem_own_result_is_circular_unless_the_family_is_an_exercise_in_it():
    claim = dict(lhs="(a + b)/2", rel=">=", rhs="sqrt(a*b)", variables="ab", equality={"a": "1", "b": "1"})
    text = "Proof: (a + b)/2\n>= sqrt(a*b) by am_gm(a, b)\nQED"
    r = _judge(_problem(**claim, family="am_gm"), text)
    assert (r["score"], r["status"]) == (0, "circular"), r
    exercise = _problem(**claim, family="am_gm", proof=[Step(">=", "sqrt(a*b)", "am_gm", {"terms": ["a", "b"]})])
    assert _judge(exercise, text)["score"] == 1
    assert _judge(_problem(**claim, family="reciprocal"), text)["score"] == 1


def test_constraint_steps_need_the_algebra():
    assert _judge(CONS, "Proof: a*b + b*c + c*a\n<= 3 by constraint\nQED")["status"] == "circular"
    r = _judge(CONS, "Proof: a*b + b*c + c*a\n<= (a + b + c)**2/3\n= 3 by constraint\nQED")
    assert r["status"] == "unjustified" and [j["rule"] for j in r["justification"]] == [None, "constraint"], r
    r = _judge(CONS, "Proof: a*b + b*c + c*a\n<= (a + b + c)**2/3 by square_nonneg(a - b, b - c, c - a; 1/6, 1/6, 1/6)"
                     "\n= 4 by constraint\nQED")
    assert r["score"] == 0 and r["justification"][1]["rule"] is None, r


def test_nesbitt_needs_the_squares_written():
    titu = ("Proof: a/(b + c) + b/(c + a) + c/(a + b)\n= a**2/(a*(b + c)) + b**2/(b*(c + a)) + c**2/(c*(a + b))\n"
            ">= (a + b + c)**2/(a*(b + c) + b*(c + a) + c*(a + b)) by titu(a, b, c; a*(b + c), b*(c + a), c*(a + b))\n")
    assert _judge(NESBITT, titu + ">= 3/2\nQED")["status"] == "unjustified"
    sos = "= 3/2 + ((a - b)**2 + (b - c)**2 + (c - a)**2)/(2*(a*(b + c) + b*(c + a) + c*(a + b)))\n>= 3/2\nQED"
    assert _judge(NESBITT, titu + sos)["score"] == 1


def test_answer_variants_still_need_a_justified_proof():
    bound = _problem("a**2 + b**2", ">=", "2*a*b", "ab", variant="bound", answer="2")
    r = _judge(bound, "Proof: a**2 + b**2\n>= 2*a*b\nQED\nAnswer: 2")
    assert (r["score"], r["answer_ok"]) == (0, True), r
    assert _judge(bound, SOS + "\nAnswer: 2")["score"] == 1


def test_the_sign_rule():
    a, b = sp.symbols("a b", positive=True)
    x, y = sp.symbols("x y", real=True)
    assert sign(a + 1 / b) == "pos" and sign((x - y) ** 2) == "nonneg" and sign(3 * (x - y) ** 2 + 1) == "pos"
    assert sign(a - b) is None and sign(x) is None and sign(x ** 2 - 2 * x * y + y ** 2) is None
    assert sign(sp.sqrt(x)) == "nonneg" and sign(-a * b) == "neg" and sign(sp.Abs(x)) == "nonneg"


# ---------------------------------------------------------------- the README's ineq config
def test_no_one_step_unjustified_proof_scores_on_the_readme_config():
    cfg = IneqConfig(**yaml.safe_load(CONFIG.read_text()))
    d = cfg.data
    problems = generate(d.families, d.n_per_family, cfg.seed, d.variants)
    test = split_problems(problems, d.test_fraction, cfg.seed, d.near_dup_threshold).test
    assert len(test) >= 50
    scored = []
    for p in test:
        text = f"Proof: ({p.lhs})\n{p.rel} {p.rhs}\nQED" + (f"\nAnswer: {p.answer}" if p.variant != "proof" else "")
        r = _judge(p, text)
        if r["score"]:
            scored.append(p.problem_id)
    assert scored == [], f"{len(scored)} of {len(test)} scored: {scored[:5]}"


def test_no_mutant_of_a_reference_proof_that_is_shown_wrong_scores():
    """The null at scale (`ineq/proof_mutations.py`): every kind of one-slip mutant of one reference
    proof per family, labelled wrong by ground truth outside the rule book, scores 0. Full table:
    bench/ineq_proof_null.py (0 of 540 on the README config, 0 of 662 over every family)."""
    from squigglray.ineq.proof_mutations import KINDS, judge_mutants

    rows = judge_mutants(generate(None, n_per_family=1, seed=11, variants={"proof": 1}), seed=1)
    wrong = [r for r in rows if r["wrong"]]
    assert {r["kind"] for r in wrong} == set(KINDS) and {r["family"] for r in wrong} == set(FAMILIES)
    assert len(wrong) >= 0.8 * len(rows), "the ground truth stopped telling mutants apart"
    passed = [(r["problem_id"], r["kind"], r["text"]) for r in wrong if r["score"]]
    assert not passed, passed
