"""The sandbox's zygote and manager process: `python -m squigglray.solve.sandbox.zygote FD CONFIG`.

It enters its own namespaces (as root, or in an unprivileged user namespace; `_isolate`), imports
the heavy libraries once, becomes PID 1 of a new PID namespace with no network, everything read-only
but private tmpfs, and then forks every run from that warm state into a box of its own (fresh mount,
IPC, network and PID namespaces with a private tmpfs: `runner`), so a run costs forks instead of an
interpreter start and `import sympy`, and sees nothing of other runs. A run's box dies with it; a
session's box lives until the session closes, its holder stopped between blocks. Whatever a run does
is that run's failure (`RunFailure`): frames from runs are bounded and checked, holder replies must
name a process of their own box. Without namespaces, weak process isolation only where the config
allows it; otherwise the zygote refuses to start and says why.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
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
from squigglray.solve.sandbox.cgroups import BoxCgroup, BoxCgroups
from squigglray.solve.sandbox.result import STATUSES

_NS = ["pid_namespace", "network_namespace", "mount_namespace", "ipc_namespace", "box_per_run", "private_tmp"]
ISOLATION = {  # per mode (`isolation.enter_namespaces`), what a RunResult lists
    "root": _NS + ["unprivileged_uid", "no_new_privs", "setsid", "rlimits", "scrubbed_env"],
    "userns": ["user_namespace"] + _NS + ["unprivileged_uid", "no_new_privs", "setsid", "rlimits", "scrubbed_env"],
    "userns_1uid": ["user_namespace"] + _NS + ["hidden_home", "no_capabilities", "no_new_privs", "setsid", "rlimits",
                                               "scrubbed_env"],
    "process": ["weak", "subreaper", "setsid", "rlimits", "audit_hook_network", "audit_hook_files", "scrubbed_env"],
}
MAX_SLOTS = 128
RESULT_MAX_BYTES = 4096  # a run's result frame: a status and three numbers
HOLDER_REPLY_S = 5.0  # a holder forks a block and answers in milliseconds
WARM_BOXES = 2  # boxes set up ahead: back-to-back runs find one ready (a box takes a few ms to build)


class RunFailure(Exception):
    """Something a run did (or left behind) that ends this run, or its session, never the manager."""


@dataclass
class Session:
    slot: int
    box: int | None = None  # pid of the box's init (None: no box yet, or it was closed)
    holder: int | None = None  # pid of the process holding the state (None: the box's pristine holder)
    sock: socket.socket | None = None
    workdir: str | None = None  # process mode only (namespace modes: the box's private /tmp/work)
    lost: bool = False
    cgroup: BoxCgroup | None = None  # the box's cgroup, where there are cgroups


@dataclass
class Child:
    """A run's process and the manager's ends of its pipes."""

    pid: int
    pidfd: int
    out_r: int
    err_r: int
    res_r: int
    code_w: int | None
    direct: bool  # our own child (a stateless run: we can read its exit status), not a holder's
    workdir: str | None
    cgroup: BoxCgroup | None = None  # a stateless run's box's cgroup


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of `pid`, or None when it is gone."""
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


def _descendants(root: int) -> dict[int, str]:
    """pid -> state of every process below `root` (in every box below it)."""
    out: dict[int, str] = {}
    todo = _children(root)
    while todo:
        pid = todo.pop()
        st = _proc_stat(pid)
        if st is not None and pid not in out:
            out[pid] = st[1]
            todo += _children(pid)
    return out


