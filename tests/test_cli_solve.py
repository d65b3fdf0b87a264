"""`squigglray solve` (one problem, a CSV), `eval-solver` and `serve --help`, on the nano model."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from squigglray.cli import app

runner = CliRunner()
FAST = ["--model", "nano", "--n", "2", "--rounds", "1", "--workers", "1"]


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines at 80 columns off a terminal


@pytest.fixture(scope="module")
def data(solver_store):
    return ["--data-dir", solver_store.uri]


@pytest.fixture(scope="module")
def problems():
    from squigglray.families import sample

    return sample("arithmetic", 3, seed=77)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_solve_one_problem_prints_the_answer(data, problems):
    r = runner.invoke(app, ["solve", problems[0].problem, *FAST, *data])
    assert r.exit_code == 0, r.output
    assert "answer:" in r.output and "candidates" in r.output and "total" in r.output
    r = runner.invoke(app, ["solve", problems[0].problem, *FAST, *data, "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert set(res) >= {"answer", "votes", "counts", "timings", "n_candidates"} and res["n_requested"] == 2


def test_solve_file_writes_submission_prints_accuracy_and_resumes(data, problems, tmp_path):
    src = write_csv(tmp_path / "p.csv", ["id", "problem", "answer"],
                    [[f"q{i}", x.problem, x.answer] for i, x in enumerate(problems[:2])])
    out = tmp_path / "sub.csv"
    r = runner.invoke(app, ["solve", "--file", str(src), "--out", str(out), *FAST, *data])
    assert r.exit_code == 0, r.output
    rows = read_csv(out)
    assert rows[0] == ["id", "answer"] and [x[0] for x in rows[1:]] == ["q0", "q1"]
    assert "accuracy:" in r.output and "/2 =" in r.output

    # a third problem added: the first two are kept, only the new one is solved
    write_csv(src, ["id", "problem", "answer"], [[f"q{i}", x.problem, x.answer] for i, x in enumerate(problems)])
    r = runner.invoke(app, ["solve", "--file", str(src), "--out", str(out), *FAST, *data, "--json"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x.get("resumed") for x in lines[:3]] == [True, True, False]
    assert lines[-1]["summary"]["solved"] == 1 and lines[-1]["summary"]["graded"] == 3
    assert read_csv(out)[:3] == rows and len(read_csv(out)) == 4


def test_bad_csv_exits_2_naming_the_problem_and_keeps_written_rows(data, problems, tmp_path):
    out = tmp_path / "sub.csv"
    out.write_text("id,answer\nq0,12\n")
    before = out.read_text()

    src = write_csv(tmp_path / "nocol.csv", ["id", "question"], [["q0", "1+1"]])
    r = runner.invoke(app, ["solve", "--file", str(src), "--out", str(out), *FAST, *data])
    assert r.exit_code == 2 and "missing problem" in flat(r.output) and "Traceback" not in r.output

    src = write_csv(tmp_path / "empty.csv", ["id", "problem"], [["q0", problems[0].problem], ["q1", "   "]])
    r = runner.invoke(app, ["solve", "--file", str(src), "--out", str(out), *FAST, *data])
    msg = flat(r.output)
    assert r.exit_code == 2 and "line 3 (id 'q1'): the problem is empty" in msg, r.output
    assert out.read_text() == before  # nothing solved, nothing lost

    src = write_csv(tmp_path / "other.csv", ["id", "problem"], [["z9", problems[0].problem]])
    r = runner.invoke(app, ["solve", "--file", str(src), "--out", str(out), *FAST, *data])
    assert r.exit_code == 2 and "not in the input" in flat(r.output) and out.read_text() == before


def test_solve_usage_errors_are_clear(data, tmp_path):
    r = runner.invoke(app, ["solve", *FAST, *data])
    assert r.exit_code == 2 and "neither" in r.output
    r = runner.invoke(app, ["solve", "  ", *FAST, *data])
    assert r.exit_code == 2 and "empty" in r.output
    r = runner.invoke(app, ["solve", "1+1", "--mode", "bogus", *data])
    assert r.exit_code == 2 and "mode" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["solve", "1+1", "--model", "tiny", "--data-dir", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no trained 'tiny' model" in flat(r.output)


def test_eval_solver_cli_minimal(data, solver_store):
    args = ["eval-solver", "--model", "nano", *data, "--families", "arithmetic", "--levels", "easy",
            "--per-family", "1", "--ns", "1,2", "--rounds", "1", "--workers", "1", "--local"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "weighted@N" in r.output and "pass@1" in r.output
    js = [line.split(": ", 1)[1] for line in r.stdout.splitlines() if line.startswith("json: ")]
    assert js and json.loads(open(js[0]).read())["ns"] == [1, 2]
    r = runner.invoke(app, ["eval-solver", *data, "--model", "nano", "--ns", "1,x"])
    assert r.exit_code == 2 and "comma-separated" in r.output
    r = runner.invoke(app, ["eval-solver", *data, "--model", "nano", "--families", "nope", "--local"])
    assert r.exit_code == 2 and "unknown families" in flat(r.output)


def test_serve_help():
    r = runner.invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "--port" in r.output and "--config" in r.output
