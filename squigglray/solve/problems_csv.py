"""AIMO-style problem files for `squigglray solve --file`: read and check the input CSV
(`id,problem[,answer]`), append answers to the submission CSV (`id,answer`) row by row, resume.

The CSV is checked completely before anything is solved (header, then every row: a missing or empty
problem, an empty or repeated id, an unquoted comma...), so a bad file fails at once naming its
rows. Answers are appended to the submission as each problem is solved (flushed per row): a crash
loses nothing already solved, and running the same command again resumes after the last written
row (`overwrite=True` starts over).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from squigglray.schemas.solve import MAX_PROBLEM_CHARS, SolveOptions, SolveResult
from squigglray.solve.answers import is_correct
from squigglray.solve.tir import solve

MAX_ERRORS_SHOWN = 5


class BadCsv(ValueError):
    """An input or submission CSV that cannot be used; the message names the file and the rows."""


@dataclass
class CsvProblem:
    line: int  # 1-based line of the row in the file (the header is line 1)
    id: str
    problem: str
    answer: str | None  # the gold answer, when the file has an answer column and the cell is not empty


def _open_text(path: Path):
    if not path.is_file():
        raise BadCsv(f"{path}: no such file")
    return path.open(newline="", encoding="utf-8-sig")


def _rows(path: Path) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    try:
        with _open_text(path) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(reader.line_num, r) for r in reader]
    except UnicodeDecodeError as e:
        raise BadCsv(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise BadCsv(f"{path}: not a readable CSV file ({e})") from None
    return header, rows


def read_problems(path: str | Path) -> tuple[list[CsvProblem], bool]:
    """Rows of an `id,problem[,answer]` CSV (more columns are ignored), and whether it has answers."""
    path = Path(path)
    header, raw = _rows(path)
    if header is None:
        raise BadCsv(f"{path}: the file is empty; expected a header line `id,problem[,answer]`")
    cols = [h.strip().lower() for h in header]
    missing = [c for c in ("id", "problem") if c not in cols]
    if missing:
        raise BadCsv(f"{path}: the header needs the columns id and problem (answer optional); "
                     f"missing {', '.join(missing)}; found {', '.join(repr(h) for h in header) or 'nothing'}")
    dup = sorted({c for c in cols if c and cols.count(c) > 1} & {"id", "problem", "answer"})
    if dup:
        raise BadCsv(f"{path}: the header names column(s) {', '.join(dup)} more than once")
    i_id, i_problem = cols.index("id"), cols.index("problem")
    i_answer = cols.index("answer") if "answer" in cols else None
    errors: list[str] = []
    out: list[CsvProblem] = []
    seen: dict[str, int] = {}
    for line, r in raw:
        if not r or all(not c.strip() for c in r):
            continue  # blank line
        where = f"row at line {line}"
        if len(r) > len(header):
            errors.append(f"{where}: {len(r)} fields but the header has {len(header)} "
                          f"(quote a problem that contains commas)")
            continue
        cell = lambda i: r[i] if i is not None and i < len(r) else None  # noqa: E731
        rid, problem = (cell(i_id) or "").strip(), cell(i_problem)
        if rid:
            where += f" (id {rid!r})"
        if not rid:
            errors.append(f"{where}: the id is empty")
        elif rid in seen:
            errors.append(f"{where}: id {rid!r} repeats the row at line {seen[rid]}")
        if problem is None:
            errors.append(f"{where}: the problem is missing (the row has fewer fields than the header)")
        elif not problem.strip():
            errors.append(f"{where}: the problem is empty")
        elif len(problem) > MAX_PROBLEM_CHARS:
            errors.append(f"{where}: the problem has {len(problem)} characters (at most {MAX_PROBLEM_CHARS})")
        elif "\x00" in problem:
            errors.append(f"{where}: the problem is not text (it holds NUL bytes)")
        if rid:
            seen.setdefault(rid, line)
        gold = cell(i_answer)
        out.append(CsvProblem(line, rid, (problem or "").strip(), gold.strip() if gold and gold.strip() else None))
    if errors:
        more = f"\n  ... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise BadCsv(f"{path}: {len(errors)} bad row(s); nothing was solved:\n  "
                     + "\n  ".join(errors[:MAX_ERRORS_SHOWN]) + more)
    if not out:
        raise BadCsv(f"{path}: the header is there but no problem rows follow")
    return out, i_answer is not None


def read_submission(path: str | Path) -> dict[str, str]:
    """id -> answer of an existing submission CSV (to resume); {} when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return {}
    header, raw = _rows(path)
    if header is None:
        return {}
    if [h.strip().lower() for h in header] != ["id", "answer"]:
        raise BadCsv(f"{path} exists and is not a submission file (header {','.join(header)!r}, "
                     f"expected 'id,answer'); pass --overwrite or another --out")
    return {r[0]: (r[1] if len(r) > 1 else "") for _, r in raw if r}


