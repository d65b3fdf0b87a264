"""`TimedWorker`: run a squigglray function in a persistent subprocess with a hard per-call deadline.

Why a process: SymPy can grind for minutes on innocent-looking input, Z3 does not always honour
its own timeout, and ``signal.alarm`` only works on the main thread (not in Ray Serve replicas or
thread pools). So the work runs in a child process that is its own session; the parent waits on a
pipe with a deadline and, when it passes, SIGKILLs the child's whole process group. The next call
starts a fresh child (``preload`` modules are imported then, under ``startup_timeout_s``, so slow
imports never eat into a call's deadline).

Protocol: one JSON object per line. Parent -> child ``{"id", "func", "args", "kwargs"}``; child ->
parent ``{"id", "result"}`` or ``{"id", "error": {"type", "message"}}``. The child writes on a
private duplicate of its stdout; fd 1 is pointed at stderr, so stray prints cannot corrupt it.

Outcomes of `call`: the function's (JSON-able) return value; `WorkerTimeout` when the deadline
passed (the child was killed); `WorkerError` when the function raised (the child survives) or the
child died or could not start. Only functions of the ``squigglray`` package may be called.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn

__all__ = ["TimedWorker", "WorkerError", "WorkerTimeout"]

_PACKAGE = "squigglray"


class WorkerTimeout(TimeoutError):
    """The call passed its deadline; the worker was killed and restarts on the next call."""

    def __init__(self, func: str, timeout_s: float):
        super().__init__(f"{func} did not finish within {timeout_s:g} s (worker killed)")
        self.func = func
        self.timeout_s = timeout_s


class WorkerError(RuntimeError):
    """The remote function raised (`remote_type` is the exception's class name, qualified by its
    module unless built in), or the worker died / could not start (remote_type 'WorkerDied' /
    'WorkerStartError')."""

    def __init__(self, func: str, remote_type: str, remote_message: str):
        super().__init__(f"{func} raised {remote_type}: {remote_message}")
        self.func = func
        self.remote_type = remote_type
        self.remote_message = remote_message


def _check_module(module: str, what: str) -> None:
    """Only squigglray modules may be imported by the worker (it runs code by name)."""
    if module != _PACKAGE and not module.startswith(_PACKAGE + "."):
        raise ValueError(f"{what} is outside the {_PACKAGE} package; the worker refuses it")


def _check_name(func: str) -> tuple[str, str]:
    """Split 'squigglray.module:attr' (attr may be dotted)."""
    module, sep, attr = func.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"function name {func!r} is not 'module:function'")
    _check_module(module, f"function {func!r}")
    return module, attr


def kill_group(proc: subprocess.Popen | None) -> None:
    """SIGKILL the worker's process group (it is a session leader) and reap it."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    for f in (proc.stdin, proc.stdout):
        try:
            f.close()
        except OSError:
            pass


