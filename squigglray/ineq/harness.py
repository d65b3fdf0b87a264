"""One eval harness for the inequality task, run few-shot on the base model and zero-shot on the
fine-tuned one: the same problems, generation settings and judges, only the prompting differs.

A judge is a callable ``(problem, completion_text) -> dict`` with at least ``score`` (0 or 1), e.g.
the mechanical verifier; a judge that also has ``async ajudge(problems, texts) -> list[dict]`` (the
LLM judge) is called once with the whole batch. Every judge scores every completion, and the result
reports per-judge means (overall, per family, per variant) and the agreement of every judge pair.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from squigglray.engines.base import Engine, SamplingParams
from squigglray.ineq.judges import agreement, problem_seed, run_sync
from squigglray.ineq.problems import Problem
from squigglray.ineq.prompts import MODES, STOP, build_prompt

Judge = Callable[[Problem, str], dict]
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class EvalRow:
    problem_id: str
    family: str
    variant: str
    mode: str
    prompt: str
    prompt_chars: int
    shots_used: int
    shot_ids: list[str]
    over_budget: bool
    completion: str
    finish_reason: str
    completion_tokens: int
    scores: dict[str, int] = field(default_factory=dict)
    details: dict[str, dict] = field(default_factory=dict)


@dataclass
class EvalResult:
    mode: str
    model: str
    judges: list[str]
    rows: list[EvalRow]
    config: dict[str, Any] = field(default_factory=dict)

    def scores(self, judge: str) -> list[int]:
        if judge not in self.judges:
            raise KeyError(f"no judge {judge!r}; judges: {self.judges}")
        return [r.scores[judge] for r in self.rows]

    def summary(self) -> dict[str, Any]:
        """JSON-able: per-judge means (overall/family/variant), ``errors`` (a plain judge raised) and
        ``unparsed`` (the judge's own reply was unreadable: ``parsed`` False) counts, pairwise agreement."""
        rows = self.rows
        out: dict[str, Any] = {
            "mode": self.mode, "model": self.model, "n": len(rows), "config": self.config,
            "shots_used_mean": _mean([r.shots_used for r in rows]),
            "prompt_chars_mean": _mean([r.prompt_chars for r in rows]),
            "prompt_chars_max": max((r.prompt_chars for r in rows), default=0),
            "over_budget": sum(r.over_budget for r in rows),
            "finish_reasons": dict(Counter(r.finish_reason for r in rows)),
            "scores": {}, "agreement": {},
        }
        for j in self.judges:
            by_family, by_variant = defaultdict(list), defaultdict(list)
            for r in rows:
                by_family[r.family].append(r.scores[j])
                by_variant[r.variant].append(r.scores[j])
            out["scores"][j] = {
                "mean": _mean(self.scores(j)),
                "by_family": {k: _mean(v) for k, v in sorted(by_family.items())},
                "by_variant": {k: _mean(v) for k, v in sorted(by_variant.items())},
                "errors": sum("error" in r.details[j] for r in rows),
                "unparsed": sum(r.details[j].get("parsed") is False for r in rows),
            }
        for a, b in itertools.combinations(self.judges, 2):
            out["agreement"][f"{a}|{b}"] = agreement(self.scores(a), self.scores(b))
        return out

    def to_table(self):
        """One row per problem, for Parquet; judge details are JSON strings (their keys differ by judge)."""
        import pyarrow as pa

        cols: dict[str, Any] = {
            "problem_id": pa.array([r.problem_id for r in self.rows], pa.string()),
            "family": pa.array([r.family for r in self.rows], pa.string()),
            "variant": pa.array([r.variant for r in self.rows], pa.string()),
            "mode": pa.array([r.mode for r in self.rows], pa.string()),
            "model": pa.array([self.model] * len(self.rows), pa.string()),
            "prompt": pa.array([r.prompt for r in self.rows], pa.string()),
            "prompt_chars": pa.array([r.prompt_chars for r in self.rows], pa.int32()),
            "shots_used": pa.array([r.shots_used for r in self.rows], pa.int32()),
            "shot_ids": pa.array([r.shot_ids for r in self.rows], pa.list_(pa.string())),
            "over_budget": pa.array([r.over_budget for r in self.rows], pa.bool_()),
            "completion": pa.array([r.completion for r in self.rows], pa.string()),
            "finish_reason": pa.array([r.finish_reason for r in self.rows], pa.string()),
            "completion_tokens": pa.array([r.completion_tokens for r in self.rows], pa.int32()),
        }
        for j in self.judges:
            cols[f"score_{j}"] = pa.array([r.scores[j] for r in self.rows], pa.int8())
            cols[f"details_{j}"] = pa.array([json.dumps(r.details[j], sort_keys=True, default=str)
                                             for r in self.rows], pa.string())
        return pa.table(cols)


def _mean(xs: list[float]) -> float | None:
    return float(statistics.fmean(xs)) if xs else None


def _check_score(name: str, problem_id: str, d: Any) -> int:
    """A judge's score as 0/1; a malformed return is a bug in the judge, so it raises."""
    if not isinstance(d, dict) or "score" not in d:
        raise TypeError(f"judge {name!r} returned {type(d).__name__} for problem {problem_id}; "
                        "expected a dict with a 'score' key")
    s = d["score"]
    if s not in (0, 1):
        raise ValueError(f"judge {name!r} gave score {s!r} for problem {problem_id}; expected 0 or 1")
    return int(s)


async def _run_judge(name: str, judge: Any, problems: list[Problem], texts: list[str]) -> list[dict]:
    """Batch judges get one call; plain ones run per row in this thread (the verifier may rely on
    signals for its timeout). A plain judge raising on one completion scores it 0 with ``error``."""
    if hasattr(judge, "ajudge"):
        out = await judge.ajudge(problems, texts)
        if len(out) != len(problems):
            raise ValueError(f"judge {name!r} returned {len(out)} results for {len(problems)} completions")
        return list(out)
    out = []
    for p, t in zip(problems, texts):
        try:
            out.append(judge(p, t))
        except Exception as e:  # noqa: BLE001 - one bad completion must not end the eval; counted in summary
            out.append({"score": 0, "error": f"{type(e).__name__}: {e}"})
    return out


def _check_inputs(problems: list[Problem], mode: str, train_pool: list[Problem], judges: dict) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    if mode == "few_shot" and not train_pool:
        raise ValueError("mode='few_shot' needs a non-empty train_pool to draw worked examples from")
    for i, p in enumerate(problems):
        if not isinstance(p, Problem):
            raise TypeError(f"problems[{i}] is {type(p).__name__}, expected Problem")
    dup = [k for k, v in Counter(p.problem_id for p in problems).items() if v > 1]
    if dup:
        raise ValueError(f"duplicate problem ids: {dup[:5]}")
    for name, j in judges.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"judge name {name!r} must match {_NAME.pattern} (it names table columns)")
        if not (callable(j) or hasattr(j, "ajudge")):
            raise TypeError(f"judge {name!r} is {type(j).__name__}: not callable and has no ajudge")


