"""The LLM judge: a rubric in the style of IneqMath (Stanford 2025) answered in a fixed line format.

IneqMath found that final-answer accuracy hides unsound proofs, so besides the final answer of
bound/relation problems the judge checks four step-wise failure modes: toy-case reasoning (the
result claimed from special cases), logical gaps, unjustified approximations and calculation errors.
A completion scores 1 only when the verdict is ``correct`` and nothing failed. The judge model is
any Engine (hf, vllm, or an OpenAI-compatible server); all prompts of a batch go to one
``engine.generate`` call. ``agreement`` compares two judges (e.g. this one against the mechanical
verifier) by raw agreement and Cohen's kappa.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from fractions import Fraction
from typing import Any

from squigglray.engines.base import Engine, SamplingParams, derive_seed
from squigglray.ineq.problems import Problem
from squigglray.ineq.prompts import render_statement

CRITERIA = ("toy_case", "logical_gap", "approximation", "calculation")
KEYS = ("final_answer", *CRITERIA, "verdict")

RUBRIC = """You are grading a proof of an olympiad inequality. Check every step.

{problem}{reference}
Proof to grade (each line '<rel> <expr> [by <lemma>(<args>)]' relates the previous expression to the
next one; expressions use Python syntax, ** is a power):
{completion}

Criteria:
- final_answer: for bound/relation problems, is the 'Answer:' line equal to the reference answer? n/a for proofs.
- toy_case: fail if the result is claimed from special cases or numerical examples instead of for all values.
- logical_gap: fail if a step does not follow, is asserted without justification, or the chain does not
  go from the left side to the right side.
- approximation: fail if a step relies on an unjustified approximation (rounding, numerical estimates).
- calculation: fail if an algebraic or arithmetic step is wrong.
The verdict is correct only if every criterion passes and the final answer, if any, is correct.

Reply with exactly these six lines:
final_answer: correct|incorrect|n/a
toy_case: pass|fail
logical_gap: pass|fail
approximation: pass|fail
calculation: pass|fail
verdict: correct|incorrect

Assessment:
"""

_KEY_RE = {
    "final_answer": r"final[\s_-]*answer",
    "toy_case": r"toy[\s_-]*cases?",
    "logical_gap": r"logic(?:al)?[\s_-]*gaps?",
    "approximation": r"(?:unjustified[\s_-]*)?approximations?",
    "calculation": r"calculations?(?:[\s_-]*errors?)?",
    "verdict": r"(?:final[\s_-]*)?verdict",
}
_LINE = re.compile(r"^(" + "|".join(f"(?P<{k}>{v})" for k, v in _KEY_RE.items()) + r")\s*[:=]\s*(?P<value>.*)$")
_POS = {"pass", "passed", "correct", "right", "true", "yes", "valid", "ok", "sound"}
_NEG = {"fail", "failed", "incorrect", "wrong", "false", "no", "invalid", "unsound"}
_NA = {"n/a", "na", "none", "n.a.", "not applicable", "-"}


def _value(key: str, raw: str) -> str | None:
    """Normalise one value; None when it is missing or ambiguous (e.g. the template echoed back)."""
    v = raw.strip().strip("*_`'\". ").lower()
    if v in _NA or v.startswith("not applicable"):
        return "n/a" if key == "final_answer" else None
    if "|" in v:
        return None
    m = re.match(r"[a-z]+", v)
    word = m.group(0) if m else ""
    good, bad = ("pass", "fail") if key in CRITERIA else ("correct", "incorrect")
    if word in _POS:
        return good
    if word in _NEG:
        return bad
    return None


def parse_judge_output(text: str) -> dict[str, Any]:
    """The six verdict lines of a judge reply, tolerant of case, spacing, markdown and bullets; the
    last occurrence of a key wins. Missing or unreadable keys are None; ``parsed`` is whether a
    verdict was found (an unparseable reply is counted by the caller, never raised)."""
    out: dict[str, Any] = dict.fromkeys(KEYS)
    for line in (text or "").splitlines():
        clean = re.sub(r"[*_`#>]", " ", line).strip().lstrip("-•").strip().lower()
        clean = re.sub(r"\s+", " ", re.sub(r"^\(?\d+[.)]\s*", "", clean))
        m = _LINE.match(clean)
        if not m:
            continue
        key = next(k for k in KEYS if m.group(k))
        val = _value(key, m.group("value"))
        if val is not None:
            out[key] = val
    out["parsed"] = out["verdict"] is not None
    return out


def verdict_score(parsed: dict[str, Any]) -> int:
    """1 iff the verdict is correct, no criterion failed and the final answer is not incorrect;
    an unparseable reply scores 0 (a judge that cannot say yes has not accepted the proof)."""
    ok = parsed.get("verdict") == "correct" and parsed.get("final_answer") != "incorrect"
    return int(ok and all(parsed.get(c) != "fail" for c in CRITERIA))


def judge_prompt(problem: Problem, completion: str) -> str:
    ref = ""
    if problem.variant != "proof":
        ref = f"Reference answer: {problem.answer}\n"
    return RUBRIC.format(problem=render_statement(problem), reference=ref, completion=completion.strip() or "(empty)")


def problem_seed(seed: int, problem_id: str) -> int:
    """A per-problem seed independent of batch position."""
    return derive_seed(seed, int(hashlib.sha256(problem_id.encode()).hexdigest()[:15], 16))


def run_sync(coro: Any, what: str) -> Any:
    """asyncio.run with a clear error inside a running loop (where the caller should await)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError(f"{what} is synchronous and an event loop is running here; await its async form instead")


