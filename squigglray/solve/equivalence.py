"""Mathematical equivalence of answer strings via math-verify, isolated in a worker process.

Why a process: math-verify (sympy underneath) is not thread-safe, can grind for minutes on
inputs like 3^{3^{16}}, and its own timeouts use signal.alarm, which raises off the main
thread (Ray Serve replicas, thread pools). So the comparison runs in a `TimedWorker`
(squigglray.verify.worker): the parent waits with a deadline, and a stuck worker is killed (whole
process group) and replaced on the next call.

Why raw strings: math-verify parses and compares the answers exactly as written (see
equivalence_worker). Our own `normalize_answer` in front of it made false accepts (a stripped
matrix row break made (2, 7) equal (2, 9)), so the only pre-processing here is whitespace: the
free short-circuit fires on strings that are identical once whitespace runs are collapsed.
`normalize_answer` serves only the 'string' backend (math-verify not importable).
"""

from __future__ import annotations

import importlib.util
import threading

from squigglray.solve.answers import extract_answer, normalize_answer, number_count
from squigglray.verify.worker import TimedWorker, WorkerError, WorkerTimeout

__all__ = ["EquivalenceChecker", "judge_answer"]

_WORKER_MODULE = "squigglray.solve.equivalence_worker"


def _squash(s: str | None) -> str:
    """Whitespace runs collapsed, ends stripped: the only rewrite that cannot change an answer
    (TeX ignores those spaces; no answer differs from another by whitespace alone)."""
    return " ".join(str(s).split()) if s is not None else ""


class EquivalenceChecker:
    """`equivalent(a, b)`: are two answers the same mathematical object?

    Strings equal up to whitespace short-circuit to True without the worker; everything else
    goes to math-verify as written. Results are cached per unordered pair; a pair that timed
    out is cached as not equivalent (and counted in `timeouts`), so a pathological answer
    costs one timeout, not one per comparison.
    Worker crashes count in `errors` and also answer False; a worker that cannot even
    start (math_verify broken) switches `backend` to 'string'. Thread-safe (one lock, calls
    are serialized). `backend` is 'math_verify', or 'string' (equal `normalize_answer` text
    only) when math_verify is not importable.
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
        wa, wb = _squash(a), _squash(b)
        if not wa or not wb:
            return False
        if wa == wb:
            return True
        a, b = str(a), str(b)  # the worker gets them as written (a newline can end a $...$ group)
        key = (a, b) if a <= b else (b, a)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            if self.backend == "math_verify":
                eq = self._ask(*key)
            if self.backend != "math_verify":  # also when the worker just found math-verify broken
                na, nb = normalize_answer(a), normalize_answer(b)
                eq = bool(na) and na == nb
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


def judge_answer(completion: str | None, gold: str | None, checker: EquivalenceChecker) -> bool:
    """The project's answer judge: is the final answer of `completion` (`extract_answer`: the last
    box, or a stated final answer) the reference answer `gold`, as math-verify compares them?

    One guard in front of math-verify, which evaluates what it parses: restating the question in a
    box ("\\boxed{\\gcd(81, 45)}", "\\boxed{8*4 + 8*7 - 46}") would equal 9 and 42. An answer that
    writes more numbers than the reference is a computation left undone, and counts as wrong. Its
    cost: a correct answer in a less reduced form than the reference ("2\\sqrt{2}" for "\\sqrt{8}") is
    refused too (tests/test_probe_answers.py measures both sides)."""
    pred = extract_answer(completion)
    if pred is None or gold is None or number_count(pred) > number_count(str(gold)):
        return False
    return checker.equivalent(pred, str(gold))
