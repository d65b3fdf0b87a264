"""The mechanical inequality verifier (real SymPy and Z3, in a TimedWorker) and the worker itself."""

from __future__ import annotations

import time

import pytest
import sympy as sp

from squigglray.ineq.problems import Problem, Step
from squigglray.ineq.verifier import (
    ExpressionError,
    check_claim,
    check_equality_case,
    check_proof,
    check_step,
    default_worker,
    judge_completion,
)
from squigglray.verify.worker import TimedWorker, WorkerError, WorkerTimeout

W = "squigglray.verify.worker"


# ---------------------------------------------------------------- TimedWorker
@pytest.fixture(scope="module")
def worker():
    with TimedWorker(timeout_s=5.0) as w:
        yield w


def test_worker_round_trip(worker):
    out = worker.call(f"{W}:_echo", 1, [2, "x"], {"k": 3.5}, flag=True)
    assert out["args"] == [1, [2, "x"], {"k": 3.5}] and out["kwargs"] == {"flag": True}


def test_worker_remote_exception_keeps_worker(worker):
    pid = worker.call(f"{W}:_echo")["pid"]
    errors = worker.errors
    with pytest.raises(WorkerError) as info:
        worker.call(f"{W}:_fail", "boom")
    assert info.value.remote_type == "ValueError" and info.value.remote_message == "boom"
    assert worker.errors == errors + 1
    assert worker.call(f"{W}:_echo")["pid"] == pid  # same process: it survived


def test_worker_timeout_kills_and_restarts(worker):
    pid = worker.call(f"{W}:_echo")["pid"]
    timeouts, restarts = worker.timeouts, worker.restarts
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeout):
        worker.call(f"{W}:_sleep", 60, timeout_s=0.5)
    assert time.monotonic() - t0 < 2.0
    assert worker.timeouts == timeouts + 1 and not worker.alive
    assert worker.call(f"{W}:_sleep", 0.01) == 0.01
    assert worker.call(f"{W}:_echo")["pid"] != pid and worker.restarts == restarts + 1


def test_worker_crash_is_an_error_and_the_next_call_restarts(worker):
    with pytest.raises(WorkerError) as info:
        worker.call(f"{W}:_crash")
    assert info.value.remote_type == "WorkerDied"
    assert worker.call(f"{W}:_sleep", 0) == 0


def test_worker_rejects_functions_outside_the_package(worker):
    calls = worker.calls
    for name in ("os:system", "squigglrayx.mod:f", "subprocess:run", "squigglray.verify.worker"):
        with pytest.raises(ValueError):
            worker.call(name, "echo hi")
    with pytest.raises(ValueError):
        TimedWorker(preload=("os",))
    assert worker.calls == calls


def test_worker_reports_missing_function_and_bad_args(worker):
    with pytest.raises(WorkerError) as info:
        worker.call(f"{W}:_no_such_function")
    assert info.value.remote_type == "AttributeError"
    with pytest.raises(TypeError):  # not JSON-able: refused before the worker sees it
        worker.call(f"{W}:_echo", object())


# ---------------------------------------------------------------- claims
def _violated(lhs, rel, rhs, variables, constraint, point) -> bool:
    """Independent check (SymPy at 40 digits) that `point` breaks ``lhs rel rhs``."""
    syms = {v: sp.Symbol(v) for v in variables}
    at = {syms[k]: sp.Float(v, 40) for k, v in point.items()}
    val = lambda e: sp.sympify(e, locals=syms).evalf(40, subs=at)  # noqa: E731
    if constraint:
        assert abs(val(constraint)) < 1e-9
    d = val(lhs) - val(rhs)
    return {">=": d < 0, ">": d <= 1e-30, "<=": d > 0, "<": d >= -1e-30, "=": abs(d) > 1e-12}[rel]


@pytest.mark.parametrize("lhs,rel,rhs,variables,domain,constraint", [
    ("a**2 + b**2", ">=", "2*a*b", "ab", "real", None),
    ("(a + b + c)/3", ">=", "(a*b*c)**(1/3)", "abc", "positive", None),
    ("a/(b + c) + b/(c + a) + c/(a + b)", ">=", "3/2", "abc", "positive", None),
    ("a*(a - b)*(a - c) + b*(b - a)*(b - c) + c*(c - a)*(c - b)", ">=", "0", "abc", "nonnegative", None),
    ("a*b + b*c + c*a", "<=", "3", "abc", "nonnegative", "a + b + c - 3"),
    ("a + b + c", ">=", "3", "abc", "positive", "a*b*c - 1"),
])
def test_true_claims_are_proved(lhs, rel, rhs, variables, domain, constraint):
    v = check_claim(lhs, rel, rhs, list(variables), domain, constraint, timeout_s=5.0)
    assert v.status == "proved", v
    assert v.method in ("z3", "sympy") and v.counterexample is None


