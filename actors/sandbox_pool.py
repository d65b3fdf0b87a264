"""Sandbox executor actors: a pool of Ray actors, each owning one sandbox zygote.

Stateless runs go to the least-loaded worker, a session always to the same one. In-flight work per
worker is bounded (backpressure); a crashed actor is restarted by Ray and its queued calls re-run
(max_restarts / max_task_retries). Metrics go to the Ray dashboard through ray.util.metrics.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict
from typing import Any, Iterable

import ray
from ray.util import metrics

from actors.placement import options
from squigglray.placement import from_resources
from squigglray.solve.executor import worker_for
from squigglray.solve.sandbox import Limits, RunResult, Sandbox

RETRYABLE = (ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError)
RESUBMITS = 5
LATENCY_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


@ray.remote(max_restarts=-1, max_task_retries=3)
class SandboxWorker:
    """One zygote; one run at a time (the actor's calls are serialized)."""

    def __init__(self, limits: dict[str, Any], sandbox_options: dict[str, Any]):
        self.sandbox = Sandbox(Limits(**limits), **sandbox_options)
        self.incarnation = f"{os.getpid()}-{time.time_ns()}"
        # `isolation` is the sandbox's mode: root | userns | userns_1uid | process (weak: on a dashboard, loud)
        self.runs = metrics.Counter("squigglray_sandbox_runs", "Sandbox runs by status and isolation mode",
                                    tag_keys=("status", "isolation"))
        self.latency = metrics.Histogram("squigglray_sandbox_run_seconds", "Sandbox run wall time",
                                         boundaries=LATENCY_BOUNDS)

    def run_batch(self, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        """Run jobs in order; the incarnation tells the caller whether sessions survived a restart."""
        out = []
        for job in jobs:
            t0 = time.perf_counter()
            r = self.sandbox.run(job["code"], job.get("timeout_s"), job.get("session"))
            self.runs.inc(1, tags={"status": r.status, "isolation": self.sandbox.mode})
            self.latency.observe(time.perf_counter() - t0)
            out.append(r.to_dict())
        return {"incarnation": self.incarnation, "results": out}

    def close_session(self, session: str) -> None:
        self.sandbox.close_session(session)

    def close(self) -> None:
        """Stop the zygote cleanly (it removes its boxes' cgroups), before the actor is killed."""
        self.sandbox.close()

    def info(self) -> dict[str, Any]:
        return {"actor_pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "zygote_pid": self.sandbox.pid, "isolation": self.sandbox.isolation, "mode": self.sandbox.mode,
                "restarts": self.sandbox.restarts, "alive": self.sandbox.alive()}

    def crash(self) -> None:
        """For fault-tolerance tests: kill this actor's process as a node failure would."""
        os._exit(1)


class SandboxPool:
    """Client side of the pool (driver, Serve replica, or job). Implements solve.CodeExecutor."""

    def __init__(self, size: int = 2, limits: Limits | None = None, num_cpus: float = 1.0, max_in_flight: int = 2,
                 resources: dict[str, float] | None = None, sandbox_nodes: bool = False, **sandbox_options):
        """`sandbox_options`: keyword arguments of `Sandbox` (isolation, allow_weak_isolation, ...) for
        every worker's zygote; a worker that cannot get the isolation asked for fails to start."""
        self.limits = limits or Limits()
        # sandbox_nodes: only on CPU sandbox nodes (resource 'sandbox'; a cluster setting, off on a laptop).
        # A placement no node can hold raises PlacementError here instead of leaving the pool pending.
        placement = from_resources(num_cpus, 0.0, resources, sandbox=sandbox_nodes)
        # Untrusted code needs no accelerator: hide the node's GPUs from the sandbox processes.
        opts: dict[str, Any] = {**options(placement, "a sandbox actor"),
                                "runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": ""}}}
        self.workers = [SandboxWorker.options(**opts).remote(asdict(self.limits), sandbox_options) for _ in range(size)]
        self.max_in_flight = max_in_flight
        self.in_flight = [0] * size
        self.queue_depth = metrics.Gauge("squigglray_sandbox_queue_depth", "Sandbox calls in flight or waiting")
        self._waiting = 0
        self._cond: asyncio.Condition | None = None
        self._session_home: dict[str, str] = {}  # session -> incarnation of the worker holding it

    def ready(self, timeout_s: float = 120) -> list[dict[str, Any]]:
        return ray.get([w.info.remote() for w in self.workers], timeout=timeout_s)

    # -- async API (the TIR loop, Serve) ------------------------------------------------------
    async def _acquire(self, session: str | None) -> int:
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            self._waiting += 1
            self._report()
            while True:
                i = (worker_for(session, len(self.workers)) if session is not None
                     else min(range(len(self.workers)), key=self.in_flight.__getitem__))
                if self.in_flight[i] < self.max_in_flight:
                    break
                await self._cond.wait()
            self._waiting -= 1
            self.in_flight[i] += 1
            self._report()
            return i

    async def _release(self, i: int) -> None:
        async with self._cond:
            self.in_flight[i] -= 1
            self._report()
            self._cond.notify_all()

    def _report(self) -> None:
        self.queue_depth.set(self._waiting + sum(self.in_flight))

    async def run(self, code: str, session: str | None = None, timeout_s: float | None = None) -> RunResult:
        i = await self._acquire(session)
        job = {"code": code, "timeout_s": timeout_s, "session": session}
        try:
            for attempt in range(RESUBMITS + 1):
                try:
                    reply = await self.workers[i].run_batch.remote([job])
                    break
                except RETRYABLE:  # the actor is restarting: run the work again once it is back
                    if attempt == RESUBMITS:
                        raise
                    await asyncio.sleep(0.5 * (attempt + 1))
        finally:
            await self._release(i)
        result = RunResult.from_dict(reply["results"][0])
        if session is not None:
            home = self._session_home.setdefault(session, reply["incarnation"])
            if home != reply["incarnation"]:  # the worker was restarted: the session's state is gone
                result.session_reset = True
                self._session_home[session] = reply["incarnation"]
        return result

    async def close_session(self, session: str) -> None:
        self._session_home.pop(session, None)
        await self.workers[worker_for(session, len(self.workers))].close_session.remote(session)

    # -- batch API (benchmarks, offline evaluation) -------------------------------------------
    def map(self, codes: Iterable[str], timeout_s: float | None = None, batch_size: int = 4,
            progress=None) -> list[RunResult]:
        """Run many stateless snippets; at most max_in_flight batches per worker are queued at once."""
        codes = list(codes)
        batches = [list(range(i, min(i + batch_size, len(codes)))) for i in range(0, len(codes), batch_size)]
        results: list[RunResult | None] = [None] * len(codes)
        pending: dict[ray.ObjectRef, tuple[int, list[int]]] = {}
        load = [0] * len(self.workers)
        nxt = 0
        while nxt < len(batches) or pending:
            while nxt < len(batches) and min(load) < self.max_in_flight:
                w = load.index(min(load))
                jobs = [{"code": codes[j], "timeout_s": timeout_s} for j in batches[nxt]]
                pending[self.workers[w].run_batch.remote(jobs)] = (w, batches[nxt])
                load[w] += 1
                nxt += 1
            self.queue_depth.set(len(batches) - nxt + len(pending))
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                w, idx = pending.pop(ref)
                try:
                    reply = ray.get(ref)
                except RETRYABLE:  # resubmit the batch; Ray restarts the actor
                    time.sleep(0.5)
                    jobs = [{"code": codes[j], "timeout_s": timeout_s} for j in idx]
                    pending[self.workers[w].run_batch.remote(jobs)] = (w, idx)
                    continue
                load[w] -= 1
                for j, d in zip(idx, reply["results"]):
                    results[j] = RunResult.from_dict(d)
                if progress is not None:
                    progress.update(len(idx))
        self.queue_depth.set(0)
        return results  # type: ignore[return-value]

    def shutdown(self) -> None:
        ray.wait([w.close.remote() for w in self.workers], num_returns=len(self.workers), timeout=10)
        for w in self.workers:
            ray.kill(w)
