"""`Sandbox`: the caller's handle on one zygote process (start, run, sessions, restart, close)."""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
from dataclasses import asdict

from squigglray.solve.sandbox import cgroups, framing
from squigglray.solve.sandbox.result import PRELOAD, WARMUP, Limits, RunResult

MAX_CODE_BYTES = 1 << 20
# The zygote's whole environment: what Python needs to start and import, nothing of the caller's
# secrets (cloud credentials, HF/OpenAI/W&B tokens, Ray's addresses): runs can read their zygote's.
ENV_ALLOWLIST = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TZ",
                 "SQUIGGLRAY_SANDBOX_CGROUP")  # cgroups.PARENT_ENV
log = logging.getLogger(__name__)


class SandboxError(RuntimeError):
    pass


class Sandbox:
    """Runs untrusted Python in forks of a pre-imported zygote. One run at a time per Sandbox
    (calls from several threads are serialized); use several Sandboxes (the Ray pool) for parallelism.

        with Sandbox() as sb:
            sb.run("x = 2**10", session="cand-0")
            sb.run("print(x + 1)", session="cand-0").stdout   # '1025\\n'
    """

    def __init__(self, limits: Limits | None = None, isolation: str = "auto",
                 preload: tuple[str, ...] = PRELOAD, warmup: str | None = WARMUP, max_sessions: int = 64,
                 start_timeout_s: float = 120.0, allow_weak_isolation: bool = False, user: int | None = None,
                 user_namespace: bool = False):
        """`isolation`: "auto" (namespaces, as root or in an unprivileged user namespace) or "process"
        (weak: only with `allow_weak_isolation`). Where no namespaces can be had, the sandbox refuses to
        start (SandboxError, naming why) unless `allow_weak_isolation` is set; then it runs in process
        mode and says so (a warning, "weak" in `isolation`). `user`: a uid to start the zygote as (needs
        root): a root Ray worker can keep even the manager off root (namespaces then come from a user
        namespace). `user_namespace`: even as root, give up the host's CAP_SYS_ADMIN first and take the
        namespaces from a user namespace (the manager can then mount or unshare nothing outside its own
        namespaces; runs get the same unprivileged uids) -- also how a container without CAP_SYS_ADMIN
        runs it."""
        if isolation not in ("auto", "process"):
            raise ValueError(f"isolation must be auto or process, not {isolation!r}")
        self.limits = limits or Limits()
        self._cfg = {"limits": asdict(self.limits), "isolation": isolation, "preload": list(preload),
                     "warmup": warmup, "max_sessions": max_sessions, "allow_weak_isolation": allow_weak_isolation,
                     "user_namespace": user_namespace}
        self._user = user
        self._start_timeout = start_timeout_s
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._known_sessions: set[str] = set()
        self._reset_sessions: set[str] = set()
        self.isolation: list[str] = []
        self.mode = ""  # "root" | "userns" | "process" (weak)
        self.restarts = 0
        self._start()

    # -- process ------------------------------------------------------------------------------
    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMEXPR_NUM_THREADS="1",
                   PYTHONHASHSEED="0")
        user = {} if self._user is None else {"user": self._user, "group": self._user, "extra_groups": []}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "squigglray.solve.sandbox.zygote", str(theirs.fileno()), json.dumps(self._cfg)],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True, env=env, **user,
        )
        theirs.close()
        self._sock = ours
        ready = self._recv(self._start_timeout)
        if not ready or not ready.get("ready"):
            self._kill()
            raise SandboxError((ready or {}).get("error") or
                               f"the sandbox zygote did not start (exit code {self._proc.poll()})")
        self.isolation = ready["isolation"]
        self.mode = ready["mode"]
        if self.mode == "process":
            log.warning("sandbox %d runs with WEAK process isolation (allow_weak_isolation): model-written code "
                        "has this user's permissions, network and files", self._proc.pid)

    def _kill(self) -> None:
        if self._sock:
            self._sock.close()
            self._sock = None
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
            cgroups.remove_left_by(self._proc.pid)

    def _restart(self) -> None:
        self._kill()
        self.restarts += 1
        self._reset_sessions |= self._known_sessions
        self._start()

    def _recv(self, timeout: float):
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return None
        try:
            return framing.recv(self._sock)[0]
        except OSError:
            return None

    def _call(self, msg: dict, timeout: float):
        try:
            framing.send(self._sock, msg)
        except OSError:
            return None
        return self._recv(timeout)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        with self._lock:
            return self._proc.poll() is None and bool(self._call({"op": "ping"}, 10))

    # -- runs ---------------------------------------------------------------------------------
    def run(self, code: str, timeout_s: float | None = None, session: str | None = None) -> RunResult:
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if len(code.encode()) > MAX_CODE_BYTES:
            raise ValueError(f"code is over the {MAX_CODE_BYTES} byte limit")
        timeout = float(timeout_s or self.limits.timeout_s)
        with self._lock:
            reply = self._call({"op": "run", "code": code, "timeout_s": timeout, "session": session},
                               timeout + 30)
            if reply is None or "error" in reply:
                why = (reply or {}).get("error", "the sandbox process died")
                self._restart()
                self._reset_sessions.discard(session)
                return RunResult(status="killed", stderr=f"{why}; the sandbox was restarted",
                                 isolation=self.isolation, session=session, session_reset=session is not None)
            result = RunResult.from_dict(reply)
            if session is not None:
                self._known_sessions.add(session)
                if session in self._reset_sessions:
                    self._reset_sessions.discard(session)
                    result.session_reset = True
            return result

    def close_session(self, session: str) -> None:
        with self._lock:
            self._known_sessions.discard(session)
            self._reset_sessions.discard(session)
            if self._call({"op": "close_session", "session": session}, 30) is None:
                self._restart()

    def close(self) -> None:
        with self._lock:
            if self._sock:
                try:
                    framing.send(self._sock, {"op": "shutdown"})
                    self._proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self._kill()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._kill()
        except Exception:
            pass
