"""Solver evaluation on held-out family instances, the domain half: what to evaluate
(`SolverEvalConfig`, `resolve_target`, `eval_instances`), sampling every candidate
(`sample_problems`), and the scores (`score_problem`, `metric_rows`, ...). The job, with its Ray
sandboxes and its outputs, is squigglray/jobs/eval_solver.py.

Method. Problems are held-out family instances (the eval seed, by default the run's `eval.seed`,
with every problem text of the run's training pool removed; the pool is rebuilt from the run's
config). For each problem, max(ns) candidates are sampled once with the TIR loop
(`solve.sample_candidates`: no early stop, seeds derived from `sample_seed` and the candidate index),
once with code execution (code runs in sandboxes and its output is fed back) and once without (the
model writes its own ```output: no tool).

Metrics, per N and code mode, averaged over problems (each problem counts once):

- pass@1: the mean correctness of all max(ns) candidates of a problem (the same for every N).
- maj@N: a plain majority vote (`weighted_vote(mode='majority')`: every non-empty answer weighs 1,
  keyed by its normalized text) over N candidates is correct.
- weighted@N: seed 004's vote (`mode='aimo'`): only integers in [0, 99999] count, twice when the
  candidate's code ran cleanly. Without code execution no candidate has code_ok, so it differs from
  maj@N only by discarding non-integer answers.
- any@N: at least one of the N candidates is correct (an upper bound for any vote).

For N < max(ns) the candidates 0..max-1 are split into disjoint consecutive groups of N (first N,
next N, ...; a remainder is dropped) and the group scores are averaged: every candidate is used,
which lowers the variance compared to scoring the first N alone; the expectation is unchanged.
Correct means: both answers are AIMO integers and equal, else equal normalized text.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from squigglray.families import LEVELS, list_families
from squigglray.paths import ArtifactStore
from squigglray.schemas.problems import ProblemInstance
from squigglray.schemas.solve import CandidateRecord, SolveOptions
from squigglray.solve.answers import is_correct
from squigglray.solve.tir import sample_candidates
from squigglray.solve.vote import CandidateAnswer, weighted_vote

DEFAULT_EVAL_SEED = 1_000_003
SOLVER_EVAL_SCHEMA = "solver_eval@1.0"


class SolverEvalConfig(BaseModel):
    """What to evaluate and how to sample. Kept apart from the training config on purpose: the
    training config's hash names the run, and an evaluation setting must not force retraining."""

    model_config = ConfigDict(extra="forbid", title="evaluation settings")
    families: list[str] | None = Field(None, description="comma-separated families (default: the run's families; "
                                       "every family for a model without a run)")
    levels: list[str] = Field(default_factory=lambda: ["medium"], description="comma-separated difficulty levels")
    per_family: int = Field(2, ge=1, description="held-out problems per family and level")
    ns: list[int] = Field(default_factory=lambda: [1, 4, 16, 64], description="numbers of candidates N, comma-separated")
    seed: int | None = Field(None, ge=0, description="instance seed (default: the run's eval.seed, else 1000003)")
    sample_seed: int = Field(0, ge=0, description="seed of the sampled candidates (SolveOptions.seed)")
    code_modes: list[bool] = Field(default_factory=lambda: [True, False],
                                   description="with code execution (code, or true), without (nocode, or false) "
                                               "or both")
    rounds: int = Field(2, ge=0, le=16, description="code rounds per candidate")
    temperature: float = Field(0.8, ge=0.0, le=2.0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_tokens_per_round: int = Field(192, ge=1, description="tokens a candidate generates per round")
    code_timeout_s: float = Field(5.0, gt=0, le=120, description="seconds per code run",
                                  json_schema_extra={"flag": "--timeout", "metavar": "SECONDS"})
    output_chars: int = Field(600, ge=16, description="code output shown back to the model")
    prompt: Literal["squigglray", "tir"] = Field("squigglray", description="prompt style: squigglray (the trained "
                                                 "trace format) or tir (an instruction for hub models)")
    batch_rows: int = Field(256, ge=1, description="candidates generated together (problems share batches)")
    sandbox_workers: int = Field(2, ge=1, description="sandbox workers",
                                 json_schema_extra={"flag": "--workers", "metavar": "WORKERS"})
    sandbox_cpus: float = Field(0.25, ge=0, description="num_cpus of each sandbox actor")
    sandbox_nodes: bool = Field(False, description="sandbox actors only on CPU sandbox nodes (resource 'sandbox')")
    sandbox_allow_weak_isolation: bool = Field(False, description="where no namespaces exist (neither root nor "
                                               "user namespaces), run the sandbox in weak process mode instead of "
                                               "refusing to start (laptop configs only)")

    @field_validator("code_modes", mode="before")
    @classmethod
    def _mode_words(cls, v):
        """'code' / 'nocode' (the names the results use) for True / False."""
        words = {"code": True, "nocode": False, "no-code": False, "no_code": False}
        if isinstance(v, (list, tuple)):
            return [words.get(x.strip().lower(), x) if isinstance(x, str) else x for x in v]
        return v

    @field_validator("ns", mode="before")
    @classmethod
    def _ns_text(cls, v):
        """'1,4,16' or ['1', '4'] (the command line's) -> integers, with the message `parse_ns` gives."""
        if isinstance(v, str):
            return parse_ns(v)
        if isinstance(v, (list, tuple)) and any(isinstance(x, str) for x in v):
            return parse_ns(",".join(str(x) for x in v))
        return v

    @field_validator("families")
    @classmethod
    def _families(cls, v):
        if v is not None:
            known = set(list_families())
            bad = [f for f in v if f not in known]
            if bad:
                raise ValueError(f"unknown families {bad}; known families are {sorted(known)}")
            if not v:
                raise ValueError("families is empty (leave it unset for every family)")
        return v

    @field_validator("levels")
    @classmethod
    def _levels(cls, v):
        bad = [lv for lv in v if lv not in LEVELS]
        if bad or not v:
            raise ValueError(f"levels must be a non-empty subset of {list(LEVELS)}, got {v}")
        return v

    @field_validator("ns")
    @classmethod
    def _ns(cls, v):
        if not v or any(n < 1 for n in v):
            raise ValueError(f"ns must be positive integers, got {v}")
        if max(v) > 1024:
            raise ValueError(f"ns: at most 1024 candidates per problem, got {max(v)}")
        return sorted(set(v))

    @field_validator("code_modes")
    @classmethod
    def _modes(cls, v):
        if not v:
            raise ValueError("code_modes must hold True, False or both")
        return sorted(set(v), reverse=True)

    def solve_options(self, execute_code: bool) -> SolveOptions:
        return SolveOptions(
            n=max(self.ns), rounds=self.rounds, temperature=self.temperature, top_p=self.top_p,
            max_tokens_per_round=self.max_tokens_per_round, code_timeout_s=self.code_timeout_s,
            output_chars=self.output_chars, execute_code=execute_code, early_stop=False,
            prompt=self.prompt, seed=self.sample_seed,
        )


def parse_ns(text: str) -> list[int]:
    """'1,4,16,64' -> [1, 4, 16, 64]; a clear ValueError otherwise."""
    try:
        ns = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"--ns {text!r} must be comma-separated integers, e.g. 1,4,16,64") from None
    if not ns:
        raise ValueError(f"--ns {text!r} names no N")
    return ns


