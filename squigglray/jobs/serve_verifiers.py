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

from pathlib import Path
from typing import Any

from squigglray.entry import make_parser as make_parser_for, parse_args, run_module
from squigglray.jobs.serve_deploy import ServeArgs, deploy, read_config, run_serve_job, validate

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
    from serve_apps.verifiers import VerifierAppArgs
    from squigglray.config import build_config

    def on_arg(app: dict, key: str, value: Any) -> None:
        if key in DEPLOYMENT_KEYS:
            _sync_deployment(app, key, value)

    path = Path(config_path) if config_path else default_config_path()
    raw, args = read_config(path, VERIFIERS_IMPORT_PATH, overrides, on_arg)
    a = build_config(VerifierAppArgs, args)
    if a.cache_path:
        args["cache_path"] = a.resolved_cache_path()
    return validate(raw, path)


def serve_verifiers(config_path: str | None = None, blocking: bool = True, overrides: dict | None = None,
                    timeout_s: float = 300, log=print) -> str:
    """Start Serve (local Ray unless RAY_ADDRESS) with the verifier app; returns the base URL.

    blocking=True waits until Ctrl-C, then shuts Serve down.
    """
    config = load_deploy_config(config_path, overrides)
    return deploy(config, VERIFIERS_IMPORT_PATH, "verifiers",
                  lambda url: f"POST {url}/verify/equivalence, {url}/verify/z3, {url}/tools/<op>; "
                              f"GET {url}/tools, {url}/healthz", blocking, timeout_s, log)


def make_parser():
    """The parser of `python -m squigglray.jobs.serve_verifiers` and of `squigglray serve-verifiers`."""
    return make_parser_for("squigglray serve-verifiers", __doc__, ServeArgs)


def main(argv: list[str] | None = None) -> str:
    (args,) = parse_args(make_parser(), argv)
    return run_serve_job(serve_verifiers, args)


if __name__ == "__main__":
    run_module(__spec__.name)
