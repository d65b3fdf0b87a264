"""Mathematical equivalence of answer strings via math-verify, isolated in a worker process.

Why a process: math-verify (sympy underneath) is not thread-safe, can grind for minutes on
inputs like 3^{3^{16}}, and its own timeouts use signal.alarm, which raises off the main
thread (Ray Serve replicas, thread pools). So the worker runs with math-verify's timeouts
disabled, the parent waits on a pipe with a deadline, and a stuck worker is killed (whole
process group) and replaced on the next call. Protocol: one JSON object per line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref

from squigglray.solve.answers import normalize_answer
from squigglray.verify.worker import kill_group

__all__ = ["EquivalenceChecker"]


class EquivalenceChecker:
    """`equivalent(a, b)`: are two answers the same mathematical object?

    Equal normalized strings short-circuit to True without the worker. Results are cached
    per unordered pair; a pair that timed out is cached as not equivalent (and counted in
    `timeouts`), so a pathological answer costs one timeout, not one per comparison.
    Worker crashes count in `errors` and also answer False; a worker that cannot even
    start (math_verify broken) switches `backend` to 'string'. Thread-safe (one lock, calls
    are serialized). `backend` is 'math_verify', or 'string' (normalized equality only)
    when math_verify is not importable.
    """

    def __init__(self, timeout_s: float = 2.0, startup_timeout_s: float = 60.0):
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.backend = "math_verify" if importlib.util.find_spec("math_verify") else "string"
        self.timeouts = 0
        self.errors = 0
        self.calls = 0  # comparisons that reached the worker
        self._cache: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._buf = b""
        self._seq = 0
        self._eof = False
        self._finalizer = weakref.finalize(self, kill_group, None)

    # -- public ---------------------------------------------------------------------------
    def equivalent(self, a: str | None, b: str | None) -> bool:
        na, nb = normalize_answer(a), normalize_answer(b)
        if not na or not nb:
            return False
        if na == nb:
            return True
        key = (na, nb) if na <= nb else (nb, na)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            eq = self._ask(*key) if self.backend == "math_verify" else False
            self._cache[key] = eq
            return eq

    def close(self) -> None:
        """Stop the worker (idempotent). The cache survives; a later call restarts it."""
        with self._lock:
            self._stop()

    def __enter__(self) -> EquivalenceChecker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- worker management (caller holds the lock) -----------------------------------------
    def _stop(self, polite: bool = True) -> None:
        proc, self._proc, self._buf = self._proc, None, b""
        self._finalizer.detach()
        if polite and proc is not None and proc.poll() is None:
            try:  # polite first: EOF on stdin ends the loop
                proc.stdin.close()
                proc.wait(timeout=1)
            except (OSError, subprocess.TimeoutExpired):
                pass
        kill_group(proc)

    def _start(self) -> bool:
        env = dict(os.environ)  # the worker imports this module by name: make sure it can
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "squigglray.solve.equivalence"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # own process group: killpg reaches any children too
            env=env,
        )
        self._buf = b""
        self._finalizer = weakref.finalize(self, kill_group, self._proc)
        msg = self._read(self.startup_timeout_s)
        if not (msg and msg.get("ready")):  # worker cannot run math-verify: degrade for good
            self.errors += 1
            self.backend = "string"
            self._stop(polite=False)
            return False
        return True

    def _read(self, timeout_s: float) -> dict | None:
        """Next JSON line from the worker, or None on deadline/EOF."""
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                self._eof = True
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return None

    def _ask(self, a: str, b: str) -> bool:
        if (self._proc is None or self._proc.poll() is not None) and not self._start():
            return False
        self._seq += 1
        self.calls += 1
        self._eof = False
        try:
            self._proc.stdin.write((json.dumps({"id": self._seq, "a": a, "b": b}) + "\n").encode())
            self._proc.stdin.flush()
        except OSError:
            self.errors += 1
            self._stop(polite=False)
            return False
        msg = self._read(self.timeout_s)
        if msg is None or msg.get("id") != self._seq:
            if msg is None and not self._eof:
                self.timeouts += 1
            else:
                self.errors += 1
            self._stop(polite=False)
            return False
        if "error" in msg:
            self.errors += 1
        return bool(msg.get("eq", False))


def _worker_main() -> None:
    """Worker loop: {"id", "a", "b"} in, {"id", "eq"} out. Equivalent = verify holds in
    both directions (math-verify's verify(gold, pred) is not symmetric)."""
    import logging

    out = os.fdopen(os.dup(1), "w", buffering=1)  # private protocol channel ...
    os.dup2(2, 1)  # ... so stray prints from sympy & co. cannot corrupt it
    sys.stdout = sys.stderr
    logging.disable(logging.WARNING)  # "timeout is disabled" warnings: intended here

    from math_verify import parse, verify

    def p(s: str):
        return parse("\\boxed{" + s + "}", parsing_timeout=None)

    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req: dict = {}
        try:
            req = json.loads(line)
            ga, gb = p(req["a"]), p(req["b"])
            eq = bool(ga and gb) and verify(ga, gb, timeout_seconds=None) and verify(
                gb, ga, timeout_seconds=None
            )
            out.write(json.dumps({"id": req.get("id"), "eq": bool(eq)}) + "\n")
        except Exception as e:  # noqa: BLE001 - report, keep serving
            out.write(json.dumps({"id": req.get("id"), "eq": False, "error": repr(e)[:200]}) + "\n")


if __name__ == "__main__":
    _worker_main()
