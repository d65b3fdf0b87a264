"""Tool-integrated best-of-N: each candidate generates until it opens ```output, its code runs in
the candidate's own sandbox session, the (truncated) output is appended, and it continues, up to R
rounds; then the candidates vote.

Candidates advance in lockstep rounds: every active candidate of a wave generates in one engine call
with its own seed, then all their code runs at once. Batches are as large as they can be, and the
result depends only on the seeds, not on timing. The vote is checked after every round, so a wave
stops as soon as the leading answer can no longer be overtaken.

This is the one tool-integrated generation loop: the solver (`solve`), its evaluation
(`sample_candidates`) and the held-out evaluation of a trained model (squigglray.eval.heldout,
greedy, one code round, with `RoundRules` that keep the trace exactly as the model wrote it) run it.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Literal

from squigglray.engines import Engine, SamplingParams, derive_seed
from squigglray.families.trace import OUTPUT_OPEN
from squigglray.schemas.solve import CandidateRecord, CodeRun, SolveOptions, SolveResult
from squigglray.solve import prompts
from squigglray.solve.answers import extract_answer
from squigglray.solve.executor import CodeExecutor
from squigglray.solve.vote import CandidateAnswer, aimo_weight, should_stop, weighted_vote

_CODE_RE = re.compile(r"```python\n(.*?)```", re.DOTALL)


@dataclass
class Candidate:
    index: int
    prompt: str
    seed: int
    session: str
    text: str = ""
    rounds: int = 0
    tokens: int = 0
    finished: bool = False
    critiqued: bool = False
    runs: list[CodeRun] = field(default_factory=list)
    _parsed: tuple[str, str | None] = ("", None)  # (text, its answer): votes run every round

    @property
    def answer(self) -> str | None:
        if self._parsed[0] != self.text:
            self._parsed = (self.text, extract_answer(self.text))
        return self._parsed[1]

    @property
    def code_ok(self) -> bool:
        """Seed 004's "did the code execute successfully": it ran code, and its last run was clean."""
        return bool(self.runs) and self.runs[-1].status == "ok"

    def vote_entry(self) -> CandidateAnswer:
        return CandidateAnswer(self.index, self.answer, self.code_ok, self.finished)


def last_code_block(segment: str) -> str | None:
    blocks = _CODE_RE.findall(segment)
    return blocks[-1].rstrip("\n") if blocks else None


@dataclass(frozen=True)
class RoundRules:
    """How a round's generation becomes the next round's prompt. The defaults are the solver's."""

    # the code a round that opened ```output runs, from the round's text (without the marker)
    code_block: Callable[[str], str | None] = last_code_block
    # an ```output opened without a code block: "continue" shows it an empty output and goes on;
    # "finish" ends the candidate there, the marker kept in its text
    open_without_code: Literal["continue", "finish"] = "continue"
    # one newline between the round's text and the output block (else the text as generated)
    tidy_newlines: bool = True
    # tokens of the last round (None: max_tokens_per_round, as every round)
    final_round_tokens: int | None = None


SOLVER_RULES = RoundRules()


def truncate(output: str, limit: int) -> str:
    if len(output) <= limit:
        return output
    half = limit // 2
    return f"{output[:half]}\n... ({len(output) - limit} characters cut) ...\n{output[-half:]}"


async def advance_round(cands: list[Candidate], engine: Engine, executor: CodeExecutor | None,
                        opts: SolveOptions, final: bool, timings: dict[str, float],
                        rules: RoundRules = SOLVER_RULES) -> None:
    """One lockstep round for the given unfinished candidates."""
    use_code = opts.execute_code and executor is not None and not final
    max_tokens = opts.max_tokens_per_round * (1 if opts.execute_code else opts.rounds + 1)
    if final and rules.final_round_tokens is not None:
        max_tokens = rules.final_round_tokens
    params = SamplingParams(n=1, temperature=opts.temperature, top_p=opts.top_p, max_tokens=max_tokens,
                            stop=[OUTPUT_OPEN] if use_code else [])
    t0 = time.perf_counter()
    outs = await engine.generate([c.prompt + c.text for c in cands], params,
                                 seeds=[derive_seed(c.seed, c.rounds) for c in cands])
    timings["generate_s"] += time.perf_counter() - t0
    to_run: list[tuple[Candidate, str]] = []
    for c, [out] in zip(cands, outs):
        c.text += out.text
        c.tokens += out.completion_tokens
        c.rounds += 1
        wants_run = use_code and out.stop_reason == OUTPUT_OPEN
        code = rules.code_block(out.text) if wants_run else None
        if code is not None:
            to_run.append((c, code))
        elif wants_run and rules.open_without_code == "finish":
            c.text += OUTPUT_OPEN
            c.finished = True
        elif wants_run:  # opened an output block with no code: show it nothing
            c.text += prompts.output_block("")
        elif opts.critique and not c.critiqued and prompts.CRITIQUE[opts.prompt] and c.answer is not None:
            c.critiqued = True
            c.text += prompts.CRITIQUE[opts.prompt]
        else:
            c.finished = True
    if not to_run:
        return
    t0 = time.perf_counter()
    results = await asyncio.gather(*(executor.run(code, c.session, opts.code_timeout_s) for c, code in to_run))
    timings["execute_s"] += time.perf_counter() - t0
    for (c, code), r in zip(to_run, results):
        shown = truncate(r.model_output(max_chars=opts.output_chars * 4), opts.output_chars)
        c.runs.append(CodeRun(code=code, status=r.status, output=shown, duration_s=r.duration_s))
        c.text = (c.text.rstrip("\n") + "\n" if rules.tidy_newlines else c.text) + prompts.output_block(shown)
        if r.status != "ok" and opts.reflexion:
            c.text += prompts.REFLEXION[opts.prompt]


