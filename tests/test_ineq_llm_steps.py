"""Prompts and parsers of the two LLM data steps: corrupted proofs really fail, verdicts parse."""

from __future__ import annotations

import random

from squigglray.ineq.generator import generate
from squigglray.ineq.llm_steps import (corrupt, generation_prompt, parse_verdict, shot_pool,
                                       verification_prompt, verification_shots)
from squigglray.ineq.prompts import render_statement, zero_shot_prompt
from squigglray.ineq.proof_text import reference_text
from squigglray.ineq.verifier import judge_completion


def test_verification_shots_pair_true_and_really_false_proofs():
    problems = generate(["reciprocal", "sos", "titu", "constrained"], 6, seed=0)
    shots = verification_shots(problems, 6, 0, judge_completion)
    assert [ok for _, _, ok in shots] == [True, False] * 3
    for p, text, ok in shots:
        assert judge_completion(p, text, timeout_s=20)["score"] == int(ok)
    prompt = verification_prompt(problems[0], reference_text(problems[0]), shots)
    assert prompt.count("Verdict: correct") == 3 and prompt.count("Verdict: incorrect") == 3
    assert prompt.endswith("Verdict:") and render_statement(problems[0]) in prompt


def test_corruptions_differ_from_the_reference():
    rng = random.Random(0)
    for p in generate(None, 3, seed=1):
        assert corrupt(p, rng) != reference_text(p)


def test_generation_prompt_and_shot_pool():
    problems = generate(["am_gm", "sos", "nesbitt"], 4, seed=0)
    shots = shot_pool(problems, 3, seed=0)
    assert len({s.family for s in shots}) == 3
    prompt = generation_prompt(problems[0], problems, 3, seed=0)
    assert prompt.count("Problem:") == 4 and prompt.endswith(zero_shot_prompt(problems[0]))
    assert prompt.count(f"Problem: {problems[0].statement}") == 1  # never its own worked example


def test_parse_verdict():
    assert parse_verdict(" correct\n") is True
    assert parse_verdict("Verdict: INCORRECT because") is False
    assert parse_verdict("incorrect.") is False
    assert parse_verdict("maybe") is None and parse_verdict("") is None
