"""`ToolBox`: SymPy / Z3 / math-verify tools for a reasoner, with deadlines, budgets and a memo cache.

Why this shape: a tool call's input comes from a model, so it is untrusted and may be huge,
malformed or pathological. The parent therefore only does cheap things: it checks op names, arg
types and sizes (``too_large`` before any worker is involved), computes a canonical cache key
(`canonical`), serves repeats from the `MemoCache`, and charges a `Budget`. All parsing and math
runs in `TimedWorker` processes (`tool_ops`), killed and replaced when a call passes its deadline.
Errors never raise out of `call`: they come back as ``ToolResult(ok=False, error_type=...)``.

Caching rules: results, bad input found by the worker, and remote exceptions are cached; so are
timeouts, with the deadline they had (``result={"timeout_s": ...}``), so a pathological input
costs one timeout, yet a later call with a longer deadline runs again. Worker crashes and budget
refusals are not cached. Budgets count worker calls only (cache hits and input errors are free)
and seconds of worker time (not worker start-up); a call's deadline is cut to the seconds left,
and a call stopped by that cut reports ``budget``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from squigglray.verify.cache import MemoCache
from squigglray.verify.canonical import canonical_args, digest
from squigglray.verify.result import ToolResult
from squigglray.verify.worker import TimedWorker, WorkerError, WorkerTimeout

__all__ = ["Budget", "ToolBox"]

_ENTRY = "squigglray.verify.tool_ops:run"
_SYNTAX = ("auto", "latex", "sympy")
_S = "syntax?"  # every expression op takes an optional syntax: auto | latex | sympy
# op -> (one-line doc, {arg: kind}); a kind ending in '?' is optional
_OPS: dict[str, tuple[str, dict[str, str]]] = {
    "simplify": ("simplify {expr}: SymPy simplify -> expression string", {"expr": "expr", "syntax": _S}),
    "expand": ("expand {expr} -> expanded expression string", {"expr": "expr", "syntax": _S}),
    "factor": ("factor {expr} -> factored expression string", {"expr": "expr", "syntax": _S}),
    "evaluate": ("evaluate {expr, digits=15}: numeric value of a constant -> string",
                 {"expr": "expr", "digits": "digits?", "syntax": _S}),
    "diff": ("diff {expr, var=<its only symbol>, order=1} -> derivative string",
             {"expr": "expr", "var": "var?", "order": "order?", "syntax": _S}),
    "integrate": ("integrate {expr, var=<its only symbol>, lower?, upper?} -> antiderivative or definite "
                  "integral string", {"expr": "expr", "var": "var?", "lower": "bound?", "upper": "bound?",
                                      "syntax": _S}),
    "solve": ("solve {equation: 'lhs = rhs' or an expression = 0, var=<its only symbol>} -> list of "
              "solution strings", {"equation": "expr", "var": "var?", "syntax": _S}),
    "equivalent": ("equivalent {a, b}: symbolic equivalence of two expressions or equations -> bool",
                   {"a": "expr", "b": "expr", "syntax": _S}),
    "answer_equivalent": ("answer_equivalent {a, b}: same final answer per math-verify, both directions -> "
                          "bool", {"a": "expr", "b": "expr", "syntax": _S}),
    "z3_satisfiable": ("z3_satisfiable {constraints: [str], vars?: {name: 'real'|'int'}} -> {status: "
                       "sat|unsat|unknown, model: {name: str}|null}",
                       {"constraints": "exprs", "vars": "vars?", "syntax": _S}),
    "z3_prove": ("z3_prove {claim, assumptions=[], vars?} -> {status: proved|refuted|unknown, "
                 "counterexample: {name: str}|null}",
                 {"claim": "expr", "assumptions": "exprs?", "vars": "vars?", "syntax": _S}),
    "z3_counterexample": ("z3_counterexample {claim, assumptions=[], vars?} -> {found: bool, "
                          "counterexample: {name: str}|null, status}",
                          {"claim": "expr", "assumptions": "exprs?", "vars": "vars?", "syntax": _S}),
}
_INT_RANGE = {"digits": (1, 1000), "order": (0, 100)}


class Budget:
    """Limits on worker calls and worker seconds, shared by any number of threads and calls.
    `calls` and `seconds` are what was spent; `exhausted` is True once either limit is reached."""

    def __init__(self, max_calls: int | None = None, max_seconds: float | None = None):
        self.max_calls = max_calls
        self.max_seconds = max_seconds
        self.calls = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self._exhausted()

    @property
    def seconds_left(self) -> float:
        with self._lock:
            return math.inf if self.max_seconds is None else max(0.0, self.max_seconds - self.seconds)

    def _exhausted(self) -> bool:
        return ((self.max_calls is not None and self.calls >= self.max_calls)
                or (self.max_seconds is not None and self.seconds >= self.max_seconds))

    def acquire(self) -> bool:
        """Take one call (False, and nothing taken, when the budget is exhausted)."""
        with self._lock:
            if self._exhausted():
                return False
            self.calls += 1
            return True

    def spend(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds


def check_args(op: str, args) -> str | None:
    """Why args do not fit op's signature (None when they do). Sizes are checked elsewhere."""
    if not isinstance(args, dict):
        return f"args must be a JSON object, not {type(args).__name__}"
    spec = _OPS[op][1]
    unknown = sorted(set(args) - set(spec))
    if unknown:
        return f"unexpected argument(s) {unknown} for {op}; it takes {sorted(spec)}"
    for name, kind in spec.items():
        if name not in args:
            if not kind.endswith("?"):
                return f"missing argument {name!r} for {op}"
            continue
        v, kind = args[name], kind.rstrip("?")
        if kind == "expr" and not isinstance(v, str):
            return f"{name} must be a string, not {type(v).__name__}"
        if kind == "expr" and not v.strip():
            return f"{name} is empty"
        if kind == "exprs" and not (isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v)):
            return f"{name} must be a list of non-empty strings"
        if kind == "var" and not _is_name(v):
            return f"{name} must be a variable name (an identifier not starting with '_'), not {v!r}"
        if kind in _INT_RANGE:
            lo, hi = _INT_RANGE[kind]
            if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
                return f"{name} must be an integer in [{lo}, {hi}], not {v!r}"
        if kind == "bound" and not (isinstance(v, str) and v.strip() or isinstance(v, (int, float))
                                    and not isinstance(v, bool) and math.isfinite(v)):
            return f"{name} must be an expression string or a finite number, not {v!r}"
        if kind == "syntax" and v not in _SYNTAX:
            return f"syntax must be one of {_SYNTAX}, not {v!r}"
        if kind == "vars" and not (isinstance(v, dict) and all(
                _is_name(k) and s in ("real", "int") for k, s in v.items())):
            return "vars must map variable names to 'real' or 'int'"
    if op == "integrate" and ("lower" in args) != ("upper" in args):
        return "integrate takes both lower and upper, or neither"
    return None


