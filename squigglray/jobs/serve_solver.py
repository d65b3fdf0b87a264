"""Serve the solver over HTTP: start Ray Serve and deploy serve_apps/solver.yaml (or another config).

    python -m squigglray.jobs.serve_solver                              # tiny model, CPU, http://127.0.0.1:8000
    python -m squigglray.jobs.serve_solver --port 8011 --set model=nano --set defaults.n=8
    python -m squigglray.jobs.serve_solver --config serve_apps/solver_gpu.yaml --host 0.0.0.0
    ray job submit --working-dir . -- python -m squigglray.jobs.serve_solver --no-block

    curl -s localhost:8000/solve -d '{"problem": "What is 17 * 23?", "n": 8}'

Without RAY_ADDRESS a local Ray is started (and stops with this process: keep it blocking); on a
cluster the application outlives the job, as `serve deploy` would leave it. The config is Serve's
own multi-application file (`applications:` / `import_path:` / `args:` / `deployments:`), deployed
exactly as `serve run <config>` deploys it; `overrides` change the solver application's `args`
(dotted keys reach into mappings: `defaults.n`), except `host` and `port`, which set http_options.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import yaml

SOLVER_IMPORT_PATH = "serve_apps.solver:app_builder"
HTTP_KEYS = ("host", "port")


def default_config_path() -> Path:
    import serve_apps.solver  # the package may import as a namespace package (no __file__) from an editable install

    return Path(serve_apps.solver.__file__).resolve().parent / "solver.yaml"


def _set_dotted(args: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = args
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        if not isinstance(node[p], dict):
            raise ValueError(f"override {key!r}: {p!r} is not a mapping in the application args")
        node = node[p]
    node[parts[-1]] = value


def load_deploy_config(config_path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """The Serve config (a validated `ray.serve.schema.ServeDeploySchema`) with overrides applied.

    Also checks the solver's args (SolverAppArgs) and, for the hf backend, that the model can be
    found, so a bad value fails here with a clear message instead of inside a replica.
    """
    from ray.serve.schema import ServeDeploySchema

    from squigglray.config import ConfigError
    from squigglray.paths import default_root

    path = Path(config_path) if config_path else default_config_path()
    if not path.is_file():
        raise ConfigError(f"serve config {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"serve config {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("applications"), list):
        raise ConfigError(f"serve config {str(path)!r} must be a Serve config with an `applications:` list")
    raw = copy.deepcopy(raw)
    apps = [a for a in raw["applications"] if isinstance(a, dict) and a.get("import_path") == SOLVER_IMPORT_PATH]
    if len(apps) != 1:
        raise ConfigError(f"serve config {str(path)!r} must hold exactly one application with "
                          f"import_path {SOLVER_IMPORT_PATH!r} (found {len(apps)})")
    app = apps[0]
    args = app.setdefault("args", {}) or {}
    app["args"] = args
    http = raw.setdefault("http_options", {}) or {}
    raw["http_options"] = http
    for key, value in (overrides or {}).items():
        if value is None:  # "not given" (e.g. an unset CLI option)
            continue
        if key in HTTP_KEYS:
            http[key] = value
        else:
            _set_dotted(args, key, value)
    http.setdefault("host", "127.0.0.1")
    root = args.get("data_dir") or default_root()
    args["data_dir"] = root if "://" in str(root) else str(Path(root).expanduser().resolve())
    _check_solver_args(args)
    try:
        return ServeDeploySchema.model_validate(raw)
    except Exception as e:  # pydantic's message already names the field
        raise ConfigError(f"serve config {str(path)!r} is not a valid Serve config: {e}") from None


def _check_solver_args(args: dict[str, Any]) -> None:
    from serve_apps.solver import SolverAppArgs
    from squigglray.config import build_config
    from squigglray.models.loading import resolve_spec
    from squigglray.paths import ArtifactStore

    a = build_config(SolverAppArgs, args)
    if a.backend == "hf":
        resolve_spec(a.model, ArtifactStore(a.resolved_data_dir()))  # ModelNotFound says how to train one


def deployed_times() -> dict[str, float]:
    from ray import serve

    return {name: app.last_deployed_time_s for name, app in serve.status().applications.items()}


def wait_until_running(name: str, timeout_s: float = 900, poll_s: float = 0.5, previous: float | None = None) -> None:
    """Block until the application is RUNNING (a newer deployment than `previous`, when given);
    raise with Serve's own message if it failed."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        app = serve.status().applications.get(name)
        fresh = app is not None and (previous is None or app.last_deployed_time_s != previous)
        status = app.status if fresh else None
        if status == "RUNNING":
            return
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"serve application {name!r} is {status}: {app.message}")
        time.sleep(poll_s)
    raise TimeoutError(f"serve application {name!r} not RUNNING after {timeout_s:.0f}s (last status {status}); "
                       f"see `serve status` and the Ray dashboard's Serve tab")


def serve_solver(config_path: str | None = None, blocking: bool = True, overrides: dict | None = None,
                 timeout_s: float = 900, log=print) -> str:
    """Start Serve (local Ray unless RAY_ADDRESS) with the solver app; returns the base URL.

    blocking=True waits until Ctrl-C, then shuts Serve down.
    """
    from ray import serve
    from ray.serve._private.api import serve_start  # what `serve run <config>` uses; no public equivalent

    from squigglray.jobs.ray_runtime import ensure_ray

    import os

    import ray

    config = load_deploy_config(config_path, overrides)
    local = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    ensure_ray()
    client = serve_start(http_options=config.http_options.model_dump(), proxy_location=config.proxy_location)
    wanted = (config.http_options.host, config.http_options.port)
    actual = (client.http_config.host, client.http_config.port)
    if actual != wanted:
        log(f"note: Serve was already running on {actual[0]}:{actual[1]}; http_options of the config are ignored")
    before = deployed_times()  # a redeploy counts once the app carries a newer deployment time
    client.deploy_apps(config)
    solver = next(a for a in config.applications if a.import_path == SOLVER_IMPORT_PATH)
    for app in config.applications:
        wait_until_running(app.name, timeout_s, previous=before.get(app.name))
    host = "127.0.0.1" if actual[0] in ("0.0.0.0", "::", "") else actual[0]
    url = f"http://{host}:{actual[1]}{(solver.route_prefix or '/').rstrip('/')}"
    log(f"solver ready at {url}  (POST {url}/solve, GET {url}/healthz, OpenAI-compatible {url}/v1)")
    if not blocking and local:
        log("note: this process started a local Ray; the solver stops when the process exits")
    if blocking:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            log("shutting down Serve")
            serve.shutdown()
    return url


def main(argv: list[str] | None = None) -> None:
    from squigglray.config import parse_override

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="Serve config YAML (default serve_apps/solver.yaml)")
    p.add_argument("--host", default=None, help="HTTP host (default: the config's, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: the config's, else 8000)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override an application arg, e.g. model=nano, defaults.n=8 (repeatable)")
    p.add_argument("--no-block", action="store_true", help="deploy and return (the app stays on a cluster)")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the app to be RUNNING")
    a = p.parse_args(argv)
    overrides: dict[str, Any] = {"host": a.host, "port": a.port}
    for text in a.sets:
        parts, value = parse_override(text)
        overrides[".".join(parts)] = value
    serve_solver(a.config, blocking=not a.no_block, overrides=overrides, timeout_s=a.timeout)


if __name__ == "__main__":
    main()
