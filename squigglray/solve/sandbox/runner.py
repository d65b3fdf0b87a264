"""What runs inside a sandbox box: its init (`box_init`), one code block, notebook style, then its
result report; and, for sessions, the holder loop that forks each next block from the state the last
one left.

A box (one per stateless run, one per session) starts as PID 1 of a new PID namespace (`box`): a
stateless run's code runs in that process itself (one fork per run); a session's box keeps it as a
reaper and forks the pristine holder. A block runs in a fork of the session's holder. If it
survives (ok or a Python exception, as in a notebook) it becomes the new holder; if it dies (timeout,
crash, os._exit) the old holder stays, so the session's earlier state is never lost to a failed
block. A block that leaves a thread running is not kept: nothing of a session may run between blocks
(the manager also stops the holder with SIGSTOP between them).
"""

from __future__ import annotations

import ast
import builtins
import faulthandler
import io
import linecache
import os
import resource
import signal
import socket
import sys
import time
import traceback

from squigglray.solve.sandbox import cgroups, framing, isolation

_real_exit = os._exit
CELL = "<cell>"
SAFE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _fresh_stdio() -> None:
    sys.stdin = open(os.devnull)  # noqa: SIM115  (fd 0 is /dev/null too)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    faulthandler.enable(file=sys.stderr)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the code may have closed or replaced them
            pass


def _format_error(exc: BaseException) -> str:
    """The traceback from the first frame of the user's cell on, as a notebook shows it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != CELL:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def _compile(code: str):
    """Compile a cell; a trailing expression is displayed like a notebook's last line."""
    linecache.cache[CELL] = (len(code), None, code.splitlines(True), CELL)
    tree = ast.parse(code, CELL, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), CELL, "eval")
    return compile(tree, CELL, "exec"), last


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def run_block(code: str, g: dict, res_fd: int, session: bool = False) -> bool:
    """Execute one block in globals g and report {status, exiting, exec_s, peak_memory_mb} on res_fd.
    Returns whether this process may carry on as the session's holder: not when a thread the block
    started is still running (the block is then reported as an error and its state discarded)."""
    t0, owner = time.perf_counter(), os.getpid()

    def report(status: str, exiting: bool = False) -> None:
        _flush()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        try:
            framing.write_fd(res_fd, {"status": status, "exiting": exiting, "peak_memory_mb": round(peak, 1),
                                      "exec_s": time.perf_counter() - t0})
        except OSError:
            pass

    def reporting_exit(code: int = 0) -> None:
        if os.getpid() != owner:  # a process the block forked: its exit is not the block's result
            _real_exit(code)
        print(f"os._exit({code}) called", file=sys.stderr)
        report("ok" if code == 0 else "error", exiting=True)
        _real_exit(code)

    os._exit = reporting_exit
    status = "ok"
    try:
        body, last = _compile(code)
        exec(body, g)
        if last is not None:
            value = eval(last, g)
            if value is not None:
                print(repr(value))
    except MemoryError as e:
        status = "memory"
        try:
            sys.stderr.write(_format_error(e))
        except MemoryError:
            pass
    except SystemExit as e:
        if e.code not in (None, 0):
            status = "error"
            print(f"SystemExit: {e.code}", file=sys.stderr)
    except BaseException as e:  # noqa: BLE001  (the user's error is the result)
        status = "error"
        try:
            sys.stderr.write(_format_error(e))
        except Exception:
            pass
    if session and _threads() > 1:
        print("sandbox: a thread was still running when the block ended; the session keeps its state from "
              "before this block", file=sys.stderr)
        report("error", exiting=True)
        return False
    report(status)
    return True


