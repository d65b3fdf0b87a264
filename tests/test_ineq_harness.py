"""Inequality eval: prompts (few-shot vs zero-shot, shot selection, budget), the LLM judge's rubric
parser, judge agreement, and the harness end to end with the trained nano model as both the model
under test and the LLM judge (it writes nonsense; the point is that every path runs and the result
is well formed). The mechanical judge is the real verifier."""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow.parquet as pq
import pytest

from squigglray.engines import HFEngine, SamplingParams
from squigglray.ineq.harness import EvalResult, evaluate
from squigglray.ineq.judges import LLMJudge, agreement, judge_prompt, parse_judge_output, verdict_score
from squigglray.ineq.problems import Problem, Step
from squigglray.ineq.prompts import (
    STOP, build_prompt, few_shot_prompt, render_problem, select_shots, sft_example, worked_example, zero_shot_prompt,
)
from squigglray.ineq.proof_text import parse_proof, reference_text
from squigglray.ineq.verifier import judge_completion

OPTIONS = ("L <= R", "L >= R", "L = R", "L < R", "L > R", "none of these")
REL_Q = (r"Let $L = x + \frac{4}{x}$ and $R = 4$. Which relation holds for all such numbers (choose the strongest)? "
         r"(A) $L \le R$ (B) $L \ge R$ (C) $L = R$ (D) $L < R$ (E) $L > R$ (F) none of these")


def _p(pid, family, variant, variables, domain, lhs, rel, rhs, steps, statement, eq_text, constraint=None,
       question="", answer="", options=()):
    return Problem(problem_id=pid, family=family, variant=variant, variables=tuple(variables), domain=domain,
                   lhs=lhs, rel=rel, rhs=rhs, constraint=constraint, equality=None, equality_text=eq_text,
                   statement=statement, proof=tuple(steps), question=question, answer=answer, options=options)


SQ3 = ["x - y", "y - z", "z - x"]
PROBLEMS = [
    _p("sos-1", "sos", "proof", "ab", "real", "a**2 + b**2", ">=", "2*a*b",
       [Step(">=", "2*a*b", "square_nonneg", {"squares": ["a - b"], "coeffs": ["1"]})],
       r"Let $a$, $b$ be real numbers. Prove that $a^{2} + b^{2} \ge 2 a b$.", "a = b"),
    _p("sos-2", "sos", "proof", "xyz", "real", "x**2 + y**2 + z**2", ">=", "x*y + y*z + z*x",
       [Step(">=", "x*y + y*z + z*x", "square_nonneg", {"squares": SQ3, "coeffs": ["1/2"] * 3})],
       r"Let $x$, $y$, $z$ be real numbers. Prove that $x^{2} + y^{2} + z^{2} \ge x y + y z + z x$.", "x = y = z"),
    _p("sos-3", "sos", "bound", "pq", "real", "p**2 + q**2", ">=", "2*p*q",
       [Step(">=", "2*p*q", "square_nonneg", {"squares": ["p - q"], "coeffs": ["1"]})],
       r"Let $p$, $q$ be real numbers. Find the largest constant $C$ such that $p^{2} + q^{2} \ge C p q$.", "p = q",
       question=r"Find the largest constant $C$ such that $p^{2} + q^{2} \ge C p q$.", answer="2"),
    _p("amgm-1", "am_gm", "proof", "ab", "positive", "a/b + b/a", ">=", "2",
       [Step(">=", "2*((a/b)*(b/a))**(1/2)", "am_gm", {"terms": ["a/b", "b/a"]}), Step("=", "2")],
       r"Let $a$, $b$ be positive real numbers. Prove that $\frac{a}{b} + \frac{b}{a} \ge 2$.", "a = b"),
    _p("amgm-2", "am_gm", "relation", "x", "positive", "x + 4/x", ">=", "4",
       [Step(">=", "2*sqrt(x*(4/x))", "am_gm", {"terms": ["x", "4/x"]}), Step("=", "4")],
       f"Let $x$ be a positive real number. {REL_Q}", "x = 2", question=REL_Q, answer="B", options=OPTIONS),
    _p("cons-1", "constrained", "proof", "abc", "positive", "a**2 + b**2 + c**2", ">=", "3",
       [Step(">=", "(a + b + c)**2/3", "square_nonneg",
             {"squares": ["a - b", "b - c", "c - a"], "coeffs": ["1/3"] * 3}),
        Step("=", "3", "constraint")],
       r"Let $a$, $b$, $c$ be positive real numbers with $a + b + c = 3$. Prove that $a^{2} + b^{2} + c^{2} \ge 3$.",
       "a = b = c = 1", constraint="a + b + c - 3"),
    _p("titu-1", "titu", "proof", "ab", "positive", "1/a + 1/b", ">=", "4/(a + b)",
       [Step(">=", "(1 + 1)**2/(a + b)", "titu", {"xs": ["1", "1"], "ys": ["a", "b"]}), Step("=", "4/(a + b)")],
       r"Let $a$, $b$ be positive real numbers. Prove that $\frac{1}{a} + \frac{1}{b} \ge \frac{4}{a + b}$.", "a = b"),
]
BY_ID = {p.problem_id: p for p in PROBLEMS}