class TimedWorker:
    """`call("squigglray.mod:func", *args, timeout_s=..., **kwargs)` in a persistent child process.

    Thread-safe: calls are serialized by one (reentrant) lock; `reserved()` holds it across
    several calls, so a caller's time budget does not run while other threads use the worker.
    Counters: `calls` (requests sent), `timeouts`,
    `errors` (remote exceptions, crashes, failed starts), `restarts` (starts after the first).
    `quiet=False` lets the child's stderr through (debugging).
    """

    def __init__(self, timeout_s: float = 2.0, startup_timeout_s: float = 60.0,
                 preload: tuple[str, ...] | list[str] = (), quiet: bool = True):
        for m in preload:
            _check_module(m, f"preload module {m!r}")
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.preload = tuple(preload)
        self.quiet = quiet
        self.calls = self.timeouts = self.errors = self.restarts = 0
        self._starts = 0
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._buf = b""
        self._seq = 0
        self._finalizer = weakref.finalize(self, kill_group, None)

    # -- public ---------------------------------------------------------------------------
    def call(self, func: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """Run `func` remotely; returns its result, raises WorkerTimeout or WorkerError.
        Arguments and result must be JSON-able (tuples arrive as lists)."""
        _check_name(func)
        request = {"id": 0, "func": func, "args": list(args), "kwargs": kwargs}
        json.dumps(request)  # not JSON-able: TypeError here, before the worker is involved
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        with self._lock:
            self._ensure_started()
            self._seq += 1
            self.calls += 1
            request["id"] = self._seq
            try:
                self._proc.stdin.write((json.dumps(request) + "\n").encode())
                self._proc.stdin.flush()
            except OSError:
                self._died(func, "could not write the request")
            msg, eof = self._read(limit)
            if msg is None:
                if eof:
                    self._died(func, "the worker exited during the call")
                self.timeouts += 1
                self._stop(polite=False)
                raise WorkerTimeout(func, limit)
            if msg.get("id") != self._seq:
                self._died(func, f"protocol error: reply {str(msg)[:200]}")
            if "error" in msg:
                self.errors += 1
                err = msg["error"]
                raise WorkerError(func, err.get("type", "Exception"), err.get("message", ""))
            return msg.get("result")

    def start(self) -> None:
        """Start the worker now if it is not running (else the next call does)."""
        with self._lock:
            self._ensure_started()

    @contextmanager
    def reserved(self) -> Iterator[TimedWorker]:
        """Hold the worker for a sequence of calls (other threads wait)."""
        with self._lock:
            yield self

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Stop the worker (idempotent); a later call starts a new one."""
        with self._lock:
            self._stop()

    def __enter__(self) -> TimedWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- process management (caller holds the lock) ------------------------------------------
    def _died(self, func: str, why: str) -> NoReturn:
        self.errors += 1
        self._stop(polite=False)
        raise WorkerError(func, "WorkerDied", why)

    def _stop(self, polite: bool = True) -> None:
        proc, self._proc, self._buf = self._proc, None, b""
        self._finalizer.detach()
        if polite and proc is not None and proc.poll() is None:
            try:  # EOF on stdin ends the worker loop
                proc.stdin.close()
                proc.wait(timeout=1)
            except (OSError, subprocess.TimeoutExpired):
                pass
        kill_group(proc)

    def _ensure_started(self) -> None:
        if self.alive:
            return
        self._stop(polite=False)
        env = dict(os.environ)  # the child imports squigglray by name: make sure it can
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "squigglray.verify.worker", json.dumps(self.preload)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if self.quiet else None,
            start_new_session=True,  # own process group: killpg reaches its children too
            env=env,
        )
        self._buf = b""
        self._finalizer = weakref.finalize(self, kill_group, self._proc)
        self.restarts += self._starts > 0
        self._starts += 1
        msg, _ = self._read(self.startup_timeout_s)
        if not (msg and msg.get("ready")):
            self.errors += 1
            self._stop(polite=False)
            why = (msg or {}).get("error") or f"no ready signal within {self.startup_timeout_s:g} s"
            raise WorkerError("worker start", "WorkerStartError", why)

    def _read(self, timeout_s: float) -> tuple[dict | None, bool]:
        """(next JSON line, False), or (None, eof) on deadline or end of file."""
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None, False
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None, True
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line), False
        except ValueError:
            return {"id": None, "bad": line[:200].decode(errors="replace")}, False


# -- child side ---------------------------------------------------------------------------------
def _resolve(func: str):
    module, attr = _check_name(func)
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{func} is not callable")
    return obj


def _type_name(e: BaseException) -> str:
    t = type(e)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _serve() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)  # private protocol channel ...
    os.dup2(2, 1)  # ... so stray prints cannot corrupt it
    sys.stdout = sys.stderr
    try:
        for m in json.loads(sys.argv[1]) if len(sys.argv) > 1 else ():
            _check_module(m, f"preload module {m!r}")
            importlib.import_module(m)
    except Exception as e:  # noqa: BLE001 - tell the parent why, then quit
        out.write(json.dumps({"ready": False, "error": f"preload failed: {_type_name(e)}: {e}"}) + "\n")
        return
    out.write(json.dumps({"ready": True}) + "\n")
    while line := sys.stdin.readline():
        req: dict = {}
        try:
            req = json.loads(line)
            result = _resolve(req["func"])(*req.get("args", ()), **req.get("kwargs", {}))
            text = json.dumps({"id": req.get("id"), "result": result})
        except Exception as e:  # noqa: BLE001 - report it, keep serving
            text = json.dumps({"id": req.get("id"), "error": {"type": _type_name(e), "message": str(e)[:4000]}})
        out.write(text + "\n")


# -- tiny helpers for tests and health checks ---------------------------------------------------
def _echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs, "pid": os.getpid()}


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _fail(message: str):
    raise ValueError(message)


def _crash(code: int = 3):
    os._exit(code)


if __name__ == "__main__":
    _serve()