async def aevaluate(engine: Engine, problems: list[Problem], mode: str, train_pool: list[Problem] = (),
                    judges: dict[str, Judge] | None = None, sampling: SamplingParams | None = None, seed: int = 0,
                    max_new_tokens: int = 256, k_shots: int = 3,
                    max_prompt_chars: int | None = None) -> EvalResult:
    """Async form of `evaluate` (for callers already inside an event loop)."""
    problems, train_pool, judges = list(problems), list(train_pool), dict(judges or {})
    _check_inputs(problems, mode, train_pool, judges)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    base = sampling or SamplingParams(temperature=0.0)
    if base.n != 1:
        raise ValueError(f"evaluate scores one completion per problem; sampling.n={base.n} must be 1")
    params = dataclasses.replace(base, max_tokens=max_new_tokens, stop=list(dict.fromkeys([*base.stop, *STOP])))
    built = [build_prompt(p, mode, train_pool, k_shots, seed, max_prompt_chars) for p in problems]
    seeds = [problem_seed(seed, p.problem_id) for p in problems]
    outs = await engine.generate([b.text for b in built], params, seeds) if problems else []
    comps = [o[0] for o in outs]
    texts = [c.text for c in comps]
    rows = [EvalRow(p.problem_id, p.family, p.variant, mode, b.text, len(b.text), b.shots_used, list(b.shot_ids),
                    b.over_budget, c.text, c.finish_reason, c.completion_tokens)
            for p, b, c in zip(problems, built, comps)]
    for name, judge in judges.items():
        for row, d in zip(rows, await _run_judge(name, judge, problems, texts)):
            row.scores[name] = _check_score(name, row.problem_id, d)
            row.details[name] = d
    config = {"mode": mode, "seed": seed, "k_shots": k_shots if mode == "few_shot" else 0,
              "max_prompt_chars": max_prompt_chars, "max_new_tokens": max_new_tokens,
              "temperature": params.temperature, "top_p": params.top_p, "stop": params.stop,
              "train_pool_size": len(train_pool)}
    return EvalResult(mode, engine.model_name, list(judges), rows, config)


def evaluate(engine: Engine, problems: list[Problem], mode: str, train_pool: list[Problem] = (),
             judges: dict[str, Judge] | None = None, sampling: SamplingParams | None = None, seed: int = 0,
             max_new_tokens: int = 256, k_shots: int = 3, max_prompt_chars: int | None = None) -> EvalResult:
    """Prompt every problem in `mode` (few-shot shots from `train_pool`), generate in one batched call
    (greedy unless `sampling` says otherwise; per-problem seeds from `seed`, so a row does not depend
    on its batch), and score every completion with every judge."""
    return run_sync(aevaluate(engine, problems, mode, train_pool, judges, sampling, seed, max_new_tokens,
                              k_shots, max_prompt_chars), "evaluate")