def mechanical_judge(problem: Problem, text: str) -> dict:
    """The real verifier, with a deadline a loaded machine cannot miss."""
    return judge_completion(problem, text, timeout_s=20)


# ----- prompts -----


def test_zero_shot_prompt_is_the_sft_prompt():
    for p in PROBLEMS:
        ex = sft_example(p)
        assert ex == {"prompt": zero_shot_prompt(p), "completion": reference_text(p)}
        assert ex["prompt"] == render_problem(p) and ex["prompt"].endswith("\n")
        assert ex["prompt"].startswith("Problem: ") and "Proof:" not in ex["prompt"]
        assert ex["completion"].startswith(f"Proof: {p.lhs}\n")
        assert parse_proof(ex["completion"]).start == p.lhs  # the reference completion is in the parsed format
        assert build_prompt(p, "zero_shot").text == ex["prompt"]
        assert few_shot_prompt(p, []) == ex["prompt"]


def test_render_shows_domain_question_and_options():
    text = render_problem(BY_ID["cons-1"])
    assert "Domain: a, b, c > 0 with a + b + c = 3\n" in text and text.endswith("end with QED).\n")
    assert "Domain: a, b real" in render_problem(BY_ID["sos-1"])
    bound = render_problem(BY_ID["sos-3"])
    assert "Question:" not in bound  # the statement already asks it: not repeated
    assert bound.strip().endswith("'Answer: <constant>'.")
    bare = replace(BY_ID["sos-3"], statement="Let $p$, $q$ be real numbers.")
    assert "Question: Find the largest constant $C$" in render_problem(bare)
    rel = render_problem(BY_ID["amgm-2"])
    assert rel.count("(A)") == 1 and "Options:" not in rel and "'Answer: <letter>'" in rel
    plain = replace(BY_ID["amgm-2"], statement="Let $x$ be positive.", question="How do $L$ and $R$ compare?")
    assert "Options: (A) L <= R (B) L >= R (C) L = R" in render_problem(plain)
    with pytest.raises(ValueError, match="amgm-2.*needs options"):
        render_problem(replace(plain, options=()))
    with pytest.raises(ValueError, match="sos-1.*unknown variant 'essay'"):
        render_problem(replace(BY_ID["sos-1"], variant="essay"))


def test_shots_come_from_the_pool_same_family_first_never_the_target():
    target = BY_ID["sos-1"]
    clone = replace(target, problem_id="sos-1-copy")  # the same claim under another id is the target too
    pool = PROBLEMS + [clone]
    for seed in range(5):
        shots = select_shots(target, pool, k=3, seed=seed)
        ids = [s.problem_id for s in shots]
        assert len(ids) == 3 and "sos-1" not in ids and "sos-1-copy" not in ids
        assert {s.family for s in shots[:2]} == {"sos"} and shots[2].family != "sos"
        assert shots[0].problem_id == "sos-2"  # same family and variant before same family, other variant
        assert select_shots(target, pool, k=3, seed=seed) == shots  # deterministic given the seed
    firsts = {select_shots(BY_ID["titu-1"], PROBLEMS, k=1, seed=s)[0].problem_id for s in range(12)}
    assert len(firsts) > 1  # no same-family shot: the seed picks among the rest

    text = few_shot_prompt(target, shots)
    assert text.count("Problem: ") == 4 and text.endswith(zero_shot_prompt(target))
    assert text.startswith(worked_example(shots[0]) + "\n\n")
    for s in shots:
        assert worked_example(s) in text and reference_text(s) in text
    assert reference_text(target) not in text