def _is_name(v) -> bool:
    return isinstance(v, str) and v.isidentifier() and not v.startswith("_") and len(v) <= 64


def _expression_strings(args: dict):
    for v in args.values():
        if isinstance(v, str):
            yield v
        elif isinstance(v, list):
            yield from (x for x in v if isinstance(x, str))


class ToolBox:
    """`call(op, args)` -> ToolResult; see the module docstring and `ops()` for the ops.

    `workers` worker processes serve concurrent callers (each call holds one); they start on
    first use (or `start()`), under `startup_timeout_s`. `cache`: a MemoCache to share (e.g. one
    with a disk path); None with use_cache=True makes a private in-memory one; use_cache=False
    disables caching. Thread-safe.
    """

    def __init__(self, timeout_s: float = 2.0, cache: MemoCache | None = None, max_expr_chars: int = 2000,
                 workers: int = 1, startup_timeout_s: float = 60.0, use_cache: bool = True):
        self.timeout_s = float(timeout_s)
        self.max_expr_chars = int(max_expr_chars)
        self.max_args_chars = max(20_000, 20 * self.max_expr_chars)
        self.cache = (cache if cache is not None else MemoCache()) if use_cache else None
        preload = ["squigglray.verify.tool_ops"]
        if importlib.util.find_spec("math_verify"):  # answer_equivalent's backend, loaded up front
            preload.append("squigglray.solve.equivalence_worker")
        self._workers = [TimedWorker(self.timeout_s, startup_timeout_s, preload=preload)
                         for _ in range(max(1, int(workers)))]
        self._idle: queue.SimpleQueue[TimedWorker] = queue.SimpleQueue()
        for w in self._workers:
            self._idle.put(w)
        self._stats = dict.fromkeys(("calls", "cache_hits", "cache_misses", "timeouts", "errors", "worker_calls"), 0)
        self._stats_lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------
    def ops(self) -> dict[str, str]:
        return {op: doc for op, (doc, _) in _OPS.items()}

    def call(self, op: str, args: dict, timeout_s: float | None = None, budget: Budget | None = None) -> ToolResult:
        t0 = time.monotonic()
        try:
            prepared = self._prepare(op, args)
            if isinstance(prepared, ToolResult):
                return self._done(prepared, t0)
            return self._execute(op, *prepared, self._limit(timeout_s), budget, t0)
        except Exception as e:  # noqa: BLE001 - a bug here must not take the caller down
            return self._done(ToolResult(str(op), False, error_type="error", error=f"{op}: {type(e).__name__}: {e}"), t0)

    def call_many(self, calls: list[tuple[str, dict]], timeout_s: float | None = None,
                  budget: Budget | None = None) -> list[ToolResult]:
        """Results in the order of `calls`. Calls with the same cache key run once (the
        repeats come back with cached=True); distinct calls run in parallel over the workers."""
        t0 = time.monotonic()
        limit = self._limit(timeout_s)
        prepared = [self._prepare(*c) if isinstance(c, (tuple, list)) and len(c) == 2 else
                    ToolResult("?", False, error_type="bad_input", error="each call must be a pair (op, args)")
                    for c in calls]
        jobs = {p[0]: (c[0], *p) for c, p in zip(calls, prepared) if not isinstance(p, ToolResult)}

        def run(job):
            op, key, wargs = job
            t1 = time.monotonic()
            try:
                return key, self._execute(op, key, wargs, limit, budget, t1)
            except Exception as e:  # noqa: BLE001 - as in call()
                return key, self._done(ToolResult(op, False, error_type="error", error=f"{op}: {e!r}"), t1)

        threads = min(len(self._workers), len(jobs))
        if threads > 1:
            with ThreadPoolExecutor(threads, thread_name_prefix="toolbox") as pool:
                done = dict(pool.map(run, jobs.values()))
        else:
            done = dict(map(run, jobs.values()))
        out, seen = [], set()
        for p in prepared:
            if isinstance(p, ToolResult):
                out.append(self._done(p, t0))
            elif p[0] in seen:  # a repeat inside the batch
                out.append(self._done(replace(done[p[0]], cached=True, elapsed_s=0.0), t0, hit=True, keep_time=True))
            else:
                seen.add(p[0])
                out.append(done[p[0]])
        return out

    def stats(self) -> dict:
        """calls (results returned), cache_hits (from the cache or a repeat in a batch),
        cache_misses, timeouts (worker kills), errors (results with ok=False other than timeouts),
        worker_calls, worker_restarts."""
        with self._stats_lock:
            out = dict(self._stats)
        out["worker_restarts"] = sum(w.restarts for w in self._workers)
        return out

    def start(self) -> ToolBox:
        """Start every worker now, in parallel (else each starts on first use)."""
        with ThreadPoolExecutor(len(self._workers)) as pool:
            list(pool.map(lambda w: w.start(), self._workers))
        return self

    def close(self) -> None:
        for w in self._workers:
            w.close()

    def __enter__(self) -> ToolBox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    def _limit(self, timeout_s: float | None) -> float:
        try:
            return self.timeout_s if timeout_s is None else float(timeout_s)
        except (TypeError, ValueError):
            return math.nan  # reported as bad_input by _execute

    def _prepare(self, op, args) -> ToolResult | tuple[str, dict]:
        """(cache key, worker args), or the ToolResult of an input error found here."""
        name = op if isinstance(op, str) else "?"
        if name not in _OPS:
            return ToolResult(name, False, error_type="unknown_op",
                              error=f"unknown op {op!r}; known ops: {', '.join(_OPS)}")
        try:
            size = len(json.dumps(args))
        except (TypeError, ValueError) as e:
            return ToolResult(op, False, error_type="bad_input", error=f"{op}: args are not JSON: {e}")
        if size > self.max_args_chars:
            return ToolResult(op, False, error_type="too_large",
                              error=f"{op}: args are {size} characters of JSON (limit {self.max_args_chars})")
        why = check_args(op, args)
        if why:
            return ToolResult(op, False, error_type="bad_input", error=f"{op}: {why}")
        longest = max((len(s) for s in _expression_strings(args)), default=0)
        if longest > self.max_expr_chars:
            return ToolResult(op, False, error_type="too_large",
                              error=f"{op}: an expression is {longest} characters long (limit {self.max_expr_chars})")
        wargs = canonical_args(op, args)
        return digest(op, wargs), wargs

    def _execute(self, op: str, key: str, wargs: dict, limit: float, budget: Budget | None, t0: float) -> ToolResult:
        if limit <= 0 or not math.isfinite(limit):
            return self._done(ToolResult(op, False, error_type="bad_input", error=f"timeout_s must be positive "
                                         f"and finite, not {limit!r}"), t0)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and not (hit.error_type == "timeout" and limit > _timeout_of(hit)):
                return self._done(replace(hit, cached=True), t0, hit=True)
        if budget is not None and budget.exhausted:
            return self._done(_refused(op, budget), t0, miss=True)
        worker = self._idle.get()
        try:
            try:
                worker.start()
            except WorkerError as e:
                return self._done(ToolResult(op, False, error_type="error", error=f"{op}: {e}"), t0, miss=True)
            if budget is not None and not budget.acquire():
                return self._done(_refused(op, budget), t0, miss=True)
            run_limit = min(limit, budget.seconds_left) if budget is not None else limit
            result, cacheable = self._run(worker, op, wargs, run_limit, budget)
        finally:
            self._idle.put(worker)
        if cacheable and self.cache is not None:
            self.cache.put(key, result)
        timed_out = result.error_type == "timeout"
        if timed_out and run_limit < limit:  # cut short by the budget
            result = replace(result, error_type="budget", error=f"{op}: the tool budget's seconds ran out "
                             f"after {run_limit:.3g} s of this call")
        return self._done(result, t0, miss=True, timeout=timed_out)

    def _run(self, worker: TimedWorker, op: str, wargs: dict, limit: float, budget: Budget | None):
        """(result, whether it may be cached)."""
        with self._stats_lock:
            self._stats["worker_calls"] += 1
        t1 = time.monotonic()
        try:
            out = worker.call(_ENTRY, op, wargs, limit, timeout_s=limit)
            result = ToolResult(op, True, result=out["result"]) if out["ok"] else \
                ToolResult(op, False, error_type=out["error_type"], error=out["error"])
        except WorkerTimeout:
            result = ToolResult(op, False, result={"timeout_s": limit}, error_type="timeout",
                                error=f"{op} did not finish within {limit:.3g} s (worker killed; the next call "
                                      "gets a fresh one)")
        except WorkerError as e:
            result = ToolResult(op, False, error_type="error", error=f"{op}: {e.remote_type}: {e.remote_message}")
            if e.remote_type in ("WorkerDied", "WorkerStartError"):  # not the input's fault
                return result, False
        finally:
            if budget is not None:
                budget.spend(time.monotonic() - t1)
        return result, True

    def _done(self, result: ToolResult, t0: float, hit: bool = False, miss: bool = False,
              timeout: bool = False, keep_time: bool = False) -> ToolResult:
        if not keep_time:
            result = replace(result, elapsed_s=time.monotonic() - t0)
        with self._stats_lock:
            s = self._stats
            s["calls"] += 1
            s["cache_hits"] += hit
            s["cache_misses"] += miss and self.cache is not None
            s["timeouts"] += timeout
            s["errors"] += not result.ok and result.error_type != "timeout"
        return result


def _refused(op: str, budget: Budget) -> ToolResult:
    return ToolResult(op, False, error_type="budget", error=f"{op}: the tool budget is exhausted (calls "
                      f"{budget.calls}/{budget.max_calls}, seconds {budget.seconds:.3g}/{budget.max_seconds})")


def _timeout_of(result: ToolResult) -> float:
    """The deadline a cached timeout had (0 when unknown: never reuse it then)."""
    r = result.result
    return float(r.get("timeout_s", 0.0)) if isinstance(r, dict) else 0.0
