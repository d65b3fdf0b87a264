"""Fault tolerance: a probe sweep that loses a worker node mid-probe still finishes with every probe
exactly once (a simulated cluster in a subprocess, tests/cluster_scenarios.py), and a solve whose
sandbox actor is killed while it runs the candidates' code still returns every candidate's result."""

from __future__ import annotations

import asyncio
import time

import pytest
import ray

from squigglray.engines import Completion, Engine
from squigglray.solve import SolveOptions, solve
from squigglray.solve.sandbox import Limits
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


# -- a sandbox actor killed during a solve ------------------------------------------------------

SLEEP_S = 2.0
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


def _kill_busy_worker(pool) -> int:
    """Kill (restartable) a worker that has a run in flight; its index."""
    busy = [i for i, n in enumerate(pool.in_flight) if n]
    assert busy, "no sandbox run in flight at the kill"
    victim = busy[0]
    ray.kill(pool.workers[victim], no_restart=False)
    return victim


def test_solve_completes_when_a_sandbox_actor_is_killed_mid_run(pool):
    before = pool.ready()
    opts = SolveOptions(n=4, rounds=2, early_stop=False, code_timeout_s=20, seed=1)

    async def scenario():
        task = asyncio.create_task(solve("Compute 6 * 7.", SlowCodeEngine(), pool, opts, traces=True))
        await asyncio.sleep(SLEEP_S / 2)  # the first runs are sleeping inside the sandboxes
        victim = _kill_busy_worker(pool)
        return await task, victim

    t0 = time.perf_counter()
    result, victim = asyncio.run(scenario())
    assert time.perf_counter() - t0 < 60
    after = pool.ready()
    assert after[victim]["actor_pid"] != before[victim]["actor_pid"]  # the actor was restarted by Ray
    assert [a["actor_pid"] for i, a in enumerate(after) if i != victim] == \
        [b["actor_pid"] for i, b in enumerate(before) if i != victim]
    # complete and correct: every candidate ran its code once, got 42, answered 42
    assert result.answer == "42" and result.n_candidates == 4 and result.counts == {"42": 4}
    for c in result.candidates:
        assert [(r.status, r.output) for r in c.code_runs] == [("ok", "42")], c.code_runs
        assert c.answer == "42" and c.code_ok and c.finished


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