def _close_fds_except(keep: set[int]) -> None:
    last = -1
    for fd in sorted(keep) + [1 << 20]:
        if fd > last + 1:
            os.closerange(last + 1, min(fd, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
        last = fd


def box(job: dict, session: bool) -> None:
    """The first process of a new box: PID 1 of its PID namespace. It makes the box (namespace modes:
    its mount, IPC and network namespaces, /proc and tmpfs) and then runs the code itself (a
    stateless run: when it exits the kernel kills whatever else is in the box), or, for a session,
    forks the pristine holder and reaps until the manager kills the box. Never returns."""
    try:
        isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
        cgroups.join(job["cgroup_fds"])  # before anything of the run: all of it counts against the box
        if job["namespaces"]:
            isolation.enter_box()
            job["workdir"] = isolation.setup_box(job["tmpfs_mb"], job.get("uid"), job["carry"])
        if not session:
            start_child(job)
        isolation.prctl(isolation.PR_SET_CHILD_SUBREAPER, 1)  # process mode: this is no namespace's init
        if os.fork() == 0:
            start_child(job)
        _close_fds_except(set())
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                _real_exit(0)
    except BaseException as e:  # noqa: BLE001
        os.write(2, f"sandbox box set-up failed: {type(e).__name__}: {e}\n".encode())
        _real_exit(70)


def start_child(job: dict) -> None:
    """In the box (R): isolate this process, then run the block (or wait for it, pre-forked) and
    exit, or, for a session, become its pristine holder. Never returns."""
    try:
        os.setsid()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(job["out_w"], 1)
        os.dup2(job["err_w"], 2)
        keep = {0, 1, 2, job["res_w"]} | {job[k] for k in ("sock_fd", "code_r") if job.get(k) is not None}
        _close_fds_except(keep)
        # The session channel becomes a socket object before the audit hook could refuse that.
        sock = socket.socket(fileno=job["sock_fd"]) if job.get("sock_fd") is not None else None
        os.chdir(job["workdir"])
        os.environ.clear()
        os.environ.update(SAFE_ENV, HOME=job["workdir"], TMPDIR=job["workdir"])
        if job["namespaces"] and job.get("uid") is None:
            isolation.own_user_namespace()  # the process limit then counts this box alone
        isolation.set_rlimits(job["address_space"], job["cpu_s"], job["file_size"], job["open_files"],
                              job.get("processes"))
        if job["namespaces"]:
            isolation.drop_privileges(job.get("uid"))
        if job.get("audit"):
            isolation.install_audit_hook(job["workdir"], os.getpid())
        _fresh_stdio()
    except BaseException as e:  # noqa: BLE001
        os.write(2, f"sandbox set-up failed: {type(e).__name__}: {e}\n".encode())
        _real_exit(70)
    if sock is not None:  # a session: the pristine holder; its blocks come through the channel
        holder_loop(sock, {"__name__": "__main__", "__builtins__": builtins})
    code = job.get("code")
    if code is None:  # pre-forked ahead of its run: wait for the code, then tighten the CPU limit
        msg = framing.read_fd(job["code_r"])
        if msg is None:
            _real_exit(0)
        code, cpu = msg["code"], int(msg["timeout_s"]) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        os.close(job["code_r"])
    run_block(code, {"__name__": "__main__", "__builtins__": builtins}, job["res_w"])
    _real_exit(0)


def reap_children() -> None:
    """Collect every exited child (zombie) without blocking."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def holder_loop(sock: socket.socket, g: dict) -> None:
    """Wait for the next block; fork; the child runs it and, if it survives, carries on as holder.
    Never returns."""
    while True:
        try:
            msg, fds = framing.recv(sock, max_fds=3)
        except (OSError, ValueError):
            _real_exit(0)
        if msg is None or len(fds) != 3 or not isinstance(msg.get("code"), str):
            _real_exit(0)
        reap_children()
        pid = os.fork()
        if pid == 0:
            out_w, err_w, res_w = fds
            os.setsid()
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.close(out_w)
            os.close(err_w)
            _fresh_stdio()
            if not run_block(msg["code"], g, res_w, session=True):
                _real_exit(0)
            os.close(res_w)
            continue
        pidfd = os.pidfd_open(pid)
        try:
            framing.send(sock, {"pid": pid}, [pidfd])
        finally:
            for fd in [*fds, pidfd]:
                os.close(fd)