async def run_wave(cands: list[Candidate], engine: Engine, executor: CodeExecutor | None, opts: SolveOptions,
                   timings: dict[str, float], stop_check=None, rules: RoundRules = SOLVER_RULES) -> bool:
    """Advance candidates until all finish (or `await stop_check()` says the vote is decided).
    True if stopped early."""
    try:
        for r in range(opts.rounds + 1 + int(opts.critique)):
            active = [c for c in cands if not c.finished]
            if not active:
                return False
            await advance_round(active, engine, executor, opts, final=r >= opts.rounds, timings=timings, rules=rules)
            if stop_check is not None and await stop_check():
                return any(not c.finished for c in cands)
        for c in cands:
            c.finished = True
        return False
    finally:
        if executor is not None and opts.execute_code:
            await asyncio.gather(*(executor.close_session(c.session) for c in cands if c.runs))


def _record(c: Candidate, traces: bool) -> CandidateRecord:
    return CandidateRecord(index=c.index, answer=c.answer, code_ok=c.code_ok, finished=c.finished,
                           rounds=c.rounds, tokens=c.tokens, weight=aimo_weight(c.answer, c.code_ok),
                           code_runs=c.runs, text=c.text if traces else None)


def make_candidates(prompt: str, opts: SolveOptions, start: int, count: int, tag: str) -> list[Candidate]:
    """Candidates start..start+count-1 of one problem, whose prompt is `prompts.prompt_for`'s."""
    return [Candidate(index=i, prompt=prompt, seed=derive_seed(opts.seed, i), session=f"{tag}-{i}")
            for i in range(start, start + count)]


async def solve(problem: str, engine: Engine, executor: CodeExecutor | None, opts: SolveOptions,
                equivalence=None, traces: bool = False) -> SolveResult:
    """Best-of-N with tool use and weighted vote, in waves, stopping once the answer is decided."""
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("problem must be a non-empty string")
    t_start = time.perf_counter()
    timings = {"generate_s": 0.0, "execute_s": 0.0}
    tag = uuid.uuid4().hex[:12]
    done: list[Candidate] = []  # every candidate started so far
    stopped = False
    max_weight = 1.0 if opts.mode == "majority" else 2.0

    async def vote(cands):
        entries = [c.vote_entry() for c in cands if c.finished]
        if opts.mode == "general":  # math-verify calls block up to their timeout: keep them off the loop
            return await asyncio.to_thread(weighted_vote, entries, opts.mode, equivalence)
        return weighted_vote(entries, opts.mode, equivalence)

    async def decided() -> bool:
        if not opts.early_stop:
            return False
        finished = [c for c in done if c.finished]
        return should_stop(await vote(finished), opts.n - len(finished), opts.agree_k, max_weight)

    prompt = await prompts.prompt_for(problem, opts.prompt, engine)
    for start in range(0, opts.n, opts.wave_size):
        wave = make_candidates(prompt, opts, start, min(opts.wave_size, opts.n - start), tag)
        done += wave
        stopped = await run_wave(wave, engine, executor, opts, timings, decided)
        if stopped or (len(done) < opts.n and await decided()):
            stopped = True
            break
    result = await vote(done)
    timings["total_s"] = time.perf_counter() - t_start
    return SolveResult(
        answer=result.answer, votes=result.votes, counts=result.counts, n_candidates=len(done),
        n_requested=opts.n, stopped_early=stopped, tie_break=result.tie_break,
        tokens=sum(c.tokens for c in done), timings=timings, candidates=[_record(c, traces) for c in done],
    )


async def sample_candidates(problems: list[str], engine: Engine, executor: CodeExecutor | None,
                            opts: SolveOptions, batch_rows: int = 256) -> list[list[CandidateRecord]]:
    """All N candidates for each problem, no early stop (for evaluation at several N); problems
    share engine batches of up to batch_rows candidates."""
    tag = uuid.uuid4().hex[:12]
    cands = [make_candidates(await prompts.prompt_for(p, opts.prompt, engine), opts, 0, opts.n, f"{tag}-{j}")
             for j, p in enumerate(problems)]
    await run_batches([c for group in cands for c in group], engine, executor, opts, batch_rows)
    return [[_record(c, traces=False) for c in group] for group in cands]


async def run_batches(cands: list[Candidate], engine: Engine, executor: CodeExecutor | None, opts: SolveOptions,
                      batch_rows: int, rules: RoundRules = SOLVER_RULES) -> dict[str, float]:
    """Every candidate to its end, no early stop, in consecutive waves of up to batch_rows
    candidates (a wave's rounds are its engine batches); returns the generate/execute seconds."""
    timings = {"generate_s": 0.0, "execute_s": 0.0}
    for i in range(0, len(cands), batch_rows):
        await run_wave(cands[i:i + batch_rows], engine, executor, opts, timings, rules=rules)
    return timings
