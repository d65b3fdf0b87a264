r"""Answer judging measured against public facts, plus the traps our own rules fell into (issue 21).

Why: `general` mode (EquivalenceChecker) and `is_correct` score the solver; a judge that accepts a
wrong answer makes those scores, and any reward built on them, worthless. So:

1. The public test tables of huggingface/Math-Verify (tests/test_all.py and neighbours) and
   NVIDIA/NeMo-Skills (tests/test_math_equal.py) are facts: (gold, pred, expected). They live in
   tests/data/answer_equivalence_cases.jsonl, one row per upstream case, with its source path,
   commit and test id, extracted with `ast` from the upstream files (no row edited). One test runs
   them all through ONE checker (one worker process) and asserts >= 99% agreement and zero false
   accepts (expected False, we say True). Rows skipped, by class, and why:
   - `strict=False` (test_strict.py): matches variables by position, f(x) == f(y). We keep
     math-verify's strict default: different variables are different answers.
   - set-vs-relation rows (test_set_rel_assymetry, and any with allow_set_relation_comp=True):
     upstream judges them DIRECTIONALLY (the same pair is 1 one way round and 0 the other);
     `equivalent` is symmetric by design (it groups votes), so these rows are not facts about it.
     (It accepts an inequality and the set it describes, the direction math-verify allows.)
   - rows labelled True only under a looser float rounding than our 6 digits (precision < 6):
     we do not accept 2.6667 for 8/3.
   - test_yujianll.py test_string_extraction[9]: "1 - 1/e" labelled equal to "1 + 1/e"; upstream
     records a quirk of its string fallback there, not a mathematical fact.
   - test_all.py test_latex_notation[5] and [6] ("Separate line shouldn't work for inline latex":
     "$9$" vs "Answer $ \n 9 \n $" labelled 0): run upstream with the LaTeX extractor alone, they
     state how far it reaches, not that 9 is a wrong answer. We also read plain expressions (as
     math-verify does by default), which finds the 9.
   `test_skips_are_few_and_classified` pins how many rows each class removes.
2. Our own cases: every false accept and extraction loss named in issue 21, the AIMO surface
   forms, and the cheapest ways to game a judge.

Decisions recorded here:
- in AIMO integer mode the number is what counts, so "3 apples" and "3 pears" are both 3 (the
  question fixes the unit), and "28\%" is 28; as text (normalize_answer, the vote keys of the
  'majority' mode) "3 apples" and "3 pears" stay different, and so they do in `general` mode;
- `general` mode keeps math-verify's readings where notation is ambiguous: "28\%" equals both 28
  and 0.28 (a percent question answered either way), and a bare "1,22" is a decimal comma (its
  number reader and its tests: "1,22" == "1.22"), while "1,234" is a thousands group and
  "1, 2" (with a space) a list.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from squigglray.solve.answers import as_aimo_integer, extract_answer, is_correct, normalize_answer
from squigglray.solve.equivalence import EquivalenceChecker
from squigglray.solve.vote import CandidateAnswer, weighted_vote

DATA = Path(__file__).parent / "data" / "answer_equivalence_cases.jsonl"
ROWS = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def skip_reason(row: dict) -> str | None:
    """The documented class (module docstring) a row is skipped for, or None."""
    opts = row["options"]
    if opts.get("strict") is False:
        return "strict=False"
    if opts.get("allow_set_relation_comp") or row["test"].startswith("test_set_rel_assymetry"):
        return "set-relation directional"
    if opts.get("precision", 6) < 6 and row["expected"]:
        return "looser rounding"
    if row["source"].endswith("tests/test_yujianll.py") and row["test"] == "test_string_extraction[9]":
        return "mislabeled upstream"
    if row["source"].endswith("tests/test_all.py") and row["test"] in ("test_latex_notation[5]",
                                                                      "test_latex_notation[6]"):
        return "latex extractor reach"
    return None


KEPT = [r for r in ROWS if skip_reason(r) is None]


@pytest.fixture(scope="module")
def checker():
    with EquivalenceChecker(timeout_s=10.0) as c:
        yield c


# -- 1. the public tables ------------------------------------------------------------------------
def test_skips_are_few_and_classified():
    sources = Counter(r["source"].split()[0] for r in ROWS)
    assert sources["huggingface/Math-Verify"] >= 260 and sources["NVIDIA/NeMo-Skills"] >= 30
    assert all(isinstance(r["expected"], bool) and r["commit"] and r["test"] for r in ROWS)
    skipped = Counter(skip_reason(r) for r in ROWS if skip_reason(r))
    assert skipped == {"strict=False": 1, "set-relation directional": 4, "looser rounding": 3,
                       "mislabeled upstream": 1, "latex extractor reach": 2}
    assert sum(not r["expected"] for r in KEPT) >= 40  # enough negatives to catch false accepts


def test_public_tables_general_mode(checker):
    t0 = time.monotonic()
    got = [checker.equivalent(r["gold"], r["pred"]) for r in KEPT]
    elapsed = time.monotonic() - t0
    wrong = [(r, g) for r, g in zip(KEPT, got) if g != r["expected"]]
    for r, g in wrong:
        print(f"{'FALSE ACCEPT' if g else 'false reject'} {r['source']}::{r['test']} "
              f"gold={r['gold'][:80]!r} pred={(r['pred'] or '')[-80:]!r}")
    agreement = 1 - len(wrong) / len(KEPT)
    print(f"agreement {agreement:.1%} on {len(KEPT)} rows in {elapsed:.1f} s; "
          f"timeouts {checker.timeouts}, errors {checker.errors}")
    assert not [r for r, g in wrong if g], "false accepts"
    assert agreement >= 0.99


# -- 2. the traps of issue 21: different answers must stay different ------------------------------
DIFFERENT = [
    (r"\begin{pmatrix} 2 \\ 7 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 9 \end{pmatrix}"),  # row break kept
    (r"\begin{pmatrix} 2 \\ 7 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 9 \end{pmatrix}".replace(" ", "")),
    ("(2, 7)", "(2, 9)"),
    (r"\text{no}", r"\text{on}"),  # text is not a product of letters
    ("no", "on"),
    (r"\text{odd}", r"\text{dod}"),
    ("y = 2x+1", "x = 2x+1"),  # the left side is part of the answer
    ("1,2", "12"),  # a list is not a number
    ("12.5", "125"),
    ("-5", "5"),
    ("1, 234", "1234"),
    (r"1\,2", "12"),
    ("5 or 6", "5"),
    ("3 dozen", "3"),
    ("2 pi", "2"),
    (r"28\%", "29"),
    ("x = 5", "5x"),
    ("3 apples", "3 pears"),  # as text; AIMO mode compares the number (see below)
]


@pytest.mark.parametrize("a,b", DIFFERENT)
def test_different_answers_stay_apart_in_general_mode(checker, a, b):
    assert not checker.equivalent(a, b) and not checker.equivalent(b, a)


@pytest.mark.parametrize("a,b", DIFFERENT)
def test_different_answers_stay_apart_as_text(a, b):
    assert normalize_answer(a) != normalize_answer(b)
    if (a, b) != ("3 apples", "3 pears"):
        assert not is_correct(a, b) and not is_correct(b, a)
        va, vb = as_aimo_integer(a), as_aimo_integer(b)
        assert va is None or vb is None or va != vb


def test_units_do_not_count_in_aimo_mode():
    assert as_aimo_integer("3 apples") == as_aimo_integer("3 pears") == 3
    assert is_correct("3 apples", 3) and is_correct("3 pears", "3")


def test_is_correct_keeps_the_left_side():
    assert not is_correct("y = 2x+1", "x = 2x+1")
    assert is_correct("x = 2x+1", "x = 2x+1")
    assert is_correct(r"x = \frac{1}{2}", r"\frac{1}{2}")  # a constant assignment is its value


@pytest.mark.parametrize("a,b", [
    ("$12$", r"\text{12}"), ("1/2", "0.5"), (r"\frac{1}{2}", r"\dfrac12"), ("10,455", "10455"),
    (r"\begin{pmatrix} 2 \\ 7 \end{pmatrix}", r"\begin{pmatrix}2\\7\end{pmatrix}"), (r"\text{odd}", "odd"),
    ("y = 2x+1", "y = 1 + 2x"), (r"\{1, 2\}", r"\{2, 1\}"), ("x = 5", "5"),
])
def test_equal_answers_are_equivalent(checker, a, b):
    assert checker.equivalent(a, b)


def test_short_circuit_only_up_to_whitespace(checker):
    calls = checker.calls
    assert checker.equivalent(" 12 ", "12\n") and checker.calls == calls  # no worker call
    assert checker.equivalent("$13$", r"\text{13}") and checker.calls == calls + 1  # math-verify decides


# -- extraction and the AIMO surface forms -------------------------------------------------------
@pytest.mark.parametrize("text,answer,value", [
    (r"so $\boxed{255}$ for the first part. The final answer is $10,455$.", "10,455", 10455),
    ("Final Answer: The largest $n$ is 34.", "34", 34),
    (r"**Final Answer:** The largest $n$ is $34$.", "34", 34),
    (r"The answer is $\boxed{42\text{ ways}}$.", r"42\text{ ways}", 42),
    ("Final answer: 34 apples", "34 apples", 34),
    (r"The final answer is $\boxed{5}$.", "5", 5),  # the statement holds the box: same answer
    ("**Final Answer**\n\\boxed{189}", "189", 189),  # a heading before the box is no statement
    (r"the final answer is 3, no wait: \boxed{7}", "7", 7),  # a box after the statement wins
    (r"\boxed{12} and finally the final answer: $\boxed{13}$", "13", 13),
    (r"\boxed{255} Final answer:", "255", 255),  # an empty statement does not hide the box
])
def test_extraction_precedence(text, answer, value):
    assert extract_answer(text) == answer
    assert as_aimo_integer(extract_answer(text)) == value


@pytest.mark.parametrize("raw,value", [
    ("10,455", 10455), (r"32,\! 349", 32349), ("1{,}000", 1000), (r"1\,000", 1000),
    (r"42\text{ ways}", 42), ("34 apples", 34), (r"\$34", 34), ("$34", 34), (r"\text{34}", 34),
    (r"\boxed{7}", 7), ("n = 34 apples", 34), (r"12 \text{ cm}^2", 12), (r"90^\circ", 90), ("5 digits", 5),
    ("1,2", None), ("12.5", None), ("-5", None), ("3 x", None), (r"28\%", 28), ("28 percent", 28),
    ("3 or five", None), (r"10^5", None), ("1, 234", None), ("12,34", None), ("3 thousand", None),
    (r"2\pi", None),
])
def test_aimo_surface_forms(raw, value):
    assert as_aimo_integer(raw) == value


def test_aimo_vote_counts_surface_forms_together():
    cands = [CandidateAnswer(0, "10,455"), CandidateAnswer(1, r"10{,}455"), CandidateAnswer(2, "10455 ways"),
             CandidateAnswer(3, "255", code_ok=True)]
    r = weighted_vote(cands)
    assert r.answer == "10455" and r.votes == {"10455": 3.0, "255": 2.0}


def test_general_vote_compares_raw_answers(checker):
    # normalized, the two matrices would differ only in the kept row break; raw, math-verify parses them
    cands = [CandidateAnswer(0, r"\begin{pmatrix} 2 \\ 7 \end{pmatrix}"),
             CandidateAnswer(1, r"\begin{pmatrix} 2 \\ 9 \end{pmatrix}"),
             CandidateAnswer(2, r"\begin{pmatrix}2\\7\end{pmatrix}")]
    r = weighted_vote(cands, mode="general", equivalence=checker)
    assert list(r.counts.values()) == [2, 1]


# -- the cheapest gaming --------------------------------------------------------------------------
QUESTION = "Find the number of positive divisors of $2024$."


@pytest.mark.parametrize("pred", [
    QUESTION,  # the question restated
    "the number of positive divisors of $2024$",
    r"\boxed{}",
    "",
    "   ",
    r"\boxed{1, 2, 3, \ldots, 99999}",
    "1, 2, 3, ..., 99999",
    r"\boxed{12}\boxed{13}",  # several boxes: a set, not the answer
    r"$12$ or $13$",
    r"\boxed{12 \text{ or } 13}",
    r"12 \pm 1",
    r"\infty",
])
def test_cheap_answers_do_not_match_a_gold_number(checker, pred):
    assert not checker.equivalent("12", pred)
    assert not is_correct(extract_answer(pred), "12")
    assert as_aimo_integer(extract_answer(pred)) in (None, 13)


def test_no_answer_without_a_statement():
    assert extract_answer(QUESTION) is None  # restating the question gives nothing to vote for
    assert extract_answer(r"\boxed{}") is None
    assert extract_answer("I computed 12 and then 13") is None


@pytest.mark.parametrize("text,model_answer,trace_answer", [
    ("The answer is \\boxed{12}.", "12", "12"),
    ("\\boxed{\\frac{1}{2}} then \\boxed{7}", "7", "7"),
    ("\\boxed{}", None, ""),  # an empty box: no answer, but the trace did write its box
    ("\\boxed {3}", "3", None),  # TeX forms the trace format never writes
    ("\\boxed 5", "5", None),
    ("\\fbox{4}", "4", None),
    ("\\boxed{1} and then \\boxed{2", None, None),  # cut mid-answer
    ("no box", None, None),
])
def test_one_box_parser_two_readings(text, model_answer, trace_answer):
    """`last_box` is the one parser of boxed answers: `extract_answer` reads a model's answer with
    it, `extract_boxed` the project's own trace format (the held-out evaluation's reading)."""
    from squigglray.solve.answers import extract_answer, extract_boxed

    assert extract_answer(text) == model_answer
    assert extract_boxed(text) == trace_answer