# ---------------------------------------------------------------------------------------------
# metrics (pure)
# ---------------------------------------------------------------------------------------------
def disjoint_groups(total: int, n: int) -> list[range]:
    """Consecutive groups of n among `total` candidates (first n, next n, ...); a remainder is dropped."""
    return [range(i * n, (i + 1) * n) for i in range(total // n)]


def _entry(c: CandidateRecord) -> CandidateAnswer:
    return CandidateAnswer(c.index, c.answer, c.code_ok, c.finished)


def score_problem(cands: list[CandidateRecord], gold: Any, n: int) -> dict[str, float]:
    """pass1, maj, weighted, any for one problem at N=n (group scores averaged)."""
    cands = sorted(cands, key=lambda c: c.index)
    if not cands:
        raise ValueError("a problem without candidates cannot be scored")
    if n > len(cands):
        raise ValueError(f"N={n} but the problem has only {len(cands)} candidates")
    correct = [is_correct(c.answer, gold) for c in cands]
    groups = disjoint_groups(len(cands), n)
    maj = weighted = anyc = 0.0
    for g in groups:
        entries = [_entry(cands[i]) for i in g]
        maj += is_correct(weighted_vote(entries, "majority").answer, gold)
        weighted += is_correct(weighted_vote(entries, "aimo").answer, gold)
        anyc += any(correct[i] for i in g)
    k = len(groups)
    return {"pass1": sum(correct) / len(correct), "maj": maj / k, "weighted": weighted / k, "any": anyc / k,
            "groups": k}


@dataclass
class ProblemResult:
    """One held-out problem and its candidates per code mode."""

    instance: ProblemInstance
    level: str
    candidates: dict[bool, list[CandidateRecord]] = field(default_factory=dict)


def metric_rows(problems: Iterable[ProblemResult], ns: list[int], code_modes: list[bool]) -> list[dict[str, Any]]:
    """One row per (code mode, N): the metrics averaged over problems."""
    problems = list(problems)
    rows = []
    for code in code_modes:
        scored = [p for p in problems if code in p.candidates]
        if not scored:
            continue
        for n in ns:
            per = [score_problem(p.candidates[code], p.instance.answer, n) for p in scored]
            rows.append({
                "code": code, "n": n, "problems": len(per), "groups": sum(s["groups"] for s in per),
                **{k: sum(s[k] for s in per) / len(per) for k in ("pass1", "maj", "weighted", "any")},
            })
    return rows


def per_family_rows(problems: list[ProblemResult], ns: list[int], code_modes: list[bool]) -> dict[str, list[dict]]:
    by_fam: dict[str, list[ProblemResult]] = defaultdict(list)
    for p in problems:
        by_fam[p.instance.family_id].append(p)
    return {fam: metric_rows(by_fam[fam], ns, code_modes) for fam in sorted(by_fam)}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| code | N | problems | pass@1 | maj@N | weighted@N | any@N |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {'yes' if r['code'] else 'no'} | {r['n']} | {r['problems']} | {r['pass1']:.3f} | "
                     f"{r['maj']:.3f} | {r['weighted']:.3f} | {r['any']:.3f} |")
    return "\n".join(lines) + "\n"


def summary_line(result: dict[str, Any]) -> str:
    """One sentence: does voting beat single samples, does code beat no code (at the largest N)."""
    rows = {(r["code"], r["n"]): r for r in result["table"]}
    nmax = max(result["ns"])
    parts = []
    for code in (True, False):
        r = rows.get((code, nmax))
        if r:
            parts.append(f"{'code' if code else 'no code'}: pass@1 {r['pass1']:.2f} -> weighted@{nmax} "
                         f"{r['weighted']:.2f} (maj {r['maj']:.2f})")
    return "; ".join(parts)



# ---------------------------------------------------------------------------------------------
# what to evaluate, and sampling it
# ---------------------------------------------------------------------------------------------
@dataclass
class EvalTarget:
    """The model to evaluate: a loadable spec, and the run it came from (None for a folder or hub id)."""

    spec: str
    label: str
    run: Any = None  # RunRecord
    train_cfg: Any = None  # BaseTrainConfig

    @property
    def run_id(self) -> str | None:
        return self.run.provenance.run_id if self.run is not None else None

    def out_dir(self, store: ArtifactStore) -> str:
        if self.run_id:
            return f"{store.run_dir(self.run_id)}/reports"
        return f"solver_evals/{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.label).strip('_') or 'model'}"


def resolve_target(store: ArtifactStore, model: str | None = "tiny", run_id: str | None = None) -> EvalTarget:
    """A run id, or a preset published under the store (its run is found through the pointer), or a
    checkpoint folder / hub id (no run: nothing to exclude, outputs under solver_evals/)."""
    from squigglray.models import ModelNotFound
    from squigglray.models.loading import resolve_spec
    from squigglray.models.presets import PRESETS
    from squigglray.schemas import RunRecord
    from squigglray.training import BaseTrainConfig

    def load_run(rid: str):
        rel = f"{store.run_dir(rid)}/run.json"
        if not store.exists(rel):
            raise ModelNotFound(f"no run {rid!r} under {store.uri} ({rel} is missing)")
        rec = RunRecord.model_validate(store.read_json(rel))
        ckpt = f"{store.run_checkpoints(rid)}/final"
        if not store.exists(f"{ckpt}/config.json"):
            raise ModelNotFound(f"run {rid!r} under {store.uri} has no final checkpoint ({ckpt})")
        return rec, BaseTrainConfig.model_validate(rec.config), str(store.download_dir(ckpt))

    if run_id:
        rec, cfg, path = load_run(run_id)
        return EvalTarget(spec=path, label=run_id, run=rec, train_cfg=cfg)
    if not model:
        raise ModelNotFound("name a model (preset, folder or hub id) or a run id")
    if model in PRESETS:
        resolve_spec(model, store)  # ModelNotFound with the "train one with ..." hint
        pointer = store.read_json(store.model_pointer(model))
        rid = pointer.get("run_id")
        if rid and store.exists(f"{store.run_dir(rid)}/run.json"):
            rec, cfg, path = load_run(rid)
            return EvalTarget(spec=path, label=model, run=rec, train_cfg=cfg)
        return EvalTarget(spec=str(store.download_dir(pointer["checkpoint"])), label=model)
    return EvalTarget(spec=resolve_spec(model, store), label=model)


def eval_instances(cfg: SolverEvalConfig, target: EvalTarget,
                   exclude_problems: set[str] | None = None) -> tuple[list[tuple[str, ProblemInstance]], int]:
    """Held-out (level, instance) pairs and the instance seed used."""
    train = target.train_cfg
    families = cfg.families or (train.data.resolved_families() if train is not None else list_families())
    seed = cfg.seed if cfg.seed is not None else (train.eval.seed if train is not None else DEFAULT_EVAL_SEED)
    if exclude_problems is None:
        exclude_problems = set()
        if train is not None:
            from squigglray.training.data import build_pool

            exclude_problems = build_pool(train).problems()
    from squigglray.eval.heldout import heldout_instances  # torch: not at import (--help, options)

    return heldout_instances(families, cfg.levels, cfg.per_family, seed, exclude_problems), seed


def slice_hash(items: list[tuple[str, ProblemInstance]]) -> str:
    h = hashlib.sha256()
    for level, x in items:
        h.update(f"{level}\t{x.instance_id}\t{x.problem}\t{x.answer}\n".encode())
    return h.hexdigest()


async def sample_problems(problems: list[ProblemResult], engine, executor, cfg: SolverEvalConfig,
                      bar, seconds: dict[str, float]) -> None:
    """All max(ns) candidates of every problem, per code mode; problems go in chunks that fill
    about `batch_rows` candidates so the bar moves while the engine keeps large batches."""
    n = max(cfg.ns)
    chunk = max(1, cfg.batch_rows // n)
    for code in cfg.code_modes:
        opts = cfg.solve_options(code)
        t0 = time.perf_counter()
        if bar is not None:
            bar.set_description(f"solver eval ({'code' if code else 'no code'}, N={n})")
        for i in range(0, len(problems), chunk):
            part = problems[i:i + chunk]
            out = await sample_candidates([p.instance.problem for p in part], engine,
                                          executor if code else None, opts, batch_rows=cfg.batch_rows)
            for p, cands in zip(part, out):
                p.candidates[code] = cands
            if bar is not None:
                bar.update(len(part))
        seconds[f"sample_{'code' if code else 'nocode'}"] = time.perf_counter() - t0


def candidate_rows(problems: list[ProblemResult]) -> list[dict[str, Any]]:
    rows = []
    for p in problems:
        x = p.instance
        for code, cands in p.candidates.items():
            for c in cands:
                rows.append({
                    "problem_id": x.instance_id, "family_id": x.family_id, "level": p.level, "gold": x.answer,
                    "code": code, "index": c.index, "answer": c.answer, "correct": is_correct(c.answer, x.answer),
                    "code_ok": c.code_ok, "finished": c.finished, "weight": c.weight, "tokens": c.tokens,
                    "rounds": c.rounds, "code_runs": len(c.code_runs),
                })
    return rows


