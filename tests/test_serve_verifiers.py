"""The tool verifiers served by Ray Serve, over real HTTP on 127.0.0.1: equivalence (answer and
expression mode, batches of pairs), Z3, the generic /tools routes, status codes for bad input,
deadlines (504, the replica keeps serving), the memo cache, concurrency, the deployment-handle
client, the API key (required by the module's app: every request sends it), and the Serve config file."""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from metrics_scenario import free_port

ROOT = Path(__file__).resolve().parents[1]
APP = "verifiers"
APP_ARGS = {"num_cpus": 0.25, "workers": 2, "timeout_s": 5.0, "max_timeout_s": 10.0, "max_expr_chars": 400,
            "max_body_bytes": 4096, "max_calls_per_request": 8, "max_batch_size": 16, "batch_wait_timeout_s": 0.005}
# SymPy grinds on this for far longer than any deadline here (a degree-300 bivariate factorization)
HANGING = {"expr": "(x + y + 1)**300 - 1"}
KEY_ENV, KEY = "SQUIGGLRAY_TEST_API_KEY", secrets.token_urlsafe(16)
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def verifiers_config(tmp_path_factory) -> tuple[str, dict]:
    """serve_apps/verifiers.yaml with a runtime_env that puts the API key in KEY_ENV in the replicas,
    and the overrides: APP_ARGS, require_api_key_env naming KEY_ENV, a free port."""
    from squigglray.jobs.serve_verifiers import default_config_path

    raw = yaml.safe_load(default_config_path().read_text())
    raw["applications"][0]["runtime_env"] = {"env_vars": {KEY_ENV: KEY}}
    config = tmp_path_factory.mktemp("verifiers-config") / "verifiers.yaml"
    config.write_text(yaml.safe_dump(raw))
    return str(config), {**APP_ARGS, "require_api_key_env": KEY_ENV, "port": free_port()}


@pytest.fixture(scope="module")
def url(ray_session, verifiers_config):
    """The app as `squigglray serve-verifiers` deploys it: verifiers_config through the composition root."""
    from ray import serve

    from squigglray.jobs.serve_verifiers import serve_verifiers

    config, overrides = verifiers_config
    try:
        base = serve_verifiers(config, blocking=False, log=lambda *_: None, overrides=overrides)
        deadline = time.time() + 60
        while True:  # /healthz is open without the key
            r = requests.get(f"{base}/healthz", timeout=30)
            if r.status_code == 200:
                break
            assert time.time() < deadline, f"/healthz never became ready: {r.status_code} {r.text}"
            time.sleep(0.2)
        yield base
    finally:
        serve.shutdown()


def post(url: str, body, timeout: float = 60, headers: dict = AUTH) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url, data=data, headers={"Content-Type": "application/json", **headers}, timeout=timeout)


# -- good input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("a,b,mode,equivalent", [
    ("\\frac{1}{2}", "0.5", "answer", True),
    ("\\boxed{1,234}", "1234", "answer", True),
    ("2\\sqrt{2}", "\\sqrt{8}", "answer", True),
    ("\\frac{1}{3}", "0.5", "answer", False),
    ("(x+1)**2", "x**2 + 2*x + 1", "expression", True),
    ("sin(x)**2 + cos(x)**2", "1", "expression", True),
    ("(x+1)**2", "x**2 + 1", "expression", False),
])
def test_equivalence(url, a, b, mode, equivalent):
    r = post(f"{url}/verify/equivalence", {"a": a, "b": b, "mode": mode})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["equivalent"] is equivalent and data["ok"] is True
    assert data["op"] == ("answer_equivalent" if mode == "answer" else "equivalent")
    assert data["error_type"] is None and data["elapsed_s"] >= 0


def test_equivalence_default_mode_is_answer(url):
    data = post(f"{url}/verify/equivalence", {"a": "\\dfrac12", "b": "1/2"}).json()
    assert data["op"] == "answer_equivalent" and data["equivalent"] is True


