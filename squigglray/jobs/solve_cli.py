"""Solve a problem (or every row of a CSV) with tool-integrated best-of-N sampling and a weighted vote.

    squigglray solve "What is 17 * 23?" --n 8
    squigglray solve --file problems.csv --out submission.csv     # id,problem[,answer] -> id,answer
    python -m squigglray.jobs.solve_cli --file problems.csv       # the same

The CSV is checked completely before the model loads (squigglray.solve.problems_csv), so a bad file
fails at once naming its rows; answers are appended to the submission as each problem is solved,
and running the same command again resumes after the last written row (--overwrite starts over).
Sandboxes are a LocalExecutor: no Ray needed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from squigglray.config import build_config
from squigglray.entry import fail, make_parser as make_parser_for, parse_args, run_module
from squigglray.schemas.solve import SolveOptions, SolveResult
from squigglray.solve.answers import is_correct
from squigglray.solve.problems_csv import check_resume, read_problems, solve_file


class SolveArgs(BaseModel):
    """What to solve, with which model, and how to print it."""

    model_config = ConfigDict(extra="forbid")
    problem: str | None = Field(None, description="the problem text (or --file)",
                                json_schema_extra={"positional": True, "metavar": "PROBLEM"})
    file: str | None = Field(None, description="AIMO-style CSV with columns id,problem[,answer]",
                             json_schema_extra={"short": "-f", "metavar": "PATH"})
    out: str = Field("submission.csv", description="with --file: the submission CSV (id,answer)",
                     json_schema_extra={"short": "-o", "metavar": "PATH"})
    model: str = Field("tiny", description="preset trained under the data dir (tiny, nano, ...), checkpoint folder "
                                           "or hub id", json_schema_extra={"short": "-m"})
    data_dir: str | None = Field(None, description="artifact root (default $SQUIGGLRAY_DATA or ./data)")
    workers: int = Field(2, ge=1, description="sandbox processes running the candidates' code")
    no_code: bool = Field(False, description="do not execute the model's code (no tool)")
    traces: bool = Field(False, description="print every candidate's text (with --file: <out>.traces.jsonl)")
    as_json: bool = Field(False, description="machine-readable output (with --file: one line per problem)",
                          json_schema_extra={"flag": "--json"})
    overwrite: bool = Field(False, description="with --file: start the submission over instead of resuming")
    default_answer: str = Field("0", description="with --file: written when no candidate gives a valid answer")


def _flags_of(model: type[BaseModel], title: str, **fields: dict[str, Any]) -> type[BaseModel]:
    """Some fields of `model`, exactly as declared there (type, default, bounds, description), with
    the flag settings of entry.add_model_arguments added."""
    def field(name: str, extra: dict[str, Any]) -> tuple[Any, FieldInfo]:
        info = model.model_fields[name]
        return info.annotation, FieldInfo.merge_field_infos(info, json_schema_extra=extra)

    return create_model(f"{model.__name__}Flags", __config__=ConfigDict(extra="forbid", title=title),
                        **{name: field(name, extra) for name, extra in fields.items()})


# The solver options the command exposes; `SolveOptions` declares them (defaults, bounds), the rest
# of its fields keep their defaults. --no-code is SolveArgs.no_code (execute_code is True by default).
SolveFlags = _flags_of(
    SolveOptions, "solver options",
    n={"short": "-n"},
    rounds={},
    mode={},
    seed={},
    code_timeout_s={"flag": "--timeout", "metavar": "SECONDS"},
    temperature={},
)


def load_solver(model: str, data_dir: str | None, workers: int, execute_code: bool = True):
    """(engine, executor or None): an HFEngine on the model (preset, folder or hub id), LocalExecutor sandboxes
    (a local command: weak process isolation is allowed where no namespaces exist, with a warning)."""
    from squigglray.engines.hf import HFEngine
    from squigglray.paths import ArtifactStore
    from squigglray.solve.executor import LocalExecutor

    engine = HFEngine.from_pretrained(model, ArtifactStore(data_dir))
    return engine, (LocalExecutor(workers, allow_weak_isolation=True) if execute_code else None)


def solve_one(problem: str, engine, executor, opts: SolveOptions, traces: bool = False) -> SolveResult:
    from squigglray.solve.tir import solve

    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("the problem is empty")
    return asyncio.run(solve(problem, engine, executor, opts, traces=traces))


def print_solve_result(result: SolveResult, traces: bool, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    if traces:
        for c in result.candidates:
            console.rule(f"candidate {c.index}: answer={escape(str(c.answer))}  code_ok={c.code_ok}  weight={c.weight:g}",
                         characters="-", style="dim")
            console.print(c.text or "", markup=False, highlight=False)
    ans = "none (no candidate gave a valid answer)" if result.answer is None else result.answer
    console.print(f"[bold]answer:[/] {escape(str(ans))}")
    if result.votes:
        t = Table(title="votes")
        for col in ("answer", "weight", "candidates"):
            t.add_column(col, justify="left" if col == "answer" else "right")
        for k, w in list(result.votes.items())[:10]:
            t.add_row(escape(k), f"{w:g}", str(result.counts.get(k, 0)))
        console.print(t)
    tm = result.timings
    early = " (stopped early: the vote was decided)" if result.stopped_early else ""
    console.print(f"{result.n_candidates}/{result.n_requested} candidates{early}, {result.tokens:,} tokens; "
                  f"generate {tm.get('generate_s', 0):.1f} s, execute {tm.get('execute_s', 0):.1f} s, "
                  f"total {tm.get('total_s', 0):.1f} s", highlight=False)


def make_parser():
    """The parser of `python -m squigglray.jobs.solve_cli` and of `squigglray solve`."""
    return make_parser_for("squigglray solve", __doc__, SolveArgs, SolveFlags)


def main(argv: list[str] | None = None) -> Any:
    from rich.console import Console

    a, flags = parse_args(make_parser(), argv)
    console, err = Console(), Console(stderr=True)
    if (a.problem is None) == (a.file is None):
        fail("give either a problem (as text) or --file problems.csv, not " + ("both" if a.file else "neither"))
    opts = build_config(SolveOptions, {**flags.model_dump(), "execute_code": not a.no_code})
    if a.file is None:
        if not a.problem.strip():
            fail("the problem is empty")
        engine, ex = load_solver(a.model, a.data_dir, a.workers, not a.no_code)
        try:
            with err.status("solving ..."):
                result = solve_one(a.problem, engine, ex, opts, a.traces)
        finally:
            if ex is not None:
                ex.close()
        if a.as_json:
            print(result.model_dump_json(indent=2, exclude={"candidates"} if not a.traces else None))
        else:
            print_solve_result(result, a.traces, console)
        return result
    return _solve_file(a, opts, console, err)


def _solve_file(a: SolveArgs, opts: SolveOptions, console, err):
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = Path(a.out)
    rows, has_answers = read_problems(a.file)
    if not a.overwrite:
        check_resume(rows, out)
    engine, ex = load_solver(a.model, a.data_dir, a.workers, not a.no_code)
    bar = Progress(TextColumn("solving"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[last]}"), console=err)
    task = bar.add_task("solve", total=len(rows), last="")

    def on_row(r, answer, result) -> None:
        bar.update(task, advance=1, last=f"{r.id}: {answer}")
        if a.as_json:
            rec = {"id": r.id, "answer": answer, "resumed": result is None}
            if r.answer is not None:
                rec.update(gold=r.answer, correct=is_correct(answer, r.answer))
            if result is not None:
                rec.update(votes=result.votes, n_candidates=result.n_candidates, stopped_early=result.stopped_early,
                           tokens=result.tokens, timings=result.timings)
            print(json.dumps(rec), flush=True)

    try:
        with bar:
            s = solve_file(rows, out, engine, ex, opts, overwrite=a.overwrite, default_answer=a.default_answer,
                           on_row=on_row, traces_path=out.with_name(out.stem + ".traces.jsonl") if a.traces else None)
    finally:
        if ex is not None:
            ex.close()
    if a.as_json:
        print(json.dumps({"summary": {"out": s.out, "solved": s.solved, "resumed": s.resumed, "graded": s.graded,
                                      "correct": s.correct, "accuracy": s.accuracy, "seconds": round(s.seconds, 2)}}))
        return s
    resumed = f" ({s.resumed} already there, resumed)" if s.resumed else ""
    console.print(f"wrote {s.out}: {s.solved} problems solved in {s.seconds:.1f} s{resumed}", highlight=False)
    if s.no_answer:
        console.print(f"{s.no_answer} problem(s) had no valid answer; wrote {a.default_answer!r} for them",
                      highlight=False)
    if has_answers and s.graded:
        console.print(f"[bold]accuracy:[/] {s.correct}/{s.graded} = {s.accuracy:.3f}", highlight=False)
    return s


if __name__ == "__main__":
    run_module(__spec__.name)