def test_prompt_budget_drops_shots_and_records_the_count():
    target = BY_ID["sos-1"]
    full = build_prompt(target, "few_shot", PROBLEMS, k=3, seed=0)
    assert full.shots_used == 3 and not full.over_budget and full.mode == "few_shot"
    one = len(zero_shot_prompt(target)) + len(worked_example(BY_ID["sos-2"])) + 2
    tight = build_prompt(target, "few_shot", PROBLEMS, k=3, seed=0, max_prompt_chars=one + 10)
    assert 1 <= tight.shots_used < 3 and len(tight.text) <= one + 10 and not tight.over_budget
    assert tight.text.endswith(zero_shot_prompt(target))
    none = build_prompt(target, "few_shot", PROBLEMS, k=3, seed=0, max_prompt_chars=len(zero_shot_prompt(target)))
    assert none.shots_used == 0 and none.text == zero_shot_prompt(target) and not none.over_budget
    over = build_prompt(target, "few_shot", PROBLEMS, k=3, seed=0, max_prompt_chars=20)
    assert over.shots_used == 0 and over.over_budget  # the target is never dropped
    shots = select_shots(target, PROBLEMS, k=3, seed=0)
    cut = few_shot_prompt(target, shots, max_prompt_chars=len(few_shot_prompt(target, shots[:2])))
    assert cut == few_shot_prompt(target, shots[:2])  # the explicit list is cut from its end
    with pytest.raises(ValueError, match="mode='one_shot'"):
        build_prompt(target, "one_shot")
    with pytest.raises(ValueError, match="k=-1"):
        select_shots(target, PROBLEMS, k=-1)


# ----- LLM judge rubric and parser -----


def test_judge_prompt_holds_the_rubric_and_reference_answer():
    text = judge_prompt(BY_ID["amgm-2"], "Proof: x + 4/x\n>= 4\nQED\nAnswer: B")
    for key in ("final_answer:", "toy_case:", "logical_gap:", "approximation:", "calculation:", "verdict:"):
        assert key in text
    assert "Reference answer: B" in text and text.endswith("Assessment:\n") and "Answer: B" in text
    assert "Reference answer" not in judge_prompt(BY_ID["sos-1"], "")


def test_parse_well_formed_verdict():
    out = parse_judge_output("final_answer: n/a\ntoy_case: pass\nlogical_gap: pass\napproximation: pass\n"
                             "calculation: pass\nverdict: correct\n")
    assert out == {"final_answer": "n/a", "toy_case": "pass", "logical_gap": "pass", "approximation": "pass",
                   "calculation": "pass", "verdict": "correct", "parsed": True}
    assert verdict_score(out) == 1


def test_parse_messy_verdict():
    messy = """Let me check each step. The second step looks fine.
    1. **Final Answer**: Incorrect (the reference is B)
    - Toy-Case :  PASS
    * logical gaps = fail.
    ## Unjustified approximation: pass
    Calculation errors: Pass
    verdict: correct
    **Final Verdict:** INCORRECT
    """
    out = parse_judge_output(messy)
    assert out["final_answer"] == "incorrect" and out["toy_case"] == "pass" and out["logical_gap"] == "fail"
    assert out["approximation"] == "pass" and out["calculation"] == "pass"
    assert out["verdict"] == "incorrect" and out["parsed"]  # the last verdict line wins
    assert verdict_score(out) == 0
    # a correct verdict with a failed criterion is not accepted
    assert verdict_score(parse_judge_output("toy_case: fail\nverdict: correct")) == 0
    assert verdict_score(parse_judge_output("final_answer: incorrect\nverdict: correct")) == 0
    assert verdict_score(parse_judge_output("VERDICT:Correct.")) == 1


@pytest.mark.parametrize("garbage", ["", "The proof is great!", "verdict: correct|incorrect",
                                     "verdict: maybe\ntoy_case: ???", "x" * 500, "\n\n: : :"])
def test_parse_garbage_gives_no_verdict(garbage):
    out = parse_judge_output(garbage)
    assert out["verdict"] is None and out["parsed"] is False
    assert verdict_score(out) == 0


# ----- agreement -----


