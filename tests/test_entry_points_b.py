"""One entry point per workflow (dcm, ineq, clmodel, eval-solver, solve): both paths start from the
same packaged defaults and hand the same options to the work (their equal --help: test_entry_points.py)."""

from __future__ import annotations

import importlib

import pytest
from typer.testing import CliRunner

from squigglray.cli import app
from squigglray.config import load_config, packaged_config


def _capture(monkeypatch, module, name):
    """Replace module.<name> with a recorder that stops the job before any work."""
    seen = {}

    def record(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        raise SystemExit(0)

    monkeypatch.setattr(importlib.import_module(module), name, record)
    return seen


@pytest.mark.parametrize("module,argv,fn,model,packaged", [
    # the run's work is imported when it starts (torch), so it is replaced where it lives
    ("squigglray.jobs.dcm", ["run"], "squigglray.dcm.run:run_one", "squigglray.dcm.config:DcmConfig", "dcm_smoke"),
    ("squigglray.jobs.dcm", ["sweep"], "run_sweep", "squigglray.dcm.config:DcmConfig", "dcm_smoke"),
    ("squigglray.jobs.ineq", ["run"], "run", "squigglray.ineq.config:IneqConfig", "ineq"),
    ("squigglray.jobs.clmodel", ["train"], "train_job", "squigglray.clmodel.config:ClmodelRunConfig", "clmodel"),
])
def test_packaged_default_config_on_both_paths(monkeypatch, module, argv, fn, model, packaged):
    mod_name, cls_name = model.split(":")
    expected = load_config(getattr(importlib.import_module(mod_name), cls_name), packaged_config(packaged))
    where, _, name = fn.rpartition(":")
    seen = _capture(monkeypatch, where or module, name)
    with pytest.raises(SystemExit):
        importlib.import_module(module).main(argv)
    assert seen["args"][0] == expected
    seen.clear()
    r = CliRunner().invoke(app, [module.rsplit(".", 1)[1], *argv])  # squigglray.jobs.dcm: `squigglray dcm`
    assert r.exit_code == 0, r.output
    assert seen["args"][0] == expected


def test_dcm_sweep_flags_reach_the_sweep(monkeypatch):
    from squigglray.placement import DEFAULTS

    seen = _capture(monkeypatch, "squigglray.jobs.dcm", "run_sweep")
    r = CliRunner().invoke(app, ["dcm", "sweep", "--ks", "4, 8", "--seeds", "0,1", "--placement", "dcm",
                                 "--gpus-per-trial", "2", "--datasets", "[{kind: arithmetic, n: 3}]"])
    assert r.exit_code == 0, r.output
    _, ks, seeds, datasets, data_dir = seen["args"]
    assert (ks, seeds, datasets, data_dir) == ([4, 8], [0, 1], [{"kind": "arithmetic", "n": 3}], None)
    assert seen["kwargs"]["placement"] == DEFAULTS["dcm"].model_copy(update={"gpus": 2.0})
    bad = CliRunner().invoke(app, ["dcm", "sweep", "--ks", "4,x"])
    assert bad.exit_code == 2 and "ks.1: Input should be a valid integer" in bad.output
    bad = CliRunner().invoke(app, ["dcm", "sweep", "--placement", "nowhere"])
    assert bad.exit_code == 2 and "known workloads" in bad.output


def test_eval_solver_defaults_are_the_config_defaults(monkeypatch):
    from squigglray.eval.solver import SolverEvalConfig

    seen = _capture(monkeypatch, "squigglray.jobs.eval_solver", "eval_solver")
    r = CliRunner().invoke(app, ["eval-solver"])
    assert r.exit_code == 0, r.output
    assert seen["args"] == (None, "tiny") and seen["kwargs"]["executor"] == "ray"
    settings = {k: v for k, v in seen["kwargs"].items() if k in SolverEvalConfig.model_fields}
    assert SolverEvalConfig(**settings) == SolverEvalConfig()
    r = CliRunner().invoke(app, ["eval-solver", "--timeout", "7", "--workers", "3", "--local", "--ns", "1,2",
                                 "--code-modes", "code"])
    assert r.exit_code == 0, r.output
    kw = seen["kwargs"]
    assert (kw["code_timeout_s"], kw["sandbox_workers"], kw["executor"], kw["ns"], kw["code_modes"]) == (
        7.0, 3, "local", [1, 2], [True])


def test_solve_defaults_are_the_solver_options_defaults(monkeypatch):
    from squigglray.schemas.solve import SolveOptions

    seen = _capture(monkeypatch, "squigglray.jobs.solve_cli", "load_solver")
    r = CliRunner().invoke(app, ["solve", "What is 1+1?"])
    assert r.exit_code == 0, r.output
    assert seen["args"] == ("tiny", None, 2, True)
    opts = {}

    def solve_one(problem, engine, executor, o, traces=False):
        opts["o"] = o
        raise SystemExit(0)

    monkeypatch.setattr(importlib.import_module("squigglray.jobs.solve_cli"), "load_solver",
                        lambda *a, **k: (None, None))
    monkeypatch.setattr(importlib.import_module("squigglray.jobs.solve_cli"), "solve_one", solve_one)
    r = CliRunner().invoke(app, ["solve", "What is 1+1?"])
    assert r.exit_code == 0, r.output
    assert opts["o"] == SolveOptions()
    r = CliRunner().invoke(app, ["solve", "What is 1+1?", "-n", "3", "--timeout", "2", "--no-code"])
    assert r.exit_code == 0, r.output
    assert opts["o"] == SolveOptions(n=3, code_timeout_s=2.0, execute_code=False)