class LLMJudge:
    """Rubric judge driven by any Engine; greedy by default, batched into one generate call."""

    def __init__(self, engine: Engine, sampling: SamplingParams | None = None, max_new_tokens: int = 256,
                 seed: int = 0):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        base = sampling or SamplingParams(temperature=0.0)
        if base.n != 1:
            raise ValueError(f"LLMJudge samples one verdict per completion; sampling.n={base.n} must be 1")
        self.engine = engine
        self.sampling = dataclasses.replace(base, max_tokens=max_new_tokens)
        self.seed = seed

    def prompts(self, problems: list[Problem], completions: list[str]) -> list[str]:
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
        for i, c in enumerate(completions):
            if not isinstance(c, str):
                raise TypeError(f"completion {i} is {type(c).__name__}, expected str (the completion's text)")
        return [judge_prompt(p, c) for p, c in zip(problems, completions)]

    async def ajudge(self, problems: list[Problem], completions: list[str]) -> list[dict[str, Any]]:
        """One verdict dict per completion: score, the parsed lines, parsed, the raw reply."""
        prompts = self.prompts(problems, completions)
        if not prompts:
            return []
        seeds = [problem_seed(self.seed, p.problem_id) for p in problems]
        outs = await self.engine.generate(prompts, self.sampling, seeds)
        results = []
        for out in outs:
            c = out[0]
            parsed = parse_judge_output(c.text)
            results.append({"score": verdict_score(parsed), **parsed, "raw": c.text,
                            "finish_reason": c.finish_reason})
        return results

    def judge(self, problems: list[Problem], completions: list[str]) -> list[dict[str, Any]]:
        return run_sync(self.ajudge(problems, completions), "LLMJudge.judge")

    def __call__(self, problem: Problem, completion: str) -> dict[str, Any]:
        """The plain judge signature (problem, text) -> dict; batch with `judge`/`ajudge` instead."""
        return self.judge([problem], [completion])[0]


def agreement(a: list[int], b: list[int]) -> dict[str, Any]:
    """Raw agreement, Cohen's kappa and the confusion counts of two binary raters.

    Kappa is (p_o - p_e) / (1 - p_e). When p_e = 1 both raters gave one and the same class to every
    item: kappa is undefined there, and we report 1.0 (they agree perfectly) with ``degenerate``.
    """
    if len(a) != len(b):
        raise ValueError(f"agreement needs equal lengths, got {len(a)} and {len(b)}")
    for name, xs in (("a", a), ("b", b)):
        bad = [x for x in xs if x not in (0, 1)]  # True/False compare equal to 1/0
        if bad:
            raise ValueError(f"agreement: {name} holds non-binary values {bad[:5]}; scores must be 0 or 1")
    n = len(a)
    n11 = sum(1 for x, y in zip(a, b) if x and y)
    n10 = sum(1 for x, y in zip(a, b) if x and not y)
    n01 = sum(1 for x, y in zip(a, b) if not x and y)
    n00 = n - n11 - n10 - n01
    out: dict[str, Any] = {"n": n, "both_1": n11, "a1_b0": n10, "a0_b1": n01, "both_0": n00,
                           "raw": None, "kappa": None, "degenerate": False}
    if n == 0:
        return out
    po = Fraction(n11 + n00, n)
    pa, pb = Fraction(n11 + n10, n), Fraction(n11 + n01, n)
    pe = pa * pb + (1 - pa) * (1 - pb)
    out["raw"] = float(po)
    if pe == 1:
        out["kappa"], out["degenerate"] = 1.0, True
    else:
        out["kappa"] = float((po - pe) / (1 - pe))
    return out