def test_agreement_perfect_chance_opposite_and_degenerate():
    perfect = agreement([1, 0, 1, 0, 1], [1, 0, 1, 0, 1])
    assert perfect["raw"] == 1.0 and perfect["kappa"] == 1.0 and not perfect["degenerate"]
    chance = agreement([1, 1, 0, 0] * 5, [1, 0, 1, 0] * 5)
    assert chance["raw"] == 0.5 and abs(chance["kappa"]) < 1e-12
    assert (chance["both_1"], chance["a1_b0"], chance["a0_b1"], chance["both_0"]) == (5, 5, 5, 5)
    assert agreement([1, 0, 1, 0], [0, 1, 0, 1])["kappa"] == -1.0
    known = agreement([1, 1, 1, 0, 0, 1], [1, 1, 0, 0, 1, 1])  # p_o = 4/6, p_e = 4/6*4/6 + 2/6*2/6 = 5/9
    assert known["kappa"] == pytest.approx((4 / 6 - 5 / 9) / (1 - 5 / 9)) and known["n"] == 6
    for cls in (0, 1):
        deg = agreement([cls] * 4, [cls] * 4)  # p_e = 1: defined as 1.0, flagged, no division by zero
        assert deg["kappa"] == 1.0 and deg["raw"] == 1.0 and deg["degenerate"]
    one_sided = agreement([1, 1, 1, 1], [1, 1, 0, 1])  # one rater constant: kappa 0, not degenerate
    assert one_sided["kappa"] == 0.0 and one_sided["raw"] == 0.75 and not one_sided["degenerate"]
    assert agreement([True, False], [1, 0])["kappa"] == 1.0
    empty = agreement([], [])
    assert empty["n"] == 0 and empty["raw"] is None and empty["kappa"] is None
    with pytest.raises(ValueError, match="equal lengths, got 2 and 1"):
        agreement([1, 0], [1])
    with pytest.raises(ValueError, match=r"b holds non-binary values \[2\]"):
        agreement([1, 0], [1, 2])


# ----- the mechanical judge on reference completions -----


def test_mechanical_judge_accepts_every_reference_completion():
    for p in PROBLEMS:
        out = mechanical_judge(p, reference_text(p))
        assert out["score"] == 1, (p.problem_id, out)
    assert mechanical_judge(BY_ID["sos-1"], "Proof: a**2 + b**2\n>= 3*a*b\nQED")["score"] == 0
    assert mechanical_judge(BY_ID["amgm-2"], reference_text(BY_ID["amgm-2"])[:-1] + "A")["score"] == 0


# ----- the harness end to end -----


@pytest.fixture(scope="module")
def nano_engine(solver_store):
    return HFEngine.from_pretrained("nano", solver_store, device="cpu")


def _check_result(res: EvalResult, mode: str, targets: list[Problem], judges: list[str], tmp_path) -> dict:
    assert res.mode == mode and res.model == "nano" and res.judges == judges
    assert [r.problem_id for r in res.rows] == [p.problem_id for p in targets]
    for r, p in zip(res.rows, targets):
        assert (r.family, r.variant, r.mode) == (p.family, p.variant, mode)
        assert r.prompt_chars == len(r.prompt) and r.prompt.endswith(zero_shot_prompt(p))
        assert r.shots_used == len(r.shot_ids) and p.problem_id not in r.shot_ids
        assert isinstance(r.completion, str) and r.finish_reason in ("stop", "length")
        assert set(r.scores) == set(judges) and all(s in (0, 1) for s in r.scores.values())
    summary = json.loads(json.dumps(res.summary()))  # JSON-able
    assert summary["n"] == len(targets) and summary["mode"] == mode
    for j in judges:
        s = summary["scores"][j]
        assert 0 <= s["mean"] <= 1 and set(s["by_family"]) == {p.family for p in targets}
        assert set(s["by_variant"]) == {p.variant for p in targets}
    assert set(summary["agreement"]) == {f"{a}|{b}" for i, a in enumerate(judges) for b in judges[i + 1:]}
    for agr in summary["agreement"].values():
        assert agr["n"] == len(targets) and agr["both_1"] + agr["a1_b0"] + agr["a0_b1"] + agr["both_0"] == len(targets)
    table = res.to_table()
    assert table.num_rows == len(targets)
    assert {"problem_id", "family", "variant", "mode", "prompt_chars", "shots_used", "shot_ids", "completion",
            *(f"score_{j}" for j in judges), *(f"details_{j}" for j in judges)} <= set(table.column_names)
    pq.write_table(table, tmp_path / f"{mode}.parquet")
    back = pq.read_table(tmp_path / f"{mode}.parquet")
    assert back.column("problem_id").to_pylist() == [p.problem_id for p in targets]
    return summary


