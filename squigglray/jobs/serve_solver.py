"""Serve the solver over HTTP: start Ray Serve and deploy serve_apps/solver.yaml (or another config).

    python -m squigglray.jobs.serve_solver                              # tiny model, CPU, http://127.0.0.1:8000
    python -m squigglray.jobs.serve_solver --port 8011 --set model=nano --set defaults.n=8
    python -m squigglray.jobs.serve_solver --config serve_apps/solver_gpu.yaml --host 0.0.0.0
    ray job submit --working-dir . -- python -m squigglray.jobs.serve_solver --no-block

    curl -s localhost:8000/solve -d '{"problem": "What is 17 * 23?", "n": 8}'

Without RAY_ADDRESS a local Ray is started (and stops with this process: keep it blocking); on a
cluster the application outlives the job, as `serve deploy` would leave it. The config is Serve's
own multi-application file (`applications:` / `import_path:` / `args:` / `deployments:`), deployed
exactly as `serve run <config>` deploys it (squigglray.jobs.serve_deploy); `overrides` change the
solver application's `args` (dotted keys reach into mappings: `defaults.n`), except `host` and
`port`, which set http_options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from squigglray.entry import JobArgs, make_parser as make_parser_for, parse_args, run_module
from squigglray.jobs.serve_deploy import ServeArgs, deploy, read_config, run_serve_job, validate

SOLVER_IMPORT_PATH = "serve_apps.solver:app_builder"


def default_config_path() -> Path:
    import serve_apps.solver  # the package may import as a namespace package (no __file__) from an editable install

    return Path(serve_apps.solver.__file__).resolve().parent / "solver.yaml"


def load_deploy_config(config_path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """The Serve config (a validated `ray.serve.schema.ServeDeploySchema`) with overrides applied.

    Also checks the solver's args (SolverAppArgs) and, for the hf backend, that the model can be
    found, so a bad value fails here with a clear message instead of inside a replica.
    """
    from squigglray.paths import default_root

    path = Path(config_path) if config_path else default_config_path()
    raw, args = read_config(path, SOLVER_IMPORT_PATH, overrides)
    root = args.get("data_dir") or default_root()
    args["data_dir"] = root if "://" in str(root) else str(Path(root).expanduser().resolve())
    _check_solver_args(args)
    return validate(raw, path)


def _check_solver_args(args: dict[str, Any]) -> None:
    from serve_apps.solver import SolverAppArgs
    from squigglray.config import build_config
    from squigglray.models.loading import resolve_spec
    from squigglray.paths import ArtifactStore

    a = build_config(SolverAppArgs, args)
    if a.backend == "hf":
        resolve_spec(a.model, ArtifactStore(a.resolved_data_dir()))  # ModelNotFound says how to train one


def serve_solver(config_path: str | None = None, blocking: bool = True, overrides: dict | None = None,
                 timeout_s: float = 900, log=print) -> str:
    """Start Serve (local Ray unless RAY_ADDRESS) with the solver app; returns the base URL.

    blocking=True waits until Ctrl-C, then shuts Serve down.
    """
    config = load_deploy_config(config_path, overrides)
    return deploy(config, SOLVER_IMPORT_PATH, "solver",
                  lambda url: f"POST {url}/solve, GET {url}/healthz, OpenAI-compatible {url}/v1",
                  blocking, timeout_s, log)


class SolverServeArgs(ServeArgs):
    """The solver's own: which model it serves, from which data dir."""

    model: str | None = Field(None, description="override the served model: a trained preset, checkpoint folder or hub id",
                              json_schema_extra={"short": "-m"})
    data_dir: str | None = JobArgs.model_fields["data_dir"]


def make_parser():
    """The parser of `python -m squigglray.jobs.serve_solver` and of `squigglray serve`."""
    return make_parser_for("squigglray serve", __doc__, SolverServeArgs)


def main(argv: list[str] | None = None) -> str:
    (args,) = parse_args(make_parser(), argv)
    return run_serve_job(serve_solver, args, model=args.model, data_dir=args.data_dir)


if __name__ == "__main__":
    run_module(__spec__.name)
