"""Serve CLModel's tool verifiers over HTTP: start Ray Serve and deploy serve_apps/verifiers.yaml.

    python -m squigglray.jobs.serve_verifiers                           # CPU, http://127.0.0.1:8000
    python -m squigglray.jobs.serve_verifiers --port 8012 --set workers=2 --set cache_path=/tmp/vcache.sqlite
    ray job submit --working-dir . -- python -m squigglray.jobs.serve_verifiers --no-block --set max_replicas=4

    curl -s localhost:8000/verify/equivalence -d '{"a": "\\frac{1}{2}", "b": "0.5"}'

Without RAY_ADDRESS a local Ray is started (and stops with this process: keep it blocking); on a
cluster the application outlives the job. The config is Serve's own multi-application file, deployed
as `serve run <config>` deploys it; `overrides` change the verifier application's `args` (fields of
serve_apps.verifiers.VerifierAppArgs), except `host` and `port`, which set http_options. Overrides
of the deployment's own options (num_cpus, max_ongoing_requests, min/max_replicas,
target_ongoing_requests) are written into the file's `deployments:` entry too, which would
otherwise win over the args.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path
from typing import Any

import yaml

from squigglray.jobs.serve_solver import HTTP_KEYS, _set_dotted, deployed_times, wait_until_running

VERIFIERS_IMPORT_PATH = "serve_apps.verifiers:app_builder"
DEPLOYMENT_KEYS = ("num_cpus", "max_ongoing_requests", "min_replicas", "max_replicas", "target_ongoing_requests")


def default_config_path() -> Path:
    import serve_apps.verifiers  # the package may import as a namespace package (no __file__)

    return Path(serve_apps.verifiers.__file__).resolve().parent / "verifiers.yaml"


def _sync_deployment(app: dict[str, Any], key: str, value: Any) -> None:
    """Mirror a deployment-level arg into the app's `deployments:` override, if the file has one."""
    from serve_apps.verifiers import DEPLOYMENT

    for d in app.get("deployments") or []:
        if not isinstance(d, dict) or d.get("name") != DEPLOYMENT:
            continue
        if key == "num_cpus":
            d.setdefault("ray_actor_options", {})["num_cpus"] = value
        elif key == "max_ongoing_requests":
            d["max_ongoing_requests"] = value
        else:  # an autoscaling field; a fixed num_replicas in the file gives way to it
            d.pop("num_replicas", None)
            d["autoscaling_config"] = {**(d.get("autoscaling_config") or {}), key: value}


def load_deploy_config(config_path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """The Serve config (a validated `ray.serve.schema.ServeDeploySchema`) with overrides applied;
    the verifier app's args are checked (VerifierAppArgs), so a bad value fails here naming the field."""
    from ray.serve.schema import ServeDeploySchema

    from serve_apps.verifiers import VerifierAppArgs
    from squigglray.config import ConfigError, build_config

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
    apps = [a for a in raw["applications"] if isinstance(a, dict) and a.get("import_path") == VERIFIERS_IMPORT_PATH]
    if len(apps) != 1:
        raise ConfigError(f"serve config {str(path)!r} must hold exactly one application with "
                          f"import_path {VERIFIERS_IMPORT_PATH!r} (found {len(apps)})")
    app = apps[0]
    args = app.get("args") or {}
    app["args"] = args
    http = raw.get("http_options") or {}
    raw["http_options"] = http
    for key, value in (overrides or {}).items():
        if value is None:  # "not given" (e.g. an unset CLI option)
            continue
        if key in HTTP_KEYS:
            http[key] = value
        else:
            _set_dotted(args, key, value)
            if key in DEPLOYMENT_KEYS:
                _sync_deployment(app, key, value)
    http.setdefault("host", "127.0.0.1")
    a = build_config(VerifierAppArgs, args)
    if a.cache_path:
        args["cache_path"] = a.resolved_cache_path()
    try:
        return ServeDeploySchema.model_validate(raw)
    except Exception as e:  # pydantic's message already names the field
        raise ConfigError(f"serve config {str(path)!r} is not a valid Serve config: {e}") from None


def serve_verifiers(config_path: str | None = None, blocking: bool = True, overrides: dict | None = None,
                    timeout_s: float = 300, log=print) -> str:
    """Start Serve (local Ray unless RAY_ADDRESS) with the verifier app; returns the base URL.

    blocking=True waits until Ctrl-C, then shuts Serve down.
    """
    import ray
    from ray import serve
    from ray.serve._private.api import serve_start  # what `serve run <config>` uses; no public equivalent

    from squigglray.jobs.ray_runtime import ensure_ray

    config = load_deploy_config(config_path, overrides)
    local = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    ensure_ray()
    client = serve_start(http_options=config.http_options.model_dump(), proxy_location=config.proxy_location)
    wanted = (config.http_options.host, config.http_options.port)
    actual = (client.http_config.host, client.http_config.port)
    if actual != wanted:
        log(f"note: Serve was already running on {actual[0]}:{actual[1]}; http_options of the config are ignored")
    before = deployed_times()
    client.deploy_apps(config)
    verifiers = next(a for a in config.applications if a.import_path == VERIFIERS_IMPORT_PATH)
    for app in config.applications:
        wait_until_running(app.name, timeout_s, previous=before.get(app.name))
    host = "127.0.0.1" if actual[0] in ("0.0.0.0", "::", "") else actual[0]
    url = f"http://{host}:{actual[1]}{(verifiers.route_prefix or '/').rstrip('/')}"
    log(f"verifiers ready at {url}  (POST {url}/verify/equivalence, {url}/verify/z3, {url}/tools/<op>; "
        f"GET {url}/tools, {url}/healthz)")
    if not blocking and local:
        log("note: this process started a local Ray; the verifiers stop when the process exits")
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
    p.add_argument("--config", default=None, help="Serve config YAML (default serve_apps/verifiers.yaml)")
    p.add_argument("--host", default=None, help="HTTP host (default: the config's, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: the config's, else 8000)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override an application arg, e.g. workers=2, cache=false (repeatable)")
    p.add_argument("--no-block", action="store_true", help="deploy and return (the app stays on a cluster)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the app to be RUNNING")
    a = p.parse_args(argv)
    overrides: dict[str, Any] = {"host": a.host, "port": a.port}
    for text in a.sets:
        parts, value = parse_override(text)
        overrides[".".join(parts)] = value
    serve_verifiers(a.config, blocking=not a.no_block, overrides=overrides, timeout_s=a.timeout)


if __name__ == "__main__":
    main()