def test_equivalence_pairs(url):
    pairs = [["\\frac{2}{4}", "1/2"], ["3", "4"], ["\\left(\\frac{1}{2}\\right)", "0.5"]]
    r = post(f"{url}/verify/equivalence", {"pairs": pairs})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["equivalent"] for x in results] == [True, False, True]
    assert [x["status"] for x in results] == [200] * 3
    r = post(f"{url}/verify/equivalence", {"pairs": [["x*(x+1)", "x**2 + x"]], "mode": "expression"})
    assert r.json()["results"][0]["equivalent"] is True


def test_z3_prove_and_refute(url):
    r = post(f"{url}/verify/z3", {"op": "prove", "claim": "x*x >= 0", "assumptions": []})
    assert r.status_code == 200, r.text
    assert r.json()["op"] == "z3_prove" and r.json()["result"] == {"status": "proved", "counterexample": None}
    r = post(f"{url}/verify/z3", {"op": "prove", "claim": "x*x > x", "assumptions": ["x > 0"]})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["status"] == "refuted"  # e.g. x = 1
    r = post(f"{url}/verify/z3", {"op": "counterexample", "claim": "x*x > x", "assumptions": []})
    assert r.status_code == 200, r.text
    refuted = r.json()
    assert refuted["op"] == "z3_counterexample" and refuted["result"]["found"] is True
    x = float(refuted["result"]["counterexample"]["x"])
    assert not x * x > x  # a real counterexample
    r = post(f"{url}/verify/z3", {"op": "satisfiable", "constraints": ["x + y == 10", "x - y == 2"],
                                  "vars": {"x": "int", "y": "int"}})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {"status": "sat", "model": {"x": "6", "y": "4"}}


@pytest.mark.parametrize("op,args,check", [
    ("simplify", {"expr": "sin(x)**2 + cos(x)**2"}, lambda res: res == "1"),
    ("factor", {"expr": "x**2 - 1"}, lambda res: res.replace(" ", "") in ("(x-1)*(x+1)", "(x+1)*(x-1)")),
    ("expand", {"expr": "(x + 1)**2"}, lambda res: res.replace(" ", "") == "x**2+2*x+1"),
    ("diff", {"expr": "x**3", "var": "x"}, lambda res: res.replace(" ", "") == "3*x**2"),
    ("solve", {"equation": "x**2 - 4", "var": "x"}, lambda res: sorted(map(str, res)) == ["-2", "2"]),
])
def test_tools(url, op, args, check):
    r = post(f"{url}/tools/{op}", args)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["op"] == op and data["ok"] is True and check(data["result"]), data