def _pidfd_pid(fd: int) -> int:
    """The pid (in our PID namespace) of the process a pidfd refers to; -1 once it has been reaped."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    raise RunFailure("a file descriptor that is not a pidfd")


def _below(pid: int, root: int) -> bool:
    for _ in range(64):
        st = _proc_stat(pid)
        if st is None:
            return False
        if st[0] == root:
            return True
        pid = st[0]
    return False


def _close(*fds) -> None:
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _signal(pid: int | None, sig: int, group: bool = False) -> None:
    if pid:
        try:
            (os.killpg if group else os.kill)(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Manager:
    def __init__(self, sock: socket.socket, cfg: dict, mode: str, uid_base: int,
                 cgroups: BoxCgroups | None = None) -> None:
        self.sock, self.cfg, self.mode, self.uid_base = sock, cfg, mode, uid_base
        self.ns = mode != "process"
        self.limits = cfg["limits"]
        self.address_space = _vm_bytes() + self.limits["memory_mb"] * 2**20
        self.cgroups = cgroups  # a memory and process limit per box, where the cgroup tree is writable
        self.box_memory = (self.limits["memory_mb"] + self.limits["tmpfs_mb"]) * 2**20
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.evicted: OrderedDict[str, None] = OrderedDict()
        self.free_slots = list(range(1, MAX_SLOTS))
        self.isolation = ISOLATION[mode] + (cgroups.labels if cgroups else [])
        # RLIMIT_NPROC counts a uid's processes in one user namespace: runs have uids of their own
        # ("root", "userns") or, in "userns_1uid", a user namespace of their own per box (`isolation.own_user_namespace`)
        self.nproc = self.limits["processes"] if self.ns else None
        self.warm: list[Child] = []
        self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY) if self.ns else -1
        self._timeout = float(self.limits["timeout_s"])

    # -- processes ---------------------------------------------------------------------------
    def _keep(self) -> set[int]:
        """Processes that outlive a run: the pre-forked runs, and per session its box's init and the
        holder (or, before any block survived, the pristine holder)."""
        keep = {w.pid for w in self.warm}
        for s in self.sessions.values():
            if s.box:
                keep |= {s.box} | ({s.holder} if s.holder else set(_children(s.box)))
        return keep

    def _kill_strays(self, sess: Session | None = None) -> None:
        """Kill what a run left behind. Namespace modes: a stateless run's box died with it (the kernel
        kills a PID namespace with its init, so only the session's box is searched: all but its init
        and holder). Process mode: every process below this one but those that `_keep`."""
        if self.ns and (sess is None or not sess.box):
            runner.reap_children()
            return
        root, keep = sess.box if self.ns else os.getpid(), self._keep()
        for attempt in range(2000):
            runner.reap_children()
            live = [p for p, state in _descendants(root).items() if p not in keep and state not in "ZX"]
            if not live:
                return
            for pid in live:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.0002 if attempt < 20 else 0.005)
        raise RunFailure("the processes a run left behind could not be cleared")

    # -- boxes -------------------------------------------------------------------------------
    def _uid(self, slot: int) -> int | None:
        """The uid a box's runs take (as seen in the zygote's user namespace); None: keep uid 0 of a
        one-uid user namespace and drop every capability."""
        return {"root": self.uid_base + slot, "userns": 1 + slot}.get(self.mode)

    def _workdir(self, slot: int) -> str | None:
        """Process mode only: a fresh working folder (in namespace modes each box makes its own)."""
        return None if self.ns else tempfile.mkdtemp(prefix=f"squigglray-sbx-{slot}-")

    def _fork_box(self, slot: int, sess: Session | None, code: str | None) -> Child:
        """Fork a box: PID 1 of a new PID namespace (`runner.box`). Stateless: it runs `code`, or
        without code is pre-forked, set up and waiting for it. Session: it forks the pristine holder,
        which waits on a new channel."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        code_r, code_w = os.pipe() if sess is None and code is None else (None, None)
        child_end = None
        if sess is not None:
            if sess.sock:
                sess.sock.close()
            sess.sock, child_end = socket.socketpair()
        workdir = sess.workdir if sess is not None and sess.workdir else self._workdir(slot)
        try:
            cgroup = self.cgroups.create(self.box_memory, self.limits["processes"]) if self.cgroups else None
        except OSError as e:
            _close(out_r, out_w, err_r, err_w, res_r, res_w, code_r, code_w)
            raise RunFailure(f"the box's cgroup could not be made ({e})") from None
        job = {
            "code": code, "code_r": code_r, "workdir": workdir, "out_w": out_w, "err_w": err_w, "res_w": res_w,
            "sock_fd": child_end.fileno() if child_end else None,
            "address_space": self.address_space, "cpu_s": int(self._timeout) + 2 if code is not None else 3600,
            "file_size": self.limits["file_size_mb"] * 2**20, "open_files": self.limits["open_files"],
            "processes": self.nproc, "uid": self._uid(slot),
            "namespaces": self.ns, "audit": not self.ns, "tmpfs_mb": self.limits["tmpfs_mb"],
            "carry": self.cfg.get("carry", {}), "cgroup_fds": cgroup.join_fds if cgroup else [],
        }
        sys.stdout.flush()
        sys.stderr.flush()
        if self.ns:
            isolation.new_pid_namespace_for_next_child()
        pid = -1
        try:
            pid = os.fork()
        finally:
            if self.ns and pid != 0:  # the parent (or a failed fork): children go to our namespace again
                isolation.restore_pid_namespace(self.own_pid_ns)
        if pid == 0:
            try:
                runner.box(job, session=sess is not None)
            finally:
                os._exit(71)
        _close(out_w, err_w, res_w, code_r, *(cgroup.join_fds if cgroup else []))
        if cgroup:
            cgroup.join_fds = []
        if child_end:
            child_end.close()
        if sess is not None:
            sess.box, sess.holder, sess.workdir, sess.cgroup = pid, None, workdir, cgroup
            return Child(pid, os.pidfd_open(pid), out_r, err_r, res_r, code_w, True, workdir)
        return Child(pid, os.pidfd_open(pid), out_r, err_r, res_r, code_w, True, workdir, cgroup)

    def _close_box(self, box: int | None, workdir: str | None = None, cgroup: BoxCgroup | None = None) -> None:
        """Kill a box: its init's death takes every process in the box's PID namespace with it
        (process mode: `_kill_strays` does that part); its cgroup goes once they have."""
        _signal(box, signal.SIGKILL)
        if workdir and not self.ns:
            shutil.rmtree(workdir, ignore_errors=True)
        if self.cgroups:
            self.cgroups.release(cgroup)

    # -- sessions ----------------------------------------------------------------------------
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
        sess = Session(slot=slot, lost=lost)
        self.sessions[sid] = sess
        return sess

    def _close_session(self, sid: str) -> None:
        sess = self.sessions.pop(sid, None)
        if sess is None:
            return
        if sess.sock:
            sess.sock.close()
        self._close_box(sess.box, sess.workdir, sess.cgroup)
        self._kill_strays()
        self.free_slots.append(sess.slot)

    def _reset_box(self, sess: Session) -> None:
        """The session's state is gone (its box or holder died, or it broke the protocol): a new box."""
        if sess.sock:
            sess.sock.close()
            sess.sock = None
        self._close_box(sess.box, sess.workdir, sess.cgroup)
        sess.box, sess.holder, sess.workdir, sess.cgroup = None, None, None, None
        self._kill_strays()

    # -- runs --------------------------------------------------------------------------------
    def _spawn_warm(self) -> bool:
        self._timeout = self.limits["timeout_s"]
        try:
            self.warm.append(self._fork_box(0, None, None))
        except RunFailure:  # no box now (e.g. its cgroup); a run will make its own and fail alone
            return False
        return True

    def _start_stateless(self, code: str) -> Child:
        while self.warm:
            warm = self.warm.pop(0)
            if not select.select([warm.pidfd], [], [], 0)[0]:  # still set up and waiting
                try:
                    framing.write_fd(warm.code_w, {"code": code, "timeout_s": self._timeout})
                    os.close(warm.code_w)
                    warm.code_w = None
                    return warm
                except OSError:
                    pass
            self._discard(warm)
        return self._fork_box(0, None, code)

    def _start_in_holder(self, sess: Session, code: str) -> Child | None:
        """Ask the session's holder to fork the block; None if the holder is gone. Nothing the session
        sent on its channel since the last block is read as a reply, and the reply is checked: its
        pidfd must be a process of this session's box."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        fds: list[int] = []
        child = None
        _signal(sess.holder, signal.SIGCONT)
        try:
            self._drain(sess.sock)
            framing.send(sess.sock, {"code": code}, [out_w, err_w, res_w])
            sess.sock.settimeout(HOLDER_REPLY_S)
            _reply, fds = framing.recv(sess.sock, max_fds=1, max_bytes=RESULT_MAX_BYTES)
            sess.sock.settimeout(None)
            if len(fds) != 1:
                raise RunFailure("the session's holder answered without a process")
            pid = _pidfd_pid(fds[0])
            if pid <= 0 or not sess.box or not _below(pid, sess.box):
                raise RunFailure("the session's holder answered with a process outside its box")
            child = Child(pid, fds.pop(), out_r, err_r, res_r, None, False, sess.workdir)
        except (OSError, ValueError, RunFailure):
            _close(out_r, err_r, res_r, *fds)
        finally:
            _signal(sess.holder, signal.SIGSTOP)  # nothing of the session runs between its blocks
        _close(out_w, err_w, res_w)
        return child

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        """Throw away whatever a session wrote on its channel (and close any fds it sent)."""
        sock.setblocking(False)
        try:
            while True:
                data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 16)
                _close(*fds)
                if not data:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            sock.setblocking(True)

    def _discard(self, child: Child) -> None:
        _close(child.out_r, child.err_r, child.res_r, child.pidfd, child.code_w)
        _signal(child.pid, signal.SIGKILL, group=True)
        _signal(child.pid, signal.SIGKILL)  # a box still setting up has no process group of its own yet
        if self.cgroups:
            self.cgroups.release(child.cgroup)
            child.cgroup = None

    def _watch(self, child: Child, timeout: float, session: bool) -> dict:
        cap, tail = self.limits["output_bytes"], self.limits["stderr_tail_bytes"]
        out_r, err_r, res_r, pidfd = child.out_r, child.err_r, child.res_r, child.pidfd
        poller = select.poll()
        for fd in (out_r, err_r, res_r):
            os.set_blocking(fd, False)
            poller.register(fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        poller.register(self.sock, select.POLLIN)
        stdout, stderr, reader = bytearray(), bytearray(), framing.FrameReader(RESULT_MAX_BYTES)
        result, exited, status, broken = None, False, None, ""
        deadline = time.monotonic() + timeout

        def drain(fd: int) -> bytes | None:
            try:
                return os.read(fd, 1 << 16)
            except BlockingIOError:
                return None

        def feed(data: bytes) -> None:
            nonlocal result, broken
            try:
                result = reader.feed(data) if result is None and not broken else result
            except framing.FrameError as e:
                broken = f"\nsandbox: the run broke its result channel ({e})"

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
                        feed(data)
            if status or broken:
                break
            if exited and result is None:  # a result may sit in the pipe behind the exit event
                while result is None and not broken and (data := drain(res_r)):
                    feed(data)
            # A stateless run is over when it reported (its exit, as a box's init, waits for the box's
            # teardown: not ours to wait for); a session block when it reported and stays as holder.
            if result is not None and (exited or not session or not result.get("exiting")):
                break
            if exited and result is None:
                break
        for fd, buf in ((out_r, stdout), (err_r, stderr)):
            while len(buf) <= cap and (data := drain(fd)):
                buf += data
        if status is None and len(stdout) > cap:
            status = "output_limit"
        if broken:
            status, result = "error", None
        return {"result": _checked(result), "exited": exited, "status": status, "stdout": bytes(stdout[:cap]),
                "stderr": bytes(stderr[-tail:]) + broken.encode()}

    def _run(self, msg: dict) -> dict:
        t0 = time.perf_counter()
        code = msg["code"]
        self._timeout = float(msg.get("timeout_s") or self.limits["timeout_s"])
        sid = msg.get("session")
        sess, reset, child, note = None, False, None, ""
        try:
            if sid is None:
                child = self._start_stateless(code)
            else:
                sess = self.sessions.get(sid) or self._open_session(sid)
                self.sessions.move_to_end(sid)
                reset, sess.lost = sess.lost, False
                for _ in range(2):
                    if sess.box is None:
                        box = self._fork_box(sess.slot, sess, None)  # its blocks get their own pipes
                        _close(box.out_r, box.err_r, box.res_r, box.pidfd)
                    child = self._start_in_holder(sess, code)
                    if child is not None:
                        break
                    reset = reset or sess.holder is not None  # state held by a block is gone
                    self._reset_box(sess)
                if child is None:
                    raise RunFailure("the session's box did not answer")
            w = self._watch(child, self._timeout, sess is not None)
            res, status = w["result"], w["status"]
            if status is None and res is not None:
                status = res["status"]
            elif status is None:
                status, note = self._death_status(child)
            if self.cgroups and self.cgroups.new_oom_kills(sess.cgroup if sess is not None else child.cgroup):
                # some of the run's processes were killed at the box's limit, whatever the run reported
                status, note = "memory", (f"{note}\nsandbox: the box's processes together reached its memory "
                                          f"limit ({self.box_memory >> 20} MiB: memory_mb + tmpfs_mb)")
            survived = res is not None and not res.get("exiting") and not w["exited"] and w["status"] is None
            if sess is not None and survived:
                sess.holder = child.pid  # the block's process now holds the session's state
                child.pid = 0
                _signal(sess.holder, signal.SIGSTOP)
            self._discard(child)
            self._kill_strays(sess)
            if sess is None and child.workdir:
                shutil.rmtree(child.workdir, ignore_errors=True)
        except RunFailure as e:  # the run's (or its session's) failure, never the manager's
            if child is not None:
                self._discard(child)
            if sess is not None:
                self._reset_box(sess)
                reset = True
            w, status, note = {"stdout": b"", "stderr": b""}, "killed", f"\nsandbox: {e}"
            self._kill_strays()
        return {
            "status": status, "stdout": w["stdout"].decode(errors="replace"),
            "stderr": w["stderr"].decode(errors="replace") + note, "duration_s": time.perf_counter() - t0,
            "exec_s": (w.get("result") or {}).get("exec_s", 0.0),
            "peak_memory_mb": (w.get("result") or {}).get("peak_memory_mb", 0.0), "isolation": self.isolation,
            "session": sid, "session_reset": reset,
        }

    @staticmethod
    def _death_status(child: Child) -> tuple[str, str]:
        """Why a run's process ended without reporting: a signal (crash) or an exit code (a session
        block is a holder's child, not ours: its status is not ours to read)."""
        if not child.direct:
            return "killed", "\nthe run's process ended without a result"
        try:
            _, st = os.waitpid(child.pid, 0)
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
        for w in self.warm:
            self._discard(w)
        self.warm = []
        for sid in list(self.sessions):
            self._close_session(sid)
        try:
            self._kill_strays()
            if self.cgroups and not self.ns:  # namespace modes: the zygote's outer process does it
                self.cgroups.remove_all()
        finally:
            os._exit(0)

    def serve(self) -> None:
        framing.send(self.sock, {"ready": True, "isolation": self.isolation, "mode": self.mode,
                                 "preload": self.cfg["preload"]})
        handlers = {
            "run": self._run,
            "close_session": lambda m: (self._close_session(m["session"]), {"ok": True})[1],
            "ping": lambda m: {"ok": True, "sessions": len(self.sessions)},
        }
        while True:
            if self.cgroups:
                self.cgroups.sweep()
            while len(self.warm) < WARM_BOXES and self._spawn_warm():
                pass  # between requests, off the next run's critical path
            msg, _ = framing.recv(self.sock)
            if msg is None or msg.get("op") == "shutdown":
                self._shutdown()
            try:
                reply = handlers[msg["op"]](msg)
            except Exception as e:  # noqa: BLE001  (report, keep serving)
                reply = {"error": f"{type(e).__name__}: {e}"}
            framing.send(self.sock, reply)


