"""The sandbox's zygote and manager process: `python -m squigglray.solve.sandbox.zygote FD CONFIG`.

It imports the heavy libraries once, enters its own namespaces (as PID 1 of a new PID namespace,
with no network and a private /tmp) and then forks every run from that warm state, so a run costs a
fork instead of an interpreter start and `import sympy`. After each run it kills every process the
run left behind; only session holders survive.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass

from squigglray.solve.sandbox import framing, isolation, runner

NS_ISOLATION = ["pid_namespace", "network_namespace", "mount_namespace", "ipc_namespace", "unprivileged_uid",
                "private_tmp", "setsid", "rlimits"]
PROCESS_ISOLATION = ["subreaper", "setsid", "rlimits", "audit_hook_network", "audit_hook_files"]
MAX_SLOTS = 128


@dataclass
class Session:
    slot: int
    workdir: str
    holder: int | None = None
    sock: socket.socket | None = None
    lost: bool = False


@dataclass
class Child:
    """A run's process and the manager's ends of its pipes."""

    pid: int
    pidfd: int
    out_r: int
    err_r: int
    res_r: int
    code_w: int | None
    workdir: str
    direct: bool  # our own child (we can read its exit status), not a holder's


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _proc_stat(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[1]), rest[0]
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


class Manager:
    def __init__(self, sock: socket.socket, cfg: dict, namespaces: bool, uid_base: int) -> None:
        self.sock, self.cfg, self.ns, self.uid_base = sock, cfg, namespaces, uid_base
        self.limits = cfg["limits"]
        self.address_space = _vm_bytes() + self.limits["memory_mb"] * 2**20
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.evicted: OrderedDict[str, None] = OrderedDict()
        self.free_slots = list(range(1, MAX_SLOTS))
        self.isolation = NS_ISOLATION if namespaces else PROCESS_ISOLATION
        self.counter = 0
        self.nproc = self.limits["processes"] if namespaces else None
        self.warm: Child | None = None
        self._timeout = float(self.limits["timeout_s"])

    # -- processes ---------------------------------------------------------------------------
    def _descendants(self) -> dict[int, str]:
        """pid -> state of every process below this one (orphans come back to us as reaper)."""
        out: dict[int, str] = {}
        todo = _children(os.getpid())
        while todo:
            pid = todo.pop()
            st = _proc_stat(pid)
            if st is not None and pid not in out:
                out[pid] = st[1]
                todo += _children(pid)
        return out

    def _holders(self) -> set[int]:
        keep = {s.holder for s in self.sessions.values() if s.holder}
        return keep | ({self.warm.pid} if self.warm else set())

    def _kill_strays(self) -> None:
        keep = self._holders()
        for attempt in range(2000):
            runner.reap_children()
            live = [p for p, state in self._descendants().items() if p not in keep and state not in "ZX"]
            if not live:
                return
            for pid in live:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.0002 if attempt < 20 else 0.005)
        raise RuntimeError("the sandbox could not clear the processes a run left behind")

    # -- sessions ----------------------------------------------------------------------------
    def _workdir(self, slot: int) -> str:
        self.counter += 1
        if self.ns:
            path = f"/tmp/run-{slot}-{self.counter}"
            os.mkdir(path, 0o700)
            os.chown(path, self.uid_base + slot, self.uid_base + slot)
            return path
        return tempfile.mkdtemp(prefix=f"squigglray-sbx-{slot}-")

    def _open_session(self, sid: str) -> Session:
        while len(self.sessions) >= self.cfg["max_sessions"] or not self.free_slots:
            old, _ = next(iter(self.sessions.items()))
            self._close_session(old)
            self.evicted[old] = None
            while len(self.evicted) > 10_000:
                self.evicted.popitem(last=False)
        slot = self.free_slots.pop(0)
        lost = sid in self.evicted
        self.evicted.pop(sid, None)
        sess = Session(slot=slot, workdir=self._workdir(slot), lost=lost)
        self.sessions[sid] = sess
        return sess

    def _close_session(self, sid: str) -> None:
        sess = self.sessions.pop(sid, None)
        if sess is None:
            return
        if sess.holder:
            try:
                os.kill(sess.holder, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if sess.sock:
            sess.sock.close()
        self._kill_strays()
        shutil.rmtree(sess.workdir, ignore_errors=True)
        self.free_slots.append(sess.slot)

    # -- runs --------------------------------------------------------------------------------
    def _fork(self, slot: int, workdir: str, sess: Session | None, code: str | None) -> Child:
        """Fork an isolated child. Without code it is pre-forked: set up, then waiting for its code."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        code_r, code_w = os.pipe() if code is None else (None, None)
        child_end = None
        if sess is not None:
            if sess.sock:
                sess.sock.close()
            sess.sock, child_end = socket.socketpair()
        job = {
            "code": code, "code_r": code_r, "workdir": workdir, "out_w": out_w, "err_w": err_w, "res_w": res_w,
            "sock_fd": child_end.fileno() if child_end else None, "address_space": self.address_space,
            "cpu_s": int(self._timeout) + 2 if code is not None else 3600,
            "file_size": self.limits["file_size_mb"] * 2**20, "open_files": self.limits["open_files"],
            "processes": self.nproc, "uid": self.uid_base + slot if self.ns else None, "audit": not self.ns,
        }
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                runner.start_child(job)
            finally:
                os._exit(71)
        for fd in (out_w, err_w, res_w, code_r):
            if fd is not None:
                os.close(fd)
        if child_end:
            child_end.close()
        return Child(pid, os.pidfd_open(pid), out_r, err_r, res_r, code_w, workdir, direct=True)

    def _spawn_warm(self) -> None:
        self._timeout = self.limits["timeout_s"]
        self.warm = self._fork(0, self._workdir(0), None, None)

    def _start_stateless(self, code: str) -> Child:
        warm, self.warm = self.warm, None
        if warm is not None and not select.select([warm.pidfd], [], [], 0)[0]:
            try:
                framing.write_fd(warm.code_w, {"code": code, "timeout_s": self._timeout})
                os.close(warm.code_w)
                return warm
            except OSError:
                pass
        if warm is not None:
            self._discard(warm)
        return self._fork(0, self._workdir(0), None, code)

    def _start_in_holder(self, sess: Session, code: str) -> Child | None:
        """Ask the session's holder to fork the block; None if the holder is gone."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        try:
            framing.send(sess.sock, {"code": code}, [out_w, err_w, res_w])
            sess.sock.settimeout(10)
            reply, fds = framing.recv(sess.sock, max_fds=1)
            sess.sock.settimeout(None)
            child = Child(reply["pid"], fds[0], out_r, err_r, res_r, None, sess.workdir, direct=False)
        except (OSError, TypeError, KeyError, IndexError):
            child = None
            for fd in (out_r, err_r, res_r):
                os.close(fd)
        for fd in (out_w, err_w, res_w):
            os.close(fd)
        return child

    def _discard(self, child: Child) -> None:
        for fd in (child.out_r, child.err_r, child.res_r, child.pidfd, child.code_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if child.pid > 0:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _watch(self, child: Child, timeout: float, session: bool) -> dict:
        cap, tail = self.limits["output_bytes"], self.limits["stderr_tail_bytes"]
        out_r, err_r, res_r, pidfd = child.out_r, child.err_r, child.res_r, child.pidfd
        poller = select.poll()
        for fd in (out_r, err_r, res_r):
            os.set_blocking(fd, False)
            poller.register(fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        poller.register(self.sock, select.POLLIN)
        stdout, stderr, reader = bytearray(), bytearray(), framing.FrameReader()
        result, exited, status = None, False, None
        deadline = time.monotonic() + timeout

        def drain(fd: int) -> bytes | None:
            try:
                return os.read(fd, 1 << 16)
            except BlockingIOError:
                return None

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = "timeout"
                break
            for fd, _ev in poller.poll(max(1, int(remaining * 1000))):
                if fd == pidfd:
                    exited = True
                    poller.unregister(pidfd)
                elif fd == self.sock.fileno():
                    self._shutdown()  # the client went away mid-run
                else:
                    data = drain(fd)
                    if data == b"":
                        poller.unregister(fd)
                    elif data and fd == out_r:
                        stdout += data
                        if len(stdout) > cap:
                            status = "output_limit"
                    elif data and fd == err_r:
                        stderr = (stderr + data)[-2 * tail:]
                    elif data and fd == res_r:
                        result = reader.feed(data)
            if status:
                break
            if exited and result is None:  # a result may sit in the pipe behind the exit event
                while result is None and (data := drain(res_r)):
                    result = reader.feed(data)
            # A stateless run is over when its process is gone; a session block when it reported.
            if result is not None and (exited or (session and not result.get("exiting"))):
                break
            if exited and result is None:
                break
        for fd, buf in ((out_r, stdout), (err_r, stderr)):
            while len(buf) <= cap and (data := drain(fd)):
                buf += data
        if status is None and len(stdout) > cap:
            status = "output_limit"
        return {"result": result, "exited": exited, "status": status, "stdout": bytes(stdout[:cap]),
                "stderr": bytes(stderr[-tail:])}

    def _run(self, msg: dict) -> dict:
        t0 = time.perf_counter()
        code = msg["code"]
        self._timeout = float(msg.get("timeout_s") or self.limits["timeout_s"])
        sid = msg.get("session")
        sess, reset, child = None, False, None
        if sid is None:
            child = self._start_stateless(code)
        else:
            sess = self.sessions.get(sid) or self._open_session(sid)
            self.sessions.move_to_end(sid)
            reset, sess.lost = sess.lost, False
            if sess.holder:
                child = self._start_in_holder(sess, code)
                if child is None:
                    sess.holder, reset = None, True  # the holder is gone (killed by its own block)
                    self._kill_strays()
            if child is None:
                child = self._fork(sess.slot, sess.workdir, sess, code)
        w = self._watch(child, self._timeout, sess is not None)
        res, status, note = w["result"], w["status"], ""
        if status is None and res is not None:
            status = res["status"]
        elif status is None:
            status, note = self._death_status(child.pid, child.direct)
        survived = res is not None and not res.get("exiting") and not w["exited"] and w["status"] is None
        if sess is not None and survived:
            sess.holder = child.pid  # the block's process now holds the session's state
            child.pid = 0
        self._discard(child)
        self._kill_strays()
        if sess is None:
            shutil.rmtree(child.workdir, ignore_errors=True)
        return {
            "status": status, "stdout": w["stdout"].decode(errors="replace"),
            "stderr": w["stderr"].decode(errors="replace") + note, "duration_s": time.perf_counter() - t0,
            "exec_s": (res or {}).get("exec_s", 0.0),
            "peak_memory_mb": (res or {}).get("peak_memory_mb", 0.0), "isolation": self.isolation,
            "session": sid, "session_reset": reset,
        }

    @staticmethod
    def _death_status(pid: int, direct: bool) -> tuple[str, str]:
        """Why a run's process ended without reporting: a signal (crash) or an exit code."""
        if not direct:
            return "killed", "\nthe run's process ended without a result"
        try:
            _, st = os.waitpid(pid, 0)
        except ChildProcessError:
            return "killed", "\nthe run's process ended without a result"
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            status = {signal.SIGXCPU: "timeout", signal.SIGXFSZ: "output_limit"}.get(sig, "killed")
            return status, f"\nkilled by signal {name}"
        return "error", f"\nexited with code {os.WEXITSTATUS(st)} without a result"

    # -- loop --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        if self.warm:
            self._discard(self.warm)
            self.warm = None
        for sid in list(self.sessions):
            self._close_session(sid)
        self._kill_strays()
        os._exit(0)

    def serve(self) -> None:
        framing.send(self.sock, {"ready": True, "isolation": self.isolation, "preload": self.cfg["preload"]})
        handlers = {
            "run": self._run,
            "close_session": lambda m: (self._close_session(m["session"]), {"ok": True})[1],
            "ping": lambda m: {"ok": True, "sessions": len(self.sessions)},
        }
        while True:
            if self.warm is None:
                self._spawn_warm()  # between requests, off the next run's critical path
            msg, _ = framing.recv(self.sock)
            if msg is None or msg.get("op") == "shutdown":
                self._shutdown()
            try:
                reply = handlers[msg["op"]](msg)
            except Exception as e:  # noqa: BLE001  (report, keep serving)
                reply = {"error": f"{type(e).__name__}: {e}"}
            framing.send(self.sock, reply)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    cfg = json.loads(sys.argv[2])
    for name in cfg["preload"]:
        importlib.import_module(name)
    if cfg.get("warmup"):
        try:
            exec(cfg["warmup"], {"__name__": "__warmup__"})
        except Exception as e:  # noqa: BLE001  (a warm-up is an optimisation, never a failure)
            print(f"sandbox warm-up skipped: {type(e).__name__}: {e}", file=sys.stderr)
    gc.collect()
    gc.freeze()  # keep the collector from dirtying the shared pages of every fork
    want = cfg["isolation"]
    use_ns = want != "process" and isolation.namespaces_possible()
    uid_base = 1_000_000 + (os.getpid() % 100_000) * MAX_SLOTS
    if use_ns:
        try:
            isolation.enter_namespaces()
        except OSError:
            if want == "namespaces":
                raise
            use_ns = False
    elif want == "namespaces":
        raise SystemExit("sandbox: namespaces need root on Linux")
    if use_ns:
        pid = os.fork()
        if pid:  # outside the PID namespace: wait for its init, then go with it
            sock.close()
            _, st = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(st) & 0xFF)
        isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
        isolation.setup_mounts(cfg["limits"]["tmpfs_mb"], isolation.interpreter_paths())
    else:
        isolation.prctl(isolation.PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    Manager(sock, cfg, use_ns, uid_base).serve()


if __name__ == "__main__":
    main()
