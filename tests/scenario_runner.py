"""Runs tests/cluster_scenarios.py <name> in a subprocess and returns its SCENARIO_RESULT.

A scenario starts a simulated multi-node cluster and spends about half its ~40 s waiting (raylets
starting, a removed node being noticed), one core busy at most. So conftest.py starts the scenarios
that the selected tests need, one after the other in a background thread, as soon as collection
ends: they run beside the first tests instead of after them, and `run_scenario` only collects.

Each scenario's Ray lives under a temp dir of its own (RAY_TMPDIR): `ray.cluster_utils.Cluster`
writes the cluster's address to <temp>/ray/ray_current_cluster, where a bare `ray.init()` of the
test session would otherwise find it and join the scenario's cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_results: dict[str, threading.Event] = {}
_outputs: dict[str, subprocess.CompletedProcess | BaseException] = {}


def _run(name: str, timeout_s: float) -> subprocess.CompletedProcess:
    temp = tempfile.mkdtemp(prefix="sqr-scn-", dir="/tmp")  # short: Unix socket paths stay under ~107 chars
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = temp
    try:
        return subprocess.run([sys.executable, str(ROOT / "tests" / "cluster_scenarios.py"), name], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout_s)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def start_in_background(names: list[str], timeout_s: float = 240) -> None:
    """Run these scenarios one after the other in a daemon thread; `run_scenario` waits for each."""
    names = [n for n in names if n not in _results]
    for name in names:
        _results[name] = threading.Event()

    def chain():
        for name in names:
            try:
                _outputs[name] = _run(name, timeout_s)
            except BaseException as e:  # noqa: BLE001 - reported by run_scenario
                _outputs[name] = e
            _results[name].set()

    threading.Thread(target=chain, name="cluster-scenarios", daemon=True).start()


def run_scenario(name: str, timeout_s: float = 240) -> dict:
    """The scenario's result: the background run's if one was started, else a run now."""
    if name in _results:
        assert _results[name].wait(timeout=2 * timeout_s), f"scenario {name} did not finish"
        proc = _outputs[name]
        if isinstance(proc, BaseException):
            raise proc
    else:
        proc = _run(name, timeout_s)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SCENARIO_RESULT ")]
    assert proc.returncode == 0 and lines, f"scenario {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1].split(" ", 1)[1])