def test_evaluate_both_modes_with_mechanical_and_llm_judges(nano_engine, tmp_path):
    targets = [BY_ID["sos-1"], BY_ID["amgm-2"], BY_ID["cons-1"]]
    llm = LLMJudge(nano_engine, max_new_tokens=8)
    judges = {"mechanical": mechanical_judge, "llm": llm}

    few = evaluate(nano_engine, targets, "few_shot", train_pool=PROBLEMS, judges=judges, seed=0,
                   max_new_tokens=12, k_shots=2, max_prompt_chars=1200)
    s = _check_result(few, "few_shot", targets, ["mechanical", "llm"], tmp_path)
    assert all(r.shots_used >= 1 and r.prompt_chars <= 1200 for r in few.rows)
    assert few.rows[0].shot_ids[0] in ("sos-2", "sos-3")  # same family first
    assert s["config"]["k_shots"] == 2 and s["config"]["stop"] == STOP and s["config"]["temperature"] == 0
    for r in few.rows:
        d = r.details["llm"]
        assert {"verdict", "parsed", "raw", "score"} <= set(d) and d["score"] == verdict_score(d)
    assert s["scores"]["llm"]["unparsed"] == sum(not r.details["llm"]["parsed"] for r in few.rows)

    def crashes_on_relations(problem, text):  # a judge that raises is scored 0 and counted, not fatal
        if problem.variant == "relation":
            raise RuntimeError("no relations here")
        return {"score": 1}

    judges3 = {**judges, "crashy": crashes_on_relations}
    zero = evaluate(nano_engine, targets, "zero_shot", judges=judges3, seed=0, max_new_tokens=12)
    s0 = _check_result(zero, "zero_shot", targets, ["mechanical", "llm", "crashy"], tmp_path)
    assert all(r.shots_used == 0 and r.prompt == zero_shot_prompt(p) for r, p in zip(zero.rows, targets))
    assert zero.rows[1].details["crashy"]["error"] == "RuntimeError: no relations here"
    assert s0["scores"]["crashy"]["errors"] == 1 and s0["scores"]["crashy"]["mean"] == pytest.approx(2 / 3)
    assert s0["config"]["k_shots"] == 0

    # greedy and per-problem seeds: the same problem gives the same completion alone or in a batch
    alone = evaluate(nano_engine, targets[:1], "zero_shot", judges={}, seed=0, max_new_tokens=12)
    assert alone.rows[0].completion == zero.rows[0].completion and alone.judges == []


def test_llm_judge_on_reference_completions_is_well_formed(nano_engine):
    """The nano model is no judge; this checks the batch path returns one parsed dict per item."""
    llm = LLMJudge(nano_engine, SamplingParams(temperature=0.9, top_p=0.95), max_new_tokens=6, seed=1)
    out = llm.judge(PROBLEMS[:3], [reference_text(p) for p in PROBLEMS[:3]])
    assert len(out) == 3
    for d in out:
        assert d["score"] in (0, 1) and isinstance(d["raw"], str) and d["parsed"] == (d["verdict"] is not None)
    assert llm.judge(PROBLEMS[:3], [reference_text(p) for p in PROBLEMS[:3]]) == out  # seeded: repeatable
    assert llm(PROBLEMS[0], reference_text(PROBLEMS[0])) == out[0]  # single call: same per-problem seed


def test_evaluate_rejects_bad_inputs(nano_engine):
    p = [BY_ID["sos-1"]]
    with pytest.raises(ValueError, match="few_shot.*train_pool"):
        evaluate(nano_engine, p, "few_shot")
    with pytest.raises(ValueError, match="mode='zero'"):
        evaluate(nano_engine, p, "zero")
    with pytest.raises(ValueError, match="sampling.n=2"):
        evaluate(nano_engine, p, "zero_shot", sampling=SamplingParams(n=2))
    with pytest.raises(ValueError, match=r"judge name 'a\|b'"):
        evaluate(nano_engine, p, "zero_shot", judges={"a|b": mechanical_judge})
    with pytest.raises(ValueError, match=r"duplicate problem ids: \['sos-1'\]"):
        evaluate(nano_engine, p * 2, "zero_shot")
    with pytest.raises(ValueError, match="sampling.n=3"):
        LLMJudge(nano_engine, SamplingParams(n=3))
    with pytest.raises(ValueError, match="2 problems but 1 completions"):
        LLMJudge(nano_engine).judge(PROBLEMS[:2], ["x"])
    with pytest.raises(TypeError, match="judge 'bad' returned str for problem sos-1"):
        evaluate(nano_engine, p, "zero_shot", judges={"bad": lambda prob, text: "yes"}, max_new_tokens=2)