def test_list_tools_and_healthz(url):
    ops = requests.get(f"{url}/tools", headers=AUTH, timeout=30).json()["ops"]
    assert {"simplify", "answer_equivalent", "equivalent", "z3_prove", "z3_counterexample"} <= set(ops)
    assert all(isinstance(doc, str) and doc for doc in ops.values())
    health = requests.get(f"{url}/healthz", timeout=30).json()
    assert health["status"] == "ok" and health["replica"] and health["workers"] == 2
    assert {"calls", "cache_hits", "cache_misses", "timeouts", "worker_restarts"} <= set(health["stats"])


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path,body,status,needle", [
    ("/verify/equivalence", b'{"a": "1", "b": ', 400, "not valid JSON"),
    ("/verify/equivalence", b"", 400, "body is empty"),
    ("/verify/equivalence", ["1", "2"], 400, "must be a JSON object"),
    ("/verify/equivalence", {"a": 5, "b": "5"}, 400, "a: Input should be a valid string"),
    ("/verify/equivalence", {"a": "1"}, 400, "missing b"),
    ("/verify/equivalence", {"a": "1", "b": "1", "mode": "fuzzy"}, 400, "mode"),
    ("/verify/equivalence", {"a": "1", "b": "1", "extra": 1}, 400, "extra: Extra inputs are not permitted"),
    ("/verify/equivalence", {"pairs": [["1", 2]]}, 400, "pairs.0.1"),
    ("/verify/z3", {"claim": "x > 0"}, 400, "op: Field required"),
    ("/verify/z3", {"op": "disprove", "claim": "x > 0"}, 404, "prove, satisfiable, counterexample"),
    ("/tools/nope", {"expr": "x"}, 404, "simplify"),
    ("/tools/simplify", {"expr": 5}, 400, "expr"),
    ("/tools/simplify", {}, 400, "expr"),
    ("/tools/simplify", {"expr": "x +* (("}, 422, ""),
    ("/tools/simplify", {"expr": "x + " * 120 + "1"}, 413, ""),
    ("/tools/simplify", {"expr": "x", "timeout_s": "soon"}, 400, "timeout_s"),
    ("/tools/simplify", {"expr": "1 + " * 1500 + "1"}, 413, "4096 bytes"),
])
def test_bad_requests(url, path, body, status, needle):
    r = post(f"{url}{path}", body, timeout=30)
    assert r.status_code == status, r.text
    data = r.json()
    assert data["error"]["code"] == status and needle in data["error"]["message"], data


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
def test_every_route_but_healthz_needs_the_key(url, headers):
    for path, body in (("/verify/equivalence", {"a": "1", "b": "1"}), ("/verify/z3", {"op": "prove", "claim": "x > 0"}),
                       ("/tools/simplify", {"expr": "x"}), ("/tools", None), ("/docs", None)):
        if body is None:
            r = requests.get(f"{url}{path}", headers=headers, timeout=30)
        else:
            r = post(f"{url}{path}", body, headers=headers)
        assert r.status_code == 401, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == 401 and error["type"] == "authentication_error", error
        assert "Authorization: Bearer <key>" in error["message"] and KEY not in r.text
    assert requests.get(f"{url}/healthz", headers=headers, timeout=30).status_code == 200


def test_a_key_variable_not_set_in_the_replica_fails_the_deployment_at_start(url, verifiers_config):
    """A second app naming a variable no replica has: its replicas fail in their constructor, Serve
    gives up on it (DEPLOY_FAILED; the deployment's status carries the replica's message), and the
    module's app, re-applied unchanged beside it, keeps serving."""
    from ray import serve

    from serve_apps.verifiers import DEPLOYMENT
    from squigglray.jobs.serve_deploy import deploy
    from squigglray.jobs.serve_verifiers import VERIFIERS_IMPORT_PATH, load_deploy_config

    config = load_deploy_config(*verifiers_config)
    [app] = config.applications
    unset = app.model_copy(update={"name": "verifiers-unset", "route_prefix": "/unset", "runtime_env": {},
                                   "args": {**app.args, "require_api_key_env": "SQUIGGLRAY_TEST_UNSET_KEY"}})
    try:
        with pytest.raises(RuntimeError, match="'verifiers-unset' is .*DEPLOY_FAILED"):
            deploy(config.model_copy(update={"applications": [app, unset]}), VERIFIERS_IMPORT_PATH, APP,
                   lambda _: "", blocking=False, timeout_s=120, log=lambda *_: None)
        message = serve.status().applications["verifiers-unset"].deployments[DEPLOYMENT].message
    finally:
        serve.delete("verifiers-unset")
    assert ("require_api_key_env names the environment variable 'SQUIGGLRAY_TEST_UNSET_KEY', which is not set"
            in message), message
    assert post(f"{url}/tools/expand", {"expr": "(x + 1)**2"}).status_code == 200


def test_pairs_over_the_call_budget_is_429_with_the_results_so_far(url):
    pairs = [[str(k), f"{k}.0"] for k in range(7001, 7010)]  # 9 distinct calls; the budget is 8
    r = post(f"{url}/verify/equivalence", {"pairs": pairs})
    assert r.status_code == 429, r.text
    data = r.json()
    assert "budget of 8 tool calls" in data["error"]["message"] and data["error"]["type"] == "budget"
    statuses = [x["status"] for x in data["results"]]
    assert sorted(statuses) == [200] * 8 + [429]
    assert all(x["equivalent"] is True for x in data["results"] if x["status"] == 200)
    r = post(f"{url}/verify/equivalence", {"pairs": pairs})  # now 8 are cached: free
    assert r.status_code == 200, r.text


