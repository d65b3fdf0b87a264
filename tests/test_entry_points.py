"""One parser per workflow: `python -m squigglray.jobs.<w> [verb] --help` prints exactly what
`squigglray <w> [verb] --help` prints (cli.py only forwards to the job's main), and a workflow's
packaged default config is the same on both paths."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from squigglray.cli import app

REPO = Path(__file__).resolve().parents[1]
COLUMNS = "100"  # argparse wraps the help to the terminal's width: the same width on every path

# `squigglray <name>` -> (its job module, its verbs)
WORKFLOWS = {
    "families": ("squigglray.jobs.families", ("list", "describe", "sample")),
    "quickstart": ("squigglray.jobs.quickstart", ()),
    "train-base": ("squigglray.jobs.train_base", ()),
    "probe": ("squigglray.jobs.probe", ()),
    "probe-confirm": ("squigglray.jobs.probe_confirm", ()),
    "slice": ("squigglray.jobs.slice", ("build", "rebuild", "show")),
    "serve": ("squigglray.jobs.serve_solver", ()),
    "serve-verifiers": ("squigglray.jobs.serve_verifiers", ()),
    "dynamics": ("squigglray.jobs.dynamics", ()),
    "dcm": ("squigglray.jobs.dcm", ("run", "sweep")),
    "ineq": ("squigglray.jobs.ineq", ("run",)),
    "clmodel": ("squigglray.jobs.clmodel", ("train",)),
    "eval-solver": ("squigglray.jobs.eval_solver", ()),
    "solve": ("squigglray.jobs.solve_cli", ()),
}
PATHS = [(name, verb) for name, (_, verbs) in WORKFLOWS.items() for verb in (None, *verbs)]


@pytest.fixture(autouse=True)
def _width(monkeypatch):
    monkeypatch.setenv("COLUMNS", COLUMNS)


def cli_help(name: str, verb: str | None = None) -> str:
    r = CliRunner().invoke(app, [name, *([verb] if verb else []), "--help"])
    assert r.exit_code == 0, r.output
    return r.output


def job_help(module: str, verb: str | None = None) -> str:
    """What `python -m <module> [verb] --help` prints, in this process: its main() with those arguments."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        importlib.import_module(module).main([*([verb] if verb else []), "--help"])
    assert e.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("name,verb", PATHS, ids=[" ".join(filter(None, p)) for p in PATHS])
def test_the_cli_prints_the_job_modules_own_help(name, verb):
    module, _ = WORKFLOWS[name]
    shown = cli_help(name, verb)
    assert shown == job_help(module, verb)
    if verb is None:
        assert shown == importlib.import_module(module).make_parser().format_help()
        assert shown.startswith(f"usage: squigglray {name} ")
    else:
        assert shown.startswith(f"usage: squigglray {name} {verb} ")


# Runs each job module as `python -m` runs it (runpy, as __main__, with its own sys.argv), in one
# fresh interpreter, recording whether torch or transformers was imported by then: a workflow's --help
# (and a job driver that fails on its config) imports neither (~10 s of CPU in a fresh process).
PYTHON_M = """
import contextlib, io, json, runpy, sys
out = {}
for module, argv in json.loads(sys.argv[1]).items():
    buf, err = io.StringIO(), io.StringIO()
    sys.argv = [module, *argv]
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            heavy = "torch" in sys.modules or "transformers" in sys.modules
            out[module] = [e.code, buf.getvalue(), err.getvalue(), heavy]
print(json.dumps(out))
"""


def python_m(argv: dict[str, list[str]]) -> dict[str, list]:
    """{module: [exit code, stdout, stderr, torch or transformers imported by then]} of `python -m
    <module> <argv>` for each module, in one fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", PYTHON_M, json.dumps(argv)], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, "COLUMNS": COLUMNS}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_python_m_prints_the_same_help_as_the_cli():
    """`python -m squigglray.jobs.<w> --help` for every workflow, in a fresh interpreter, without
    importing torch or transformers."""
    modules = [module for module, _ in WORKFLOWS.values()]
    shown = python_m({module: ["--help"] for module in modules})
    for name, (module, _) in WORKFLOWS.items():
        assert shown[module][:2] == [0, cli_help(name)], name
    heavy = [m for m in modules if shown[m][3]]  # once torch is in, every later module shows it
    assert not heavy, f"--help imported torch or transformers from {heavy[0]}"


class _Stop(Exception):
    """Raised by a stand-in for a job's work, once it has seen its arguments."""


def _packaged(kind: str, name: str):
    from squigglray.config import load_config, packaged_config
    from squigglray.data.config import SliceConfig
    from squigglray.training import BaseTrainConfig

    return load_config({"slice": SliceConfig, "train": BaseTrainConfig}[kind], packaged_config(name))


DEFAULTS = [  # (argv after `squigglray`, job module, the function given the config, the packaged config)
    (["slice", "build"], "squigglray.jobs.slice", "build_slice", ("slice", "slice")),
    (["quickstart"], "squigglray.jobs.quickstart", "quickstart", ("train", "quickstart")),
    (["quickstart", "--smoke"], "squigglray.jobs.quickstart", "quickstart", ("train", "smoke")),
    (["train-base"], "squigglray.jobs.train_base", "train_or_reuse", ("train", "quickstart")),
]


@pytest.mark.parametrize("argv,module,work,packaged", DEFAULTS, ids=[" ".join(d[0]) for d in DEFAULTS])
def test_packaged_default_config_is_the_same_on_both_paths(argv, module, work, packaged, monkeypatch):
    import squigglray.jobs.ray_runtime as ray_runtime

    job = importlib.import_module(module)
    seen = []

    def record(cfg, *args, **kwargs):
        seen.append(cfg)
        raise _Stop

    monkeypatch.setattr(job, work, record)
    monkeypatch.setattr(ray_runtime, "ensure_ray", lambda *a, **k: None)  # train-base starts Ray before its work
    with pytest.raises(_Stop):
        job.main(argv[1:])  # python -m squigglray.jobs.<w> ...
    r = CliRunner().invoke(app, argv)  # squigglray <w> ...
    assert isinstance(r.exception, _Stop), r.output
    assert seen == [_packaged(*packaged)] * 2


# A job whose config is wrong stops before any work, and before paying for torch (~10 s of CPU in a
# fresh process): each of these fails on one field, in one fresh interpreter. The field is one that
# pydantic checks last, so every section before it (the SFT section's CUDA check included) has run.
BAD_CONFIG = {
    "squigglray.jobs.clmodel": (["train", "--set", "eval.latency_examples=1"], "eval.latency_examples"),
    "squigglray.jobs.ineq": (["run", "--set", "eval.max_new_tokens=0"], "eval.max_new_tokens"),
    "squigglray.jobs.dcm": (["run", "--set", "k=0"], "k"),
    "squigglray.jobs.dynamics": (["--set", "train.steps=0"], "train.steps"),
}
def test_a_bad_config_fails_before_torch_is_imported():
    shown = python_m({module: args for module, (args, _) in BAD_CONFIG.items()})
    for module, (_, field) in BAD_CONFIG.items():
        code, out, err, heavy = shown[module]
        message = out + err
        assert code not in (0, None) and field in message, (module, message[-500:])
        assert not heavy, f"{module} imported torch before reporting its bad config"