def _checked(res) -> dict | None:
    """A run's result frame, as far as it can be trusted: a known status, finite numbers."""
    if not isinstance(res, dict):
        return None
    out = {"status": res.get("status") if res.get("status") in STATUSES else "error",
           "exiting": bool(res.get("exiting"))}
    for k in ("exec_s", "peak_memory_mb"):
        v = res.get(k)
        out[k] = float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0
    return out


def _isolate(cfg: dict) -> str:
    """Enter the strongest isolation there is (`isolation.enter_namespaces`), or return "process"
    where the config allows weak isolation; otherwise raise _Refused with the reason (the client
    raises it as SandboxError)."""
    why = "process isolation was asked for (isolation='process')"
    if cfg["isolation"] != "process":
        try:
            return isolation.enter_namespaces(cfg["uid_base"], MAX_SLOTS)
        except OSError as e:
            why = e.strerror or str(e)
    if not cfg["allow_weak_isolation"]:
        raise _Refused(f"sandbox refused to start: full isolation is not available ({why}); process isolation "
                       f"is weak (no uid drop, no process limit, audit hooks that ctypes and subprocess walk "
                       f"around). Allow it explicitly with allow_weak_isolation=True (the laptop configs do; "
                       f"cluster and GPU configs must not)")
    return "process"


