"""The tool-integrated best-of-N loop: end to end with a trained nano model and real sandboxes, and
its round mechanics with a scripted engine (an Engine whose completions are fixed in the test)."""

from __future__ import annotations

import asyncio

import pytest

from squigglray.engines import Completion, Engine, HFEngine
from squigglray.families import sample
from squigglray.schemas.solve import SolveOptions
from squigglray.solve.executor import LocalExecutor
from squigglray.solve.tir import solve
from squigglray.solve.tir import last_code_block, truncate


@pytest.fixture(scope="module")
def executor():
    ex = LocalExecutor(1)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def nano_engine(solver_store):
    return HFEngine.from_pretrained("nano", solver_store)


def test_tir_end_to_end_with_the_nano_model(nano_engine, executor):
    x = sample("mod_power", 1, seed=11, difficulty="easy")[0]
    opts = SolveOptions(n=8, max_tokens_per_round=100, early_stop=False, seed=3)
    r = asyncio.run(solve(x.problem, nano_engine, executor, opts, traces=True))
    assert r.n_candidates == 8 and not r.stopped_early
    ran = [c for c in r.candidates if c.code_runs]
    assert ran, "the model should write code that the sandbox runs"
    for c in ran:
        run = c.code_runs[0]
        assert f"```output\n{run.output}\n```" in c.text  # the real output was fed back
        assert c.code_ok == (c.code_runs[-1].status == "ok")
    assert r.answer is not None and r.answer in r.votes
    assert sum(r.counts.values()) <= 8
    assert r.timings["generate_s"] > 0 and r.timings["execute_s"] > 0

    again = asyncio.run(solve(x.problem, nano_engine, executor, opts, traces=True))
    assert [c.text for c in again.candidates] == [c.text for c in r.candidates]  # deterministic given seeds
    other = asyncio.run(solve(x.problem, nano_engine, executor, opts.model_copy(update={"seed": 4}), traces=True))
    assert [c.text for c in other.candidates] != [c.text for c in r.candidates]


def test_early_stop_when_enough_candidates_agree(nano_engine, executor):
    x = sample("arithmetic", 1, seed=2, difficulty="easy")[0]
    opts = SolveOptions(n=64, wave_size=4, agree_k=2, max_tokens_per_round=100)
    r = asyncio.run(solve(x.problem, nano_engine, executor, opts))
    assert r.stopped_early and r.n_candidates < 64
    assert max(r.counts.values()) >= 2


def test_without_code_execution_the_model_writes_its_own_output(nano_engine, executor):
    x = sample("arithmetic", 1, seed=2, difficulty="easy")[0]
    opts = SolveOptions(n=4, execute_code=False, early_stop=False, max_tokens_per_round=60)
    r = asyncio.run(solve(x.problem, nano_engine, executor, opts))
    assert all(not c.code_runs and not c.code_ok for c in r.candidates)


def test_bad_problem_is_refused(nano_engine, executor):
    for bad in ["", "   ", 5, None]:
        with pytest.raises(ValueError, match="problem"):
            asyncio.run(solve(bad, nano_engine, executor, SolveOptions(n=1)))


class ScriptedEngine(Engine):
    """Replays fixed completions round by round (the same for every candidate)."""

    name = "scripted"

    def __init__(self, script: list[tuple[str, str | None]]):
        self.script, self.prompts, self.calls = script, [], 0

    @property
    def model_name(self) -> str:
        return "scripted"

    async def generate(self, prompts, params, seeds=None):
        out = []
        for p in prompts:
            text, stop = self.script[p.split("Solution:\n", 1)[1].count("```output")]
            self.prompts.append(p)
            out.append([Completion(text, "stop", stop, 1, 1)])
        self.calls += 1
        return out


def test_rounds_reflexion_and_state(executor):
    fail = ("First try.\n```python\nx = 6\nprint(undefined_name)\n```\n", "```output")
    fix = ("Fix it.\n```python\nprint(x * 7)\n```\n", "```output")
    answer = ("The answer is \\boxed{42}.", None)
    engine = ScriptedEngine([fail, fix, answer])
    opts = SolveOptions(n=1, rounds=4, prompt="tir", early_stop=False)
    r = asyncio.run(solve("Compute 6 * 7.", engine, executor, opts, traces=True))
    c = r.candidates[0]
    assert [run.status for run in c.code_runs] == ["error", "ok"]
    assert "NameError" in c.code_runs[0].output
    assert c.code_runs[1].output == "42"  # x from the failed block survives in the session
    assert "The code above failed" in c.text  # reflexion prompt after the error
    assert (r.answer, c.code_ok, c.weight, c.rounds) == ("42", True, 2.0, 3)


def test_rounds_are_capped(executor):
    loop = ("```python\nprint(1)\n```\n", "```output")
    engine = ScriptedEngine([loop] * 10)
    r = asyncio.run(solve("Print 1.", engine, executor, SolveOptions(n=1, rounds=2, early_stop=False)))
    assert len(r.candidates[0].code_runs) == 2 and r.candidates[0].rounds == 3


def test_code_block_extraction_and_truncation():
    seg = "a\n```python\nprint(1)\n```\nb\n```python\nprint(2)\n```\n"
    assert last_code_block(seg) == "print(2)"
    assert last_code_block("no code") is None
    t = truncate("x" * 1000, 100)
    assert len(t) < 200 and "characters cut" in t


def test_heldout_rules_keep_the_trace_as_written():
    """The held-out evaluation runs this loop with HELDOUT_RULES: the first complete code block
    runs, its output block follows the text exactly as generated (no newline tidied), an ```output
    opened without code ends the trace with the marker kept, and the answer round is short."""
    from squigglray.eval.heldout import HELDOUT_ANSWER_TOKENS, HELDOUT_RULES
    from squigglray.eval.run_code import SubprocessExecutor
    from squigglray.solve.tir import Candidate, run_batches

    class Recording(ScriptedEngine):
        async def generate(self, prompts, params, seeds=None):
            self.params = getattr(self, "params", []) + [params]
            return [[Completion(text, "stop", stop, 1, 1)]
                    for text, stop in (self.script[min(1, p.count("```output"))] for p in prompts)]

    code = ("Compute.\n```python\nprint(6 * 7)\n```\n```python\nprint(0)\n```\n\n", "```output")
    engine = Recording([code, ("The answer is \\boxed{42}.", None)])
    opts = SolveOptions.model_construct(n=1, rounds=1, temperature=0.0, max_tokens_per_round=200,
                                        code_timeout_s=5.0, output_chars=2000, execute_code=True,
                                        early_stop=False, reflexion=False, critique=False, prompt="squigglray")
    ex = SubprocessExecutor()
    try:
        cands = [Candidate(index=0, prompt="Problem: 6*7\nSolution:\n", seed=0, session="h-0")]
        asyncio.run(run_batches(cands, engine, ex, opts, 8, HELDOUT_RULES))
        assert cands[0].text == code[0] + "```output\n42\n```\nThe answer is \\boxed{42}."
        assert [p.max_tokens for p in engine.params] == [200, HELDOUT_ANSWER_TOKENS]
        assert engine.params[0].stop == ["```output"] and engine.params[1].stop == []

        bare = Recording([("No code here.\n", "```output")])
        cands = [Candidate(index=0, prompt="Problem: x\nSolution:\n", seed=0, session="h-1")]
        asyncio.run(run_batches(cands, bare, ex, opts, 8, HELDOUT_RULES))
        assert cands[0].text == "No code here.\n```output" and cands[0].finished and not cands[0].runs
        assert len(bare.params) == 1
    finally:
        ex.close()
