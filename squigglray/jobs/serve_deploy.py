"""Deploy a Serve config file the way `serve run <config>` does, for the project's Serve apps
(serve_solver, serve_verifiers): read and check the file, apply `--set` overrides to one
application's args, start Serve (local Ray unless RAY_ADDRESS), wait until every app is RUNNING.

Overrides change the application's `args` (dotted keys reach into mappings: `defaults.n`), except
`host` and `port`, which set http_options.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict, Field

HTTP_KEYS = ("host", "port")


def set_dotted(args: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = args
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        if not isinstance(node[p], dict):
            raise ValueError(f"override {key!r}: {p!r} is not a mapping in the application args")
        node = node[p]
    node[parts[-1]] = value


def read_config(path: Path, import_path: str, overrides: dict[str, Any] | None,
                on_arg: Callable[[dict, str, Any], None] | None = None) -> tuple[dict, dict]:
    """(the whole raw config, the args of the one application with `import_path`), overrides applied.
    `on_arg(app, key, value)` sees each arg override (e.g. to mirror it into `deployments:`)."""
    from squigglray.config import ConfigError

    if not path.is_file():
        raise ConfigError(f"serve config {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"serve config {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("applications"), list):
        raise ConfigError(f"serve config {str(path)!r} must be a Serve config with an `applications:` list")
    raw = copy.deepcopy(raw)
    apps = [a for a in raw["applications"] if isinstance(a, dict) and a.get("import_path") == import_path]
    if len(apps) != 1:
        raise ConfigError(f"serve config {str(path)!r} must hold exactly one application with "
                          f"import_path {import_path!r} (found {len(apps)})")
    app = apps[0]
    args = app["args"] = app.get("args") or {}
    http = raw["http_options"] = raw.get("http_options") or {}
    for key, value in (overrides or {}).items():
        if value is None:  # "not given" (e.g. an unset CLI option)
            continue
        if key in HTTP_KEYS:
            http[key] = value
        else:
            set_dotted(args, key, value)
            if on_arg:
                on_arg(app, key, value)
    http.setdefault("host", "127.0.0.1")
    return raw, args


def validate(raw: dict, path: Path):
    """The config as `ray.serve.schema.ServeDeploySchema`; a bad field fails naming it."""
    from ray.serve.schema import ServeDeploySchema

    from squigglray.config import ConfigError

    try:
        return ServeDeploySchema.model_validate(raw)
    except Exception as e:  # pydantic's message already names the field
        raise ConfigError(f"serve config {str(path)!r} is not a valid Serve config: {e}") from None


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


def deploy(config, import_path: str, what: str, routes: Callable[[str], str], blocking: bool,
           timeout_s: float, log=print) -> str:
    """Start Serve and deploy `config` (a ServeDeploySchema); returns the base URL of the app with
    `import_path`. blocking=True waits until Ctrl-C, then shuts Serve down."""
    import ray
    from ray import serve
    from ray.serve._private.api import serve_start  # what `serve run <config>` uses; no public equivalent

    from squigglray.jobs.ray_runtime import ensure_ray

    local = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    ensure_ray()
    client = serve_start(http_options=config.http_options.model_dump(), proxy_location=config.proxy_location)
    wanted = (config.http_options.host, config.http_options.port)
    actual = (client.http_config.host, client.http_config.port)
    if actual != wanted:
        log(f"note: Serve was already running on {actual[0]}:{actual[1]}; http_options of the config are ignored")
    before = deployed_times()  # a redeploy counts once the app carries a newer deployment time
    client.deploy_apps(config)
    ours = next(a for a in config.applications if a.import_path == import_path)
    for app in config.applications:
        wait_until_running(app.name, timeout_s, previous=before.get(app.name))
    host = "127.0.0.1" if actual[0] in ("0.0.0.0", "::", "") else actual[0]
    url = f"http://{host}:{actual[1]}{(ours.route_prefix or '/').rstrip('/')}"
    log(f"{what} ready at {url}  ({routes(url)})")
    if not blocking and local:
        log(f"note: this process started a local Ray; the {what} stops when the process exits")
    if blocking:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            log("shutting down Serve")
            serve.shutdown()
    return url


class ServeArgs(BaseModel):
    """The command line every serve job shares (serve_solver, serve_verifiers)."""

    model_config = ConfigDict(extra="forbid")
    config: str | None = Field(None, description="Serve config YAML (default: the app's own, serve_apps/solver.yaml "
                                                 "or serve_apps/verifiers.yaml)", json_schema_extra={"short": "-c"})
    host: str | None = Field(None, description="HTTP host (default: the config's, else 127.0.0.1)")
    port: int | None = Field(None, description="HTTP port (default: the config's, else 8000)")
    overrides: list[str] = Field(default_factory=list,
                                 description="override an application arg, e.g. defaults.n=8 or workers=2 (repeatable)",
                                 json_schema_extra={"flag": "--set", "repeat": True, "metavar": "KEY=VALUE"})
    no_block: bool = Field(False, description="deploy and return (the app stays up on a cluster)")
    timeout: float | None = Field(None, gt=0, description="seconds to wait until the app is RUNNING "
                                                          "(default: 900 for the solver, 300 for the verifiers)")


def run_serve_job(serve_fn: Callable[..., str], args: ServeArgs, **extra: Any) -> str:
    """Deploy with `serve_fn(config, blocking, overrides, [timeout_s])`: --host/--port, the `extra`
    application args that are set, then each --set. A deployment that fails exits 1."""
    from squigglray.config import parse_override
    from squigglray.entry import fail

    overrides: dict[str, Any] = {"host": args.host, "port": args.port, **extra}
    for text in args.overrides:
        parts, value = parse_override(text)
        overrides[".".join(parts)] = value
    timeout = {} if args.timeout is None else {"timeout_s": args.timeout}
    try:
        return serve_fn(args.config, blocking=not args.no_block, overrides=overrides, **timeout)
    except (RuntimeError, TimeoutError) as e:
        fail(e, 1)