@pytest.mark.parametrize("lhs,rel,rhs,variables,domain,constraint", [
    ("a + b", ">=", "3*sqrt(a*b)", "ab", "positive", None),
    ("a**2 + b**2", ">=", "3*a*b", "ab", "positive", None),
    ("a/(b + c) + b/(c + a) + c/(a + b)", ">=", "2", "abc", "positive", None),
    ("a**2 + b**2", ">", "2*a*b", "ab", "real", None),
    ("a*b + b*c + c*a", "<=", "2", "abc", "positive", "a + b + c - 3"),
    ("(a + b)**2", "=", "a**2 + b**2", "ab", "positive", None),
])
def test_false_claims_are_refuted_with_a_real_counterexample(lhs, rel, rhs, variables, domain, constraint):
    v = check_claim(lhs, rel, rhs, list(variables), domain, constraint, timeout_s=5.0)
    assert v.status == "refuted", v
    assert set(v.counterexample) == set(variables)
    assert _violated(lhs, rel, rhs, variables, constraint, v.counterexample), v


def test_z3_model_is_checked_and_returned():
    spec = {"lhs": "x*y", "rel": "<=", "rhs": "x + y - 1", "variables": ["x", "y"], "domain": "real",
            "constraint": None}
    res = default_worker().call("squigglray.ineq.verifier:_prove", spec, 3.0, timeout_s=5.0)
    assert res["status"] == "refuted" and res["method"] == "z3", res
    assert _violated("x*y", "<=", "x + y - 1", "xy", None, res["point"])


def test_hard_claim_is_unknown_within_the_timeout_and_the_worker_recovers():
    xs = [f"x{i}" for i in range(1, 7)]
    t0 = time.monotonic()
    v = check_claim(f"({' + '.join(xs)})/6", ">=", f"({'*'.join(xs)})**(1/6)", xs, "positive", timeout_s=1.0)
    assert v.status == "unknown", v
    assert time.monotonic() - t0 < 1.0 + 1.5
    assert check_claim("a**2 + 1", ">=", "2*a", ["a"], "real", timeout_s=3.0).status == "proved"


def test_equalities_are_proved_by_sympy_also_on_the_constraint_surface():
    v = check_claim("(a + b)**2", "=", "a**2 + 2*a*b + b**2", ["a", "b"], "real")
    assert (v.status, v.method) == ("proved", "sympy")
    v = check_claim("(a + b + c)**2", "=", "9", ["a", "b", "c"], "positive", "a + b + c - 3")
    assert (v.status, v.method) == ("proved", "sympy")


def test_unparseable_and_unsafe_expressions_are_named():
    with pytest.raises(ExpressionError, match=r"a \+\* b"):
        check_claim("a +* b", ">=", "0", ["a", "b"], "real")
    with pytest.raises(ExpressionError, match="__import__"):
        check_claim("__import__('os').getcwd()", ">=", "0", ["a"], "real")
    with pytest.raises(ExpressionError, match="'z'"):
        check_claim("a + z", ">=", "0", ["a"], "real")


def _problem(lhs, rel, rhs, variables, domain="positive", constraint=None, equality=None, variant="proof",
             answer="", options=()) -> Problem:
    return Problem(problem_id="t", family="test", variant=variant, variables=tuple(variables), domain=domain,
                   lhs=lhs, rel=rel, rhs=rhs, constraint=constraint, equality=equality, equality_text="",
                   statement="", proof=(), answer=answer, options=options)


NESBITT = _problem("a/(b + c) + b/(c + a) + c/(a + b)", ">=", "3/2", "abc", equality={"a": "1", "b": "1", "c": "1"})
AMGM2 = _problem("a**2 + b**2", ">=", "2*a*b", "ab", equality={"a": "1", "b": "1"})


def test_equality_case():
    assert check_equality_case(NESBITT, {"a": "2", "b": "2", "c": "2"}).status == "proved"
    off = check_equality_case(NESBITT, {"a": "1", "b": "2", "c": "1"})
    assert off.status == "refuted" and "lhs" in off.reason
    assert "outside" in check_equality_case(NESBITT, {"a": "0", "b": "0", "c": "1"}).reason
    cons = _problem("a*b + b*c + c*a", "<=", "3", "abc", constraint="a + b + c - 3")
    assert check_equality_case(cons, {"a": "1", "b": "1", "c": "1"}).status == "proved"
    assert "constraint" in check_equality_case(cons, {"a": "2", "b": "2", "c": "2"}).reason