def test_unparseable_latex_is_422(url):
    r = post(f"{url}/verify/equivalence", {"a": "\\frac{1}{", "b": "x^{", "mode": "expression"})
    assert r.status_code == 422, r.text
    data = r.json()
    assert data["ok"] is False and data["error_type"] == "bad_input" and data["equivalent"] is None


# -- deadlines, cache, concurrency --------------------------------------------------------------

def test_timeout_is_504_and_the_replica_keeps_serving(url):
    before = requests.get(f"{url}/healthz", timeout=30).json()
    t0 = time.perf_counter()
    r = post(f"{url}/tools/factor", {**HANGING, "timeout_s": 1.0})
    took = time.perf_counter() - t0
    assert r.status_code == 504, r.text
    assert r.json()["error_type"] == "timeout" and took < 8, took
    r = post(f"{url}/tools/factor", {"expr": "x**2 - 4"})
    assert r.status_code == 200 and r.json()["ok"], r.text
    after = requests.get(f"{url}/healthz", timeout=30).json()
    assert after["replica"] == before["replica"]
    assert after["stats"]["timeouts"] >= before["stats"]["timeouts"] + 1


def test_cache_marks_the_repeat(url):
    body = {"a": "\\frac{123}{246}", "b": "0.5"}
    first = post(f"{url}/verify/equivalence", body).json()
    second = post(f"{url}/verify/equivalence", body).json()
    assert first["equivalent"] is True and second["equivalent"] is True
    assert first["cached"] is False and second["cached"] is True


def test_concurrent_requests_are_batched_and_all_served(url):
    before = requests.get(f"{url}/healthz", timeout=30).json()["stats"]["calls"]
    bodies = [{"a": f"\\frac{{{k}}}{{{2 * k}}}", "b": "1/2"} for k in range(3, 19)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: post(f"{url}/verify/equivalence", b), bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies), [r.text for r in responses]
    assert all(r.json()["equivalent"] is True for r in responses)
    health = requests.get(f"{url}/healthz", timeout=30).json()
    assert health["stats"]["calls"] - before >= len(bodies)
    assert health["batching"]["largest"] >= 2  # concurrent requests shared a ToolBox.call_many


def test_handle_tool_client(url):
    from ray import serve

    from serve_apps.verifiers import HandleToolClient
    from squigglray.verify.result import ToolResult

    client = HandleToolClient(serve.get_app_handle(APP))
    r = client.call("simplify", {"expr": "sin(x)**2 + cos(x)**2"})
    assert isinstance(r, ToolResult) and r.ok and r.result == "1"
    r = client.call("no_such_op", {})
    assert not r.ok and r.error_type == "unknown_op"
    rs = client.call_many([("answer_equivalent", {"a": "0.25", "b": "\\frac14"}), ("expand", {"expr": "(x-1)**2"})])
    assert rs[0].ok and rs[0].result is True and rs[1].ok