class _Refused(Exception):
    pass


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    cfg = json.loads(sys.argv[2])
    home = os.path.expanduser("~")  # before any namespace: in user-namespace mode it is hidden from runs
    cfg["uid_base"] = 1_000_000 + (os.getpid() % 100_000) * MAX_SLOTS
    if cfg["isolation"] != "process" and cfg.get("user_namespace") and os.geteuid() == 0:
        isolation.drop_capabilities(only=isolation.CAP_SYS_ADMIN)  # as a container without it: before anything
    cgroups, no_cgroups = BoxCgroups.setup()  # while the cgroup tree is still writable (host mounts)
    try:
        mode = _isolate(cfg)
    except _Refused as e:
        if cgroups:
            cgroups.remove_all()
        framing.send(sock, {"ready": False, "error": str(e)})
        os._exit(2)
    for name in cfg["preload"]:
        importlib.import_module(name)
    if cfg.get("warmup"):
        try:
            exec(cfg["warmup"], {"__name__": "__warmup__"})
        except Exception as e:  # noqa: BLE001  (a warm-up is an optimisation, never a failure)
            print(f"sandbox warm-up skipped: {type(e).__name__}: {e}", file=sys.stderr)
    gc.collect()
    if mode != "process":
        pid = os.fork()
        if pid:  # outside the PID namespace: wait for its init, then go with it (and its boxes' cgroups)
            sock.close()
            _, st = os.waitpid(pid, 0)
            if cgroups:
                cgroups.remove_all()
            os._exit(os.waitstatus_to_exitcode(st) & 0xFF)
        isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
        cfg["carry"] = isolation.setup_mounts(cfg["limits"]["tmpfs_mb"], isolation.interpreter_paths(),
                                              hide=[home] if mode == "userns_1uid" else [])
    else:
        print("sandbox: WEAK process isolation (allowed by allow_weak_isolation): runs share this user's "
              "permissions, network and files outside the working folder; see the sandbox threat model",
              file=sys.stderr)
        isolation.prctl(isolation.PR_SET_CHILD_SUBREAPER, 1)
    gc.freeze()  # keep the collector from dirtying the shared pages of every fork
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if not cgroups:
        print(f"sandbox: no cgroup per box ({no_cgroups}); memory is bounded per process (memory_mb), not per "
              f"box", file=sys.stderr)
    Manager(sock, cfg, mode, cfg["uid_base"], cgroups).serve()


if __name__ == "__main__":
    main()
