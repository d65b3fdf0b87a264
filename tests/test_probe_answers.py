"""Probe answer accuracy by free generation (issue 24 part 5): the answer judge against the cheapest
outputs that could score, its acceptance of real solutions, and generation against the exact
reproduction it must never fall below; probes from a slice's held-out splits; the report's text."""

from __future__ import annotations

import re

import pytest

from squigglray.families import LEVELS, list_families, sample
from squigglray.solve.equivalence import EquivalenceChecker, judge_answer


@pytest.fixture(scope="module")
def checker():
    with EquivalenceChecker() as c:
        yield c


def restated(problem: str) -> str | None:
    """The question restated as its own answer, in a form math-verify evaluates (None: no such form)."""
    if m := re.search(r"(?:Evaluate the expression|Compute) (.+)\.$", problem):
        return m.group(1)
    if m := re.search(r"(\d+) times (\d+), plus (\d+) times (\d+), minus (\d+)", problem):
        return r"{} \cdot {} + {} \cdot {} - {}".format(*m.groups())
    if m := re.search(r"(?:gcd\(|common divisor of |divides both )(\d+)(?:,| and) (\d+)", problem):
        return rf"\gcd({m.group(1)}, {m.group(2)})"
    if m := (re.search(r"(\d+) identical balls be placed into (\d+) distinct", problem)
             or re.search(r"x_(\d+) = (\d+) have", problem) or re.search(r"(\d+)-tuples .* add up to (\d+)", problem)):
        a, b = map(int, m.groups())
        n, k = (a, b) if "balls" in problem else (b, a)  # n balls into k boxes
        return rf"\binom{{{n + k - 1}}}{{{k - 1}}}"
    if m := re.search(r"(\d+)(?:x| times a number) plus (\d+) equals (\d+)(?:x| times the same number) plus (\d+)",
                      problem.replace(" + ", " plus ").replace(" = ", " equals ")):
        a, b, c, d = m.groups()
        return rf"\frac{{{b} - {d}}}{{{c} - {a}}}"
    return None


def test_restating_the_question_fools_math_verify_but_not_the_judge(checker):
    """The attack is real (bare math-verify takes the restated question for the answer), and the
    judge refuses every one of them."""
    attacks = [(expr, x.answer) for fam in ("arithmetic", "gcd_lcm", "stars_bars", "linear_equation")
               for x in sample(fam, 6, seed=11) if (expr := restated(x.problem))]
    assert len(attacks) == 24
    fooled = sum(checker.equivalent(expr, str(gold)) for expr, gold in attacks)
    assert fooled == 24, fooled  # the attack works against math-verify alone
    for expr, gold in attacks:
        for text in (rf"\boxed{{{expr}}}", f"The final answer is ${expr}$."):
            assert not judge_answer(text, str(gold), checker), text


def test_cheap_outputs_score_nothing(checker):
    x = sample("arithmetic", 1, seed=3)[0]
    gold = str(x.answer)
    others = [str(v) for v in range(int(gold) - 3, int(gold) + 4)]
    for text in ("", x.problem, x.problem + " " + gold, rf"\boxed{{{gold}", "I think it is about " + gold,
                 " ".join(rf"\boxed{{{v}}}" for v in others),  # every box but the last is ignored
                 f"The answer is {', '.join(others)}.", rf"\boxed{{{gold} \text{{ or }} {int(gold) + 1}}}"):
        assert not judge_answer(text, gold, checker), text