def test_clmodel_reasoner_calls_the_service_through_a_handle(url):
    """CLModel's tool ops run against the Serve app: the same ToolClient protocol as in-process."""
    import torch
    from ray import serve

    from serve_apps.verifiers import HandleToolClient
    from squigglray.clmodel.config import CLModelConfig
    from squigglray.clmodel.model import CLModel

    cfg = CLModelConfig.nano(ops=("parse", "factor", "compute", "conclude"), steps=4)
    torch.manual_seed(0)
    model = CLModel(cfg).eval()
    ids = torch.randint(1, cfg.vocab_size, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    ops = torch.tensor([[0, 1, 2, 3], [0, 2, 3, -100]])
    before = requests.get(f"{url}/healthz", timeout=30).json()["stats"]["calls"]
    with torch.no_grad():
        out = model(ids, mask, tools=HandleToolClient(serve.get_app_handle(APP)),
                    tool_inputs=["x**2 - 1", "2 * 8 + 6 * 6 - 30"], op_targets=ops, debug=True)
    log = out.debug["reasoner"].log
    calls = {(e["row"], e["step"]): (e["tool_op"], e["ok"]) for e in log}
    assert set(calls) == {(0, 1), (0, 2), (1, 1)}, "tool-backed ops only (factor, compute), -100 runs nothing"
    assert calls[(0, 1)] == ("factor", True) and calls[(1, 1)] == ("evaluate", True)
    assert calls[(0, 2)][0] == "evaluate"  # of the factored x**2 - 1: free symbols, so it may fail
    assert requests.get(f"{url}/healthz", timeout=30).json()["stats"]["calls"] >= before + 3

# -- config file and composition root (no Serve needed) -----------------------------------------

def test_config_file_is_a_valid_serve_config():
    from ray._common.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    from serve_apps import verifiers

    raw = yaml.safe_load((ROOT / "serve_apps" / "verifiers.yaml").read_text())
    config = ServeDeploySchema.model_validate(raw)
    [app] = config.applications
    assert import_attr(app.import_path) is verifiers.app_builder
    args = verifiers.VerifierAppArgs.model_validate(app.args)
    assert verifiers.app_builder(app.args) is not None  # binds only; starts nothing
    [dep] = app.deployments
    assert dep.name == verifiers.DEPLOYMENT
    assert dep.max_ongoing_requests == args.max_ongoing_requests >= args.max_batch_size
    assert dep.ray_actor_options.num_cpus == args.num_cpus <= 0.5
    auto = dep.autoscaling_config
    assert (auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == \
        (args.min_replicas, args.max_replicas, args.target_ongoing_requests)


def test_app_builder_names_bad_args():
    from serve_apps.verifiers import app_builder
    from squigglray.config import ConfigError

    with pytest.raises(ConfigError, match="workers"):
        app_builder({"workers": 0})
    with pytest.raises(ConfigError, match="timeout_s=20 is above max_timeout_s=10"):
        app_builder({"timeout_s": 20})
    with pytest.raises(ConfigError, match="min_replicas=3 is above max_replicas=1"):
        app_builder({"min_replicas": 3})
    with pytest.raises(ConfigError, match="no_such_field"):
        app_builder({"no_such_field": 1})
    with pytest.raises(ConfigError, match="require_api_key_env: .*NAME of an environment variable"):
        app_builder({"require_api_key_env": "sk-the-key-itself"})


def test_deploy_config_overrides(tmp_path):
    from squigglray.config import ConfigError
    from squigglray.jobs.serve_verifiers import load_deploy_config

    config = load_deploy_config(None, {"port": 8123, "workers": 3, "max_replicas": 4, "num_cpus": 0.5,
                                       "cache_path": "rel/cache.sqlite", "host": None})
    [app] = config.applications
    assert config.http_options.port == 8123 and config.http_options.host == "127.0.0.1"
    assert app.args["workers"] == 3 and app.args["cache_path"] == str((Path("rel") / "cache.sqlite").resolve())
    [dep] = app.deployments
    assert dep.autoscaling_config["max_replicas"] == 4 and dep.ray_actor_options.num_cpus == 0.5
    with pytest.raises(ConfigError, match="workers"):
        load_deploy_config(None, {"workers": 0})
    with pytest.raises(ConfigError, match="does not exist"):
        load_deploy_config(tmp_path / "missing.yaml")


def test_cli_registers_serve_verifiers():
    from typer.testing import CliRunner

    from squigglray.cli import app

    out = CliRunner().invoke(app, ["serve-verifiers", "--help"])
    assert out.exit_code == 0 and "/verify/equivalence" in out.output


def test_the_deployment_is_the_config_file_plus_overrides(url):
    """The fixture deployed serve_apps/verifiers.yaml through the composition root (what
    `squigglray serve-verifiers` runs): the file's values where APP_ARGS is silent, APP_ARGS elsewhere."""
    from ray import serve

    health = requests.get(f"{url}/healthz", timeout=60).json()
    assert health["workers"] == APP_ARGS["workers"] and health["cache"] is True  # override; the file's cache
    assert health["batching"]["max_batch_size"] == APP_ARGS["max_batch_size"]
    [deployment] = serve.status().applications[APP].deployments.values()
    assert deployment.status == "HEALTHY"