# ---------------------------------------------------------------- steps and proofs
def test_lemma_steps():
    v = check_step("a**2 + b**2", Step(">=", "2*sqrt(a**2*b**2)", "am_gm", {"terms": ["a**2", "b**2"]}),
                   ["a", "b"], "positive")
    assert (v.status, v.method) == ("proved", "lemma:am_gm")
    v = check_step("2*sqrt(a*b)", Step("<=", "a + b", "am_gm", {"terms": ["a", "b"]}), ["a", "b"], "positive")
    assert (v.status, v.method) == ("proved", "lemma:am_gm")
    v = check_step("x**2/a + y**2/b", Step(">=", "(x + y)**2/(a + b)", "titu", {"xs": ["x", "y"], "ys": ["a", "b"]}),
                   ["x", "y", "a", "b"], "positive")
    assert (v.status, v.method) == ("proved", "lemma:titu")
    v = check_step("(a + b + c)/3", Step(">=", "sqrt(a*b)", "am_gm", {"terms": ["a", "b", "c"]}),
                   ["a", "b", "c"], "positive")
    assert v.status == "refuted" and "does not match" in v.reason


GOOD = """Proof: a**2 + b**2
>= 2*sqrt(a**2*b**2) by am_gm(a**2, b**2)
= 2*a*b by algebra
Equality: a = b
QED"""


def test_correct_proofs_are_valid():
    r = judge_completion(AMGM2, GOOD)
    assert {k: r[k] for k in ("score", "status", "reasons", "answer_ok", "proof_ok", "claim_verified")} == \
        {"score": 1, "status": "valid", "reasons": [], "answer_ok": None, "proof_ok": True, "claim_verified": True}
    # (a + b + c)**2 >= 3*(ab + bc + ca) is no longer a solver's step: the squares are written out
    titu = """Proof: a/(b + c) + b/(c + a) + c/(a + b)
= a**2/(a*(b + c)) + b**2/(b*(c + a)) + c**2/(c*(a + b))
>= (a + b + c)**2/(a*(b + c) + b*(c + a) + c*(a + b)) by titu(a, b, c; a*(b + c), b*(c + a), c*(a + b))
= 3/2 + ((a - b)**2 + (b - c)**2 + (c - a)**2)/(2*(a*(b + c) + b*(c + a) + c*(a + b)))
>= 3/2
QED"""
    pv = check_proof(NESBITT, *_chain(titu))
    assert pv.valid and pv.status == "valid" and [v.method for v in pv.step_verdicts][1] == "lemma:titu"
    cons = _problem("a*b + b*c + c*a", "<=", "3", "abc", "nonnegative", "a + b + c - 3", {"a": "1", "b": "1", "c": "1"})
    sq = {"squares": ["a - b", "b - c", "c - a"], "coeffs": ["1/6"] * 3}
    pv = check_proof(cons, "a*b + b*c + c*a", [Step("<=", "(a + b + c)**2/3", "square_nonneg", sq),
                                               Step("=", "3", "constraint")])
    assert pv.status == "valid", pv
    pv = check_proof(cons, "a*b + b*c + c*a", [Step("<=", "(a + b + c)**2/3"), Step("=", "3", "constraint")])
    assert (pv.status, pv.claim_verified) == ("unjustified", True), pv  # true, but only the solver says so


def _chain(text):
    from squigglray.ineq.proof_text import parse_proof

    p = parse_proof(text)
    return p.start, p.steps


@pytest.mark.parametrize("text,expect", [
    ("Proof: a**2 + b**2\n>= 3*a*b\n= 2*a*b\nQED", "step 1"),  # a false step
    ("Proof: a**2 + b**2\n>= a*b + sqrt(a*b) by am_gm(a, b)\n>= 2*a*b\nQED", "step 1"),  # wrong lemma args
    ("Proof: a**2 + b**2\n>= 2*sqrt(a**2*b**2) by am_gm(a**2, b**2)\n= 2*a*b\n>= a*b\nQED", "ends at a*b"),
    ("Proof: a**2 + b**2\n>= 2*sqrt(a**2*b**2) by am_gm(a**2, b**2)\n<= 2*a*b\nQED", "mixes directions"),
    ("Proof: a**2 + 2*b**2\n>= 2*a*b\nQED", "starts at"),
])
def test_broken_proofs_are_invalid_and_say_where(text, expect):
    r = judge_completion(AMGM2, text)
    assert (r["score"], r["status"], r["proof_ok"]) == (0, "invalid", False), r
    assert any(expect in why for why in r["reasons"]), r
    if "am_gm(a, b)" in text:
        assert any("does not match" in why for why in r["reasons"]), r