def test_the_judge_accepts_real_solutions_in_their_forms(checker):
    """Its power: every reference solution of every family and level, and OpenMathReasoning-style
    solutions, are judged right; equal answers in other forms too."""
    from squigglray.data.omr_sample import omr_rows

    refs = [(x.trace, str(x.answer)) for f in list_families() for lv in LEVELS for x in sample(f, 3, 5, lv)]
    refs += [(r["generated_solution"], r["expected_answer"]) for r in omr_rows(60, seed=2)]
    wrong = [(t[-80:], g) for t, g in refs if not judge_answer(t, g, checker)]
    assert not wrong, f"{len(wrong)} of {len(refs)} reference solutions judged wrong: {wrong[:3]}"
    for text, gold in (("The answer is $42$.", "42"), (r"\boxed{42.0}", "42"), (r"\boxed{x = 7}", "7"),
                       (r"\boxed{\frac{6}{8}}", r"\frac{3}{4}"), (r"\boxed{0.75}", r"\frac34"),
                       (r"\boxed{1,000}", "1000"), (r"so $\boxed{\dfrac{\sqrt{3}}{2}}$", r"\frac{\sqrt3}{2}")):
        assert judge_answer(text, gold, checker), (text, gold)
    assert not judge_answer(r"\boxed{41}", "42", checker)
    # the guard's known cost: an equal answer written with more numbers than the reference
    assert checker.equivalent(r"2\sqrt{2}", r"\sqrt{8}") and not judge_answer(r"\boxed{2\sqrt{2}}", r"\sqrt{8}", checker)


def test_generation_is_never_below_exact_reproduction(solver_store, checker):
    """On a trained model: every instance whose reference greedy decoding reproduces exactly
    (`exact`) is also solved by free generation. The model's training instances are scanned for
    those (a few in a hundred) so that the check is not vacuous."""
    from conftest import SOLVER_MODEL

    from squigglray.eval.probes import Generation, encode_probe, evaluate_probe, generated_accuracy
    from squigglray.models.loading import load_model
    from squigglray.training import BaseTrainConfig
    from squigglray.training.data import build_pool

    model, tok = load_model("nano", solver_store)
    pool = build_pool(BaseTrainConfig.model_validate(SOLVER_MODEL), solver_store)
    scanned = [(lv, x) for (_, lv), xs in sorted(pool.items.items()) for x in xs[:60]]
    exact = [evaluate_probe(model, encode_probe("a", [it], tok, 160))["answer_acc"] == 1.0 for it in scanned]
    items = [it for it, e in zip(scanned, exact) if e] + [it for it, e in zip(scanned, exact) if not e][:6]
    assert len(items) >= 8, sum(exact)
    probe = encode_probe("a", items, tok, 160)
    exact = {x.instance_id for (_, x), e in zip(scanned, exact) if e}
    gen = dict(zip((x.instance_id for _, x in probe.items), generated_accuracy(model, probe, Generation(
        tok, 120, 5.0, checker, 160))))
    assert all(gen[i] for i in exact), gen
    assert evaluate_probe(model, probe)["answer_acc"] == len(exact) / len(items)


def test_the_report_says_which_data_and_probes_a_run_used():
    from squigglray.config import build_config
    from squigglray.report.dynamics_report import data_text, probes_text
    from squigglray.training import BaseTrainConfig

    fams = build_config(BaseTrainConfig, {}, ["data.families=[crt, gcd_lcm]"])
    assert data_text(fams) == "the synthetic families `crt`, `gcd_lcm`"
    assert "synthetic families" in probes_text(fams) and "exact greedy reproduction" in probes_text(fams)
    sl = build_config(BaseTrainConfig, {}, ["data.slice=s-1", "data.stream=true",
                                           "curriculum=[{name: all, fraction: 1.0, levels: {easy: 1}}]"])
    assert data_text(sl) == "the train split of the slice `s-1` streamed through Ray Data"
    assert "`probe_a` split" in probes_text(sl) and "math-verify judges" in probes_text(sl)
    assert "synthetic" not in probes_text(sl)
    omr = sl.model_copy(update={"data": sl.data.model_copy(update={"slice": None, "parquet": "/shards"})})
    assert "OpenMathReasoning shards `/shards`" in data_text(omr)
    assert "not of the training data's distribution" in probes_text(omr)
    exact = build_config(BaseTrainConfig, {}, ["data.slice=s-1", "probes.answer=exact"])
    assert "exact greedy reproduction" in probes_text(exact)
