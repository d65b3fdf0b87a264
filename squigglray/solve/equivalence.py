"""Mathematical equivalence of answer strings via math-verify, isolated in a worker process.

Why a process: math-verify (sympy underneath) is not thread-safe, can grind for minutes on
inputs like 3^{3^{16}}, and its own timeouts use signal.alarm, which raises off the main
thread (Ray Serve replicas, thread pools). So the comparison runs in a `TimedWorker`
(squigglray.verify.worker): the parent waits with a deadline, and a stuck worker is killed (whole
process group) and replaced on the next call.
"""

from __future__ import annotations

import importlib.util
import threading

from squigglray.solve.answers import normalize_answer
from squigglray.verify.worker import TimedWorker, WorkerError, WorkerTimeout

__all__ = ["EquivalenceChecker"]

_WORKER_MODULE = "squigglray.solve.equivalence_worker"


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
        self.backend = "math_verify" if importlib.util.find_spec("math_verify") else "string"
        self._worker = TimedWorker(timeout_s, startup_timeout_s, preload=(_WORKER_MODULE,))
        self._cache: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    @property
    def timeout_s(self) -> float:
        return self._worker.timeout_s

    @property
    def calls(self) -> int:
        """Comparisons that reached the worker."""
        return self._worker.calls

    @property
    def timeouts(self) -> int:
        return self._worker.timeouts

    @property
    def errors(self) -> int:
        """Remote exceptions, worker crashes and failed starts."""
        return self._worker.errors

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
        self._worker.close()

    def __enter__(self) -> EquivalenceChecker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ask(self, a: str, b: str) -> bool:
        try:
            return bool(self._worker.call(f"{_WORKER_MODULE}:equivalent", a, b))
        except WorkerTimeout:
            return False
        except WorkerError as e:
            if e.remote_type == "WorkerStartError":  # math-verify cannot run here: degrade for good
                self.backend = "string"
            return False
