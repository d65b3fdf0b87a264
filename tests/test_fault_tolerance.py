"""Fault tolerance: a probe sweep that loses a worker node mid-probe still finishes with every probe
exactly once (a simulated cluster in a subprocess, tests/cluster_scenarios.py); a POST /solve whose
sandbox actor's process is SIGKILLed while it runs the candidates' code is still answered with every
candidate's result; a batch map over the pool survives the same."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray
import requests

from squigglray.engines import Completion, Engine
from squigglray.solve.sandbox import Limits

from metrics_scenario import free_port
from test_placement import run_scenario

PROBES = sorted(f"{t}.seed{s}" for t in ("arithmetic", "control-shuffled_labels") for s in (0, 1))


def test_probe_sweep_survives_losing_a_worker_node():
    out = run_scenario("probe_fault")
    assert "error" not in out, out.get("error")
    assert out["sweep_finished"] and out["ran"] == 4
    killed = out["killed_mid_probe"]
    assert killed, "the doomed node's trial was never seen mid-probe"
    [(probe, step)] = killed.items()
    assert 1 <= step <= 24  # removed while the probe ran: training (24 steps) or the evaluation after it
    # that trial failed with its node and ran again on the node that was left
    assert probe in out["trial_errors"], out["error_texts"]
    # every probe exactly once: summaries, aggregated rows, manifest
    assert out["summary_files"] == [f"{p}.json" for p in PROBES]
    assert sorted(out["probe_ids"]) == PROBES and len(out["probe_ids"]) == len(set(out["probe_ids"]))
    assert out["manifest_rows"] == 4


# -- sandbox actors killed mid-run -----------------------------------------------------------------

SLEEP_S = 1.0
CODE = f"import time\ntime.sleep({SLEEP_S})\nprint(6 * 7)"


class SlowCodeEngine(Engine):
    """Every candidate writes the same slow code block, then reads its output and answers."""

    name = "slow-code"

    @property
    def model_name(self) -> str:
        return "slow-code"

    async def generate(self, prompts, params, seeds=None):
        out = []
        for p in prompts:
            if "```output" in p.split("Solution:\n", 1)[-1]:
                out.append([Completion("So the answer is \\boxed{42}.", "stop", None, 1, 8)])
            else:
                out.append([Completion(f"Compute it.\n```python\n{CODE}\n```\n", "stop", "```output", 1, 8)])
        return out


@pytest.fixture
def pool(ray_session):
    from actors.sandbox_pool import SandboxPool

    p = SandboxPool(size=2, limits=Limits(timeout_s=20), num_cpus=0.25, max_in_flight=4)
    p.ready()
    yield p
    p.shutdown()


def test_batch_map_completes_when_a_sandbox_actor_is_killed(pool):
    before = pool.ready()
    codes = [f"import time\ntime.sleep(0.5)\nprint({i} * {i})" for i in range(8)]
    results: list = []

    async def scenario():
        fut = asyncio.get_running_loop().run_in_executor(None, lambda: results.extend(pool.map(codes, batch_size=2)))
        await asyncio.sleep(0.6)
        victim = 0  # map keeps every worker busy
        ray.kill(pool.workers[victim], no_restart=False)
        await fut
        return victim

    victim = asyncio.run(scenario())
    assert [(r.status, r.stdout) for r in results] == [("ok", f"{i * i}\n") for i in range(8)]
    assert pool.ready()[victim]["actor_pid"] != before[victim]["actor_pid"]


# -- POST /solve to the served solver while its sandbox actor's process is SIGKILLed ---------------

@pytest.fixture
def slow_code_v1():
    """SlowCodeEngine behind a real OpenAI-compatible server (squigglray.engines.openai_api) on 127.0.0.1:
    the served solver's engine replica (backend openai) generates through it."""
    import uvicorn

    from squigglray.engines.openai_api import build_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(SlowCodeEngine(), "slow-code"), host="127.0.0.1", port=port,
                                          log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "the completions server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def _busy_sandbox_actors() -> list[int]:
    """pids of this session's sandbox actors in the middle of a run (Ray titles the process
    `ray::SandboxWorker.run_batch` while the call runs), found under this node's raylet."""
    import psutil

    raylet = psutil.Process(ray._private.worker._global_node.all_processes["raylet"][0].process.pid)
    busy = []
    for p in raylet.children(recursive=True):
        try:
            if "SandboxWorker.run_batch" in " ".join(p.cmdline()):
                busy.append(p.pid)
        except psutil.Error:  # exited under our feet
            continue
    return busy


def test_http_solve_is_answered_when_a_sandbox_actor_is_killed(ray_session, slow_code_v1):
    from ray import serve

    from serve_apps.solver import app_builder

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(app_builder({
            "backend": "openai", "model": "slow-code", "base_url": slow_code_v1, "engine_num_cpus": 0.1,
            "ingress_num_cpus": 0.1, "sandbox_workers": 2, "sandbox_num_cpus": 0.25, "sandbox_max_in_flight": 2,
            "sandbox_limits": {"timeout_s": 20}, "allow_traces": True,  # the code runs are read from the traces
            "defaults": {"n": 4, "rounds": 2, "early_stop": False, "code_timeout_s": 20}}), name="slow", route_prefix="/")
        assert requests.get(f"{url}/healthz", timeout=70).status_code == 200
        with ThreadPoolExecutor(1) as ex:
            reply = ex.submit(requests.post, f"{url}/solve", json={"problem": "Compute 6 * 7.", "seed": 1,
                                                                    "traces": True}, timeout=120)
            deadline = time.time() + 30
            while not (busy := _busy_sandbox_actors()):
                assert time.time() < deadline and not reply.done(), "no sandbox run was seen in flight"
                time.sleep(0.05)
            os.kill(busy[0], signal.SIGKILL)  # as the OOM killer or a lost machine would
            r = reply.result()
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["answer"] == "42" and data["n_candidates"] == 4 and data["counts"] == {"42": 4}
        # every candidate's code ran to its output once, the killed runs included
        assert [[(run["status"], run["output"]) for run in c["code_runs"]] for c in data["candidates"]] == \
            [[("ok", "42")]] * 4
        assert requests.get(f"{url}/healthz", timeout=70).status_code == 200  # Ray restarted the actor
    finally:
        serve.shutdown()
