"""Answer extraction, normalisation, AIMO weighted voting, early stop, equivalence checker."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from squigglray.solve.answers import as_aimo_integer, extract_answer, normalize_answer
from squigglray.solve.equivalence import EquivalenceChecker
from squigglray.solve.vote import (
    CandidateAnswer,
    VoteResult,
    aimo_weight,
    leader_is_safe,
    should_stop,
    weighted_vote,
)

# Unbounded, math-verify spends ~40 s on this pair (sympy materialises 3**(3**16)).
HANG_A, HANG_B = "2^{2^{26}}", "3^{3^{16}}"


# -- extraction ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{\left\{1, \{2\}\right\}}", r"\left\{1, \{2\}\right\}"),
        (r"first \boxed{3}, wait, actually \boxed{ 42 } done", "42"),
        (r"\fbox{7}", "7"),
        (r"\boxed{1} then \fbox{9}", "9"),
        (r"hence $\boxed 5$", "5"),
        (r"The final answer is $\frac{1}{2}$. Good.", r"\frac{1}{2}"),
        ("Final Answer: **42**", "42"),
        ("the answer is 12.5. Next the answer is 13.", "13"),
        ("so the answer is 3\nnext line", "3"),
        ("Answer: 7", "7"),
        ("The answer is 1 but the final answer is 2.", "2"),  # 'final answer' phrase first
        ("I computed 12 and then 13", None),  # never guess the last number
        (r"partial \boxed{12", None),  # cut mid-box: not an answer
        (r"\boxed{}", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# -- normalisation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw,expected",
    [
        ("$12$", "12"),
        (r"\(12\)", "12"),
        (r"\left(1,2\right)", "(1,2)"),
        (r"\text{12}", "12"),
        (r"\mathrm{5}\text{ cm}", "5 cm"),
        (r"1\,000", "1000"),
        ("1\u2009000", "1000"),
        (r"\!7", "7"),
        ("12.", "12"),
        ("1,000", "1000"),
        ("1,234,567.5", "1234567.5"),
        ("1{,}000", "1000"),
        ("(1,2)", "(1,2)"),
        ("1,2", "1,2"),
        ("x = 5", "5"),
        (r"n_1 = 4", "4"),
        ("x = 2, y = 3", "x = 2, y = 3"),
        (r"90^\circ", "90"),
        (r"90^{\circ}", "90"),
        ("45°", "45"),
        (r"\boxed{7}", "7"),
        (None, ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("0", 0),
        ("99999", 99999),
        ("100000", None),
        ("-3", None),
        ("12", 12),
        ("012", 12),
        ("12.0", 12),
        ("12.5", None),
        ("1/2", None),
        (r"\frac{4}{2}", None),
        ("1,000", 1000),
        ("$1,000$", 1000),
        (r"\boxed{7}", 7),
        ("seven", None),
        ("", None),
        (None, None),
        ("9" * 5000, None),
    ],
)
def test_as_aimo_integer(raw, expected):
    assert as_aimo_integer(raw) == expected


# -- weights and votes ---------------------------------------------------------------------
def test_aimo_weight():
    assert aimo_weight("12", True) == 2.0
    assert aimo_weight("12", False) == 1.0
    assert aimo_weight("12.5", True) == 0.0
    assert aimo_weight("100000", True) == 0.0
    assert aimo_weight(None, True) == 0.0


def C(i, a, ok=False):
    return CandidateAnswer(index=i, answer=a, code_ok=ok)


def test_aimo_vote_mixed_code_ok():
    cands = [
        C(0, "7", False),
        C(1, "7.0", False),
        C(2, "7", False),  # 7: weight 3, three candidates
        C(3, "12", True),
        C(4, "012", True),  # 12: weight 4, two candidates with working code
        C(5, "1/2", True),  # invalid: weight 0
        C(6, None, True),
        C(7, "-3", False),
    ]
    r = weighted_vote(cands)
    assert r.answer == "12"
    assert r.votes == {"12": 4.0, "7": 3.0}
    assert list(r.votes) == ["12", "7"]
    assert r.counts == {"12": 2, "7": 3}
    assert (r.n_candidates, r.n_valid, r.margin, r.tie_break) == (8, 5, 1.0, None)


def test_vote_no_valid_answer():
    r = weighted_vote([C(0, None), C(1, "-1", True), C(2, "3.5")])
    assert r.answer is None and r.votes == {} and r.n_valid == 0 and r.margin == 0.0
    assert not should_stop(r, remaining=0)
    assert weighted_vote([]).answer is None


def test_tie_broken_by_count():
    # 5: one candidate with working code (2.0); 9: two without (2.0) -> count decides.
    r = weighted_vote([C(0, "5", True), C(1, "9"), C(2, "9")])
    assert r.votes == {"9": 2.0, "5": 2.0}
    assert (r.answer, r.tie_break, r.margin) == ("9", "count", 0.0)


def test_tie_broken_by_earliest_index():
    # equal weight and count: the answer whose first supporter has the smaller index wins,
    # regardless of the order the candidates arrive in.
    cands = [C(4, "8", True), C(1, "3", True), C(2, "8"), C(3, "3")]
    for order in (cands, cands[::-1]):
        r = weighted_vote(order)
        assert (r.answer, r.tie_break) == ("3", "index")
        assert r.votes == {"3": 3.0, "8": 3.0}


def test_majority_mode():
    cands = [C(0, "$x+1$", True), C(1, r"x+1"), C(2, "1/2", True), C(3, "1/2"), C(4, "1/2")]
    r = weighted_vote(cands, mode="majority")
    assert r.answer == "1/2"
    assert r.votes == {"1/2": 3.0, "x+1": 2.0}  # code_ok is ignored
    with pytest.raises(ValueError):
        weighted_vote(cands, mode="nope")


@pytest.fixture(scope="module")
def checker():
    with EquivalenceChecker(timeout_s=5.0) as c:
        yield c


def test_general_mode_groups_equivalent_answers(checker):
    cands = [
        C(0, "1/2"),
        C(1, "2", True),
        C(2, "0.5"),
        C(3, r"\frac{1}{2}"),
        C(4, r"\dfrac{1}{2}", True),
    ]
    r = weighted_vote(cands, mode="general", equivalence=checker)
    assert r.answer == "1/2"  # key: the group's first member, normalized
    assert r.votes == {"1/2": 5.0, "2": 2.0}
    assert r.counts == {"1/2": 4, "2": 1}


def test_general_mode_creates_its_own_checker():
    r = weighted_vote([C(0, "0.25"), C(1, "1/4"), C(2, "3", True)], mode="general")
    assert r.votes == {"0.25": 2.0, "3": 2.0}
    assert (r.answer, r.tie_break) == ("0.25", "count")


# -- early stop ----------------------------------------------------------------------------
def test_leader_is_safe_boundaries():
    assert leader_is_safe({"a": 5.0, "b": 1.0}, remaining=1)  # 4 > 2
    assert not leader_is_safe({"a": 5.0, "b": 1.0}, remaining=2)  # 4 == 4: could tie
    assert leader_is_safe({"a": 5.0, "b": 1.0}, remaining=2, max_weight=1.0)
    assert leader_is_safe({"a": 3.0}, remaining=1)  # a new answer starts from 0
    assert not leader_is_safe({"a": 2.0}, remaining=1)
    assert not leader_is_safe({"a": 2.0, "b": 2.0}, remaining=0)  # exact tie is not safe
    assert leader_is_safe({"a": 2.0, "b": 1.0}, remaining=0)
    assert not leader_is_safe({}, remaining=0)


def test_should_stop():
    r = weighted_vote([C(0, "7", True), C(1, "7", True), C(2, "3")])  # 4 vs 1
    assert should_stop(r, remaining=1)  # margin 3 > 1 * 2
    assert not should_stop(r, remaining=2)  # margin 3 <= 2 * 2
    assert should_stop(r, remaining=2, agree_k=2)  # heuristic: two agree
    assert not should_stop(r, remaining=2, agree_k=3)
    empty = VoteResult(answer=None)
    assert not should_stop(empty, remaining=0, agree_k=0)


# -- equivalence checker -------------------------------------------------------------------
def test_checker_basics(checker):
    assert checker.backend == "math_verify"
    assert checker.equivalent("1/2", "0.5")
    assert checker.equivalent(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}")
    assert not checker.equivalent("1/2", "2")
    assert not checker.equivalent("", "")
    calls = checker.calls
    assert checker.equivalent(" 12 ", "12\n")  # equal up to whitespace: no worker call
    assert checker.equivalent("0.5", "1/2")  # cached, order-insensitive
    assert checker.calls == calls


def test_checker_from_other_threads(checker):
    pairs = [("0.25", "1/4"), ("3", "6/2"), ("2", "3"), ("2^{10}", "1024"), ("1/3", "0.5")]
    expected = [True, True, False, True, False]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: checker.equivalent(*p), pairs * 2))
    assert got == expected * 2
    seen = []  # and from a plain thread, with a fresh pair
    t = threading.Thread(target=lambda: seen.append(checker.equivalent("0.125", "1/8")))
    t.start()
    t.join()
    assert seen == [True]


def test_checker_times_out_and_recovers():
    with EquivalenceChecker(timeout_s=1.0) as c:
        assert c.equivalent("1", "1.0")  # worker started (startup is not on the clock)
        t0 = time.monotonic()
        assert not c.equivalent(HANG_A, HANG_B)
        elapsed = time.monotonic() - t0
        assert c.timeouts == 1 and c.errors == 0
        assert 0.9 < elapsed < 5.0
        assert not c._worker.alive  # killed
        assert not c.equivalent(HANG_B, HANG_A)  # cached verdict, no second timeout
        assert c.timeouts == 1
        assert c.equivalent("4/2", "2")  # a fresh worker
        assert c._worker.alive
    assert not c._worker.alive


def test_checker_string_backend(monkeypatch):
    import importlib.util

    import squigglray.solve.equivalence as eqmod

    real = importlib.util.find_spec
    monkeypatch.setattr(
        eqmod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "math_verify" else real(name, *a),
    )
    with EquivalenceChecker() as c:
        assert c.backend == "string"
        assert c.equivalent("$1,000$", "1000")
        assert not c.equivalent("1/2", "0.5")
        assert not c._worker.alive and c.calls == 0  # never started