def check_resume(rows: list[CsvProblem], out: str | Path) -> dict[str, str]:
    """The answers already in `out` (to skip), after checking that it belongs to this input."""
    done = read_submission(out)
    ids = {r.id for r in rows}
    stray = [i for i in done if i not in ids]
    if stray:
        raise BadCsv(f"{out} already holds answers for ids that are not in the input (e.g. {stray[0]!r}); "
                     f"pass --overwrite or another --out")
    return done


class SubmissionWriter:
    """Appends `id,answer` rows to a CSV, flushed and fsynced per row."""

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.path = Path(path)
        fresh = overwrite or not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = self.path.open("w" if fresh else "a", newline="", encoding="utf-8")
        self.w = csv.writer(self.f)
        if fresh:
            self.w.writerow(["id", "answer"])
            self._sync()

    def _sync(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())

    def write(self, rid: str, answer: str) -> None:
        self.w.writerow([rid, answer])
        self._sync()

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> SubmissionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FileSummary:
    solved: int  # in this call
    resumed: int  # already in the submission file
    graded: int  # rows with a gold answer
    correct: int
    seconds: float
    out: str
    no_answer: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None


def solve_file(
    rows: list[CsvProblem], out: str | Path, engine, executor, opts: SolveOptions, *,
    overwrite: bool = False, default_answer: str = "0", traces_path: str | Path | None = None,
    on_row: Callable[[CsvProblem, str, SolveResult | None], Any] | None = None,
) -> FileSummary:
    """Solve rows in order, appending each answer to `out` as soon as it is known. Rows whose id is
    already in `out` are skipped (resume). `on_row(row, answer, result)` after every row (result None
    for a resumed row)."""
    done = {} if overwrite else check_resume(rows, out)
    t0 = time.perf_counter()
    solved = correct = graded = no_answer = 0
    traces = open(traces_path, "w" if overwrite else "a", encoding="utf-8") if traces_path else None

    async def run() -> None:
        nonlocal solved, correct, graded, no_answer
        with SubmissionWriter(out, overwrite) as sub:
            for r in rows:
                if r.id in done:
                    answer, result = done[r.id], None
                else:
                    result = await solve(r.problem, engine, executor, opts, traces=traces is not None)
                    answer = result.answer if result.answer is not None else default_answer
                    no_answer += result.answer is None
                    sub.write(r.id, answer)
                    solved += 1
                    if traces is not None:
                        traces.write(json.dumps({"id": r.id, **result.model_dump(mode="json")}) + "\n")
                        traces.flush()
                if r.answer is not None:
                    graded += 1
                    correct += is_correct(answer, r.answer)
                if on_row is not None:
                    on_row(r, answer, result)

    try:
        asyncio.run(run())
    finally:
        if traces is not None:
            traces.close()
    return FileSummary(solved=solved, resumed=len(done), graded=graded, correct=correct,
                       seconds=time.perf_counter() - t0, out=str(out), no_answer=no_answer)