def test_proof_statuses_incomplete_strict_and_unparsed():
    r = judge_completion(AMGM2, "Proof: a**2 + b**2\n>= (a + b)**2/2 by cauchy_schwarz(a, b; 1, 1)\nQED")
    assert (r["score"], r["status"]) == (0, "incomplete") and "not written" in r["reasons"][0]
    strict = _problem("a**2 + b**2 + 1", ">", "2*a*b", "ab")
    assert "no step is strict" in check_proof(strict, "a**2 + b**2 + 1", [Step(">=", "2*a*b")]).reasons[0]
    pv = check_proof(strict, "a**2 + b**2 + 1", [Step(">", "2*a*b")])
    assert (pv.status, pv.valid, pv.claim_verified) == ("circular", False, True)  # the claim, restated
    assert check_proof(strict, "a**2 + b**2 + 1", [Step("=", "2*a*b + (a - b)**2 + 1"), Step(">", "2*a*b")]).valid
    r = judge_completion(AMGM2, "I think it is true.")
    assert (r["score"], r["status"]) == (0, "unparsed") and "Proof:" in r["reasons"][0]
    r = judge_completion(AMGM2, "Proof: a**2 + b**2\n>= 2*a*b +* 1\nQED")
    assert r["status"] == "invalid" and "unparseable" in r["reasons"][0]


def test_answer_variants_need_the_answer_and_a_proof():
    bound = _problem("a + b", ">=", "2*sqrt(a*b)", "ab", variant="bound", answer="2")
    alone = judge_completion(bound, "Answer: 4/2")
    assert (alone["score"], alone["answer_ok"]) == (0, True)  # a right constant without a proof earns nothing
    r = judge_completion(bound, "Proof: a + b\n>= 2*sqrt(a*b) by am_gm(a, b)\nQED\nAnswer: C = 2.")
    assert (r["score"], r["answer_ok"], r["proof_ok"]) == (1, True, True)
    assert judge_completion(bound, "Answer: 3")["score"] == 0
    rel = _problem("a + b", ">=", "2*sqrt(a*b)", "ab", variant="relation", answer="B", options=("A", "B", "C"))
    assert judge_completion(rel, "Answer: (b)")["answer_ok"] is True
    assert judge_completion(rel, "Proof: a + b\n>= 2*sqrt(a*b) by am_gm(a, b)\nQED\nAnswer: (b)")["score"] == 1
    trivial = judge_completion(_problem("a + b", ">=", "2*sqrt(a*b)", "ab"), "Proof: a + b\n>= 2*sqrt(a*b)\nQED")
    assert (trivial["score"], trivial["status"]) == (0, "circular")
    assert judge_completion(rel, "Answer: A")["score"] == 0
    assert judge_completion(rel, "no answer")["answer_ok"] is False


def test_undefined_expressions_cannot_prove_anything():
    # sqrt(-1 - a) is nowhere real for a > 0: without the guard Z3 would prove both links vacuously
    v = check_claim("a", ">=", "a + 1 + sqrt(-1 - a)", ["a"], "positive")
    assert v.status == "unknown" and "vacuous" in v.reason
    pv = check_proof(AMGM2, "a**2 + b**2", [Step(">=", "a**2 + b**2 + sqrt(-1 - a)"), Step(">=", "2*a*b")])
    assert pv.status == "invalid" and "step 1" in pv.reasons[0], pv
    real = _problem("a**2 + b**2", ">=", "2*a*b", "ab", domain="real")  # log(a) is real for a > 0 only
    pv = check_proof(real, "a**2 + b**2", [Step(">=", "2*a*b + log(a**2) - 2*log(a)"), Step("=", "2*a*b")])
    assert pv.status == "invalid" and "step 1" in pv.reasons[0] and "not a real number" in pv.reasons[0], pv
    with pytest.raises(ExpressionError, match="not a finite real"):
        check_claim("a + (-8)**(1/3)", ">=", "0", ["a"], "positive")
    with pytest.raises(ExpressionError, match="too large"):
        check_claim("a + 9**9**9", ">=", "0", ["a"], "positive")
    # a constraint surface that cannot be sampled (cubic in every variable, not homogeneous) and is empty
    v = check_claim("a", ">=", "a + 1", list("abc"), "positive", "a**3 + b**3 + c**3 + a + b + c + 6")
    assert v.status == "unknown" and "empty" in v.reason, v
