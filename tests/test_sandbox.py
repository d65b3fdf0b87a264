"""Adversarial runs through the real sandbox pool (Ray actors, each owning a zygote).

After each hostile snippet: the result has the right status, the pool still answers, no process the
run started is left, and files outside the sandbox are untouched.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from squigglray.solve.sandbox import Limits, Sandbox

TIMEOUT = 1.0
UID_FLOOR = 1_000_000  # sandbox runs use uids from here up (namespace mode)


def _namespaces_here() -> bool:
    try:
        with Sandbox(Limits(), "auto") as sb:
            return "pid_namespace" in sb.isolation
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _namespaces_here(), reason="namespace isolation needs root on Linux; tests/test_sandbox_process_mode.py covers the fallback")


def sandbox_processes(roots: set[int]) -> list[tuple[int, int, str]]:
    """(pid, uid, cmdline) of live processes below the given zygotes that run as a sandbox uid."""
    info: dict[int, tuple[int, int, str, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, StopIteration):
            continue
        info[int(name)] = (int(fields[1]), uid, fields[0], cmd)

    def below(pid: int) -> bool:
        seen = 0
        while pid in info and seen < 64:
            pid, seen = info[pid][0], seen + 1
            if pid in roots:
                return True
        return False

    return [(pid, uid, cmd) for pid, (_, uid, state, cmd) in info.items()
            if uid >= UID_FLOOR and state != "Z" and below(pid)]


@pytest.fixture(scope="module")
def pool(ray_session):
    from actors.sandbox_pool import SandboxPool

    p = SandboxPool(size=2, limits=Limits(timeout_s=TIMEOUT, memory_mb=512), num_cpus=0.5)
    p.ready()
    yield p
    p.shutdown()


@pytest.fixture
def outside(tmp_path_factory):
    """A world-writable folder with a file, outside /tmp (which the sandbox replaces anyway)."""
    d = Path(__file__).parent / f".sandbox-target-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)
    keep = d / "keep.txt"
    keep.write_text("precious")
    os.chmod(keep, 0o666)
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def run(pool, code: str, session: str | None = None, timeout_s: float | None = None):
    return asyncio.run(pool.run(code, session=session, timeout_s=timeout_s))


def assert_healthy(pool, sessions_open: int = 0) -> None:
    """Every worker answers a plain run, and only idle pre-forked children (one per worker) and
    session holders run as sandbox users."""
    for i in range(len(pool.workers)):
        r = run(pool, "print(6 * 7)")
        assert (r.status, r.stdout) == ("ok", "42\n"), r
    infos = pool.ready()
    roots = {info["zygote_pid"] for info in infos}
    deadline = time.time() + 2
    while len(procs := sandbox_processes(roots)) > len(pool.workers) + sessions_open and time.time() < deadline:
        time.sleep(0.05)
    assert len(procs) <= len(pool.workers) + sessions_open, procs
    assert all(info["alive"] and info["restarts"] == 0 for info in infos), infos


def test_isolation_is_reported(pool):
    r = run(pool, "import os; print(os.getuid(), os.getpid() < 100)")
    assert r.status == "ok"
    uid, small_pid = r.stdout.split()
    assert int(uid) >= UID_FLOOR and small_pid == "True"
    assert {"pid_namespace", "network_namespace", "unprivileged_uid", "rlimits"} <= set(r.isolation)
    roots = {info["zygote_pid"] for info in pool.ready()}
    deadline = time.monotonic() + 15  # a zygote forks its next child after a run; on a loaded machine, later
    while len(sandbox_processes(roots)) != len(pool.workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(sandbox_processes(roots)) == len(pool.workers)  # the pre-forked children, seen by the check


def test_infinite_loop_is_killed_within_timeout(pool):
    t0 = time.perf_counter()
    r = run(pool, "while True:\n    pass")
    elapsed = time.perf_counter() - t0
    assert r.status == "timeout"
    assert r.duration_s <= TIMEOUT + 0.5
    assert elapsed <= TIMEOUT + 1.0
    assert_healthy(pool)


@pytest.mark.parametrize("code", [
    "x = bytearray(64 * 2**30)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))",
    "import numpy as np\na = np.ones((60000, 60000))",
])
def test_memory_bomb(pool, code):
    r = run(pool, code, timeout_s=5)
    assert r.status == "memory", r
    assert "MemoryError" in r.stderr
    assert_healthy(pool)


def test_fork_bomb(pool):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    r = run(pool, code)
    assert r.status in ("timeout", "error", "killed"), r
    assert_healthy(pool)


def test_orphaned_children_are_killed(pool):
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}"
    r = run(pool, f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'])\nprint('started')")
    assert r.status == "ok" and r.stdout == "started\n"
    roots = {info["zygote_pid"] for info in pool.ready()}
    assert not [p for p in sandbox_processes(roots) if marker in p[2]]
    assert_healthy(pool)


def test_daemon_escaping_with_setsid_and_double_fork(pool, outside):
    target = outside / "late.txt"
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(2)\n"
        f"        for p in ['{target}', 'late.txt']:\n"
        "            try:\n"
        "                open(p, 'w').write('escaped')\n"
        "            except OSError:\n"
        "                pass\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        "print('parent done')\n"
    )
    r = run(pool, code)
    assert r.status == "ok" and "parent done" in r.stdout
    roots = {info["zygote_pid"] for info in pool.ready()}
    assert len(sandbox_processes(roots)) <= len(pool.workers)  # the daemon is gone already
    time.sleep(2.5)
    assert not target.exists()
    assert_healthy(pool)


def test_endless_output(pool):
    r = run(pool, "while True:\n    print('x' * 1000)")
    assert r.status == "output_limit"
    assert 0 < len(r.stdout) <= Limits().output_bytes
    assert_healthy(pool)


@pytest.mark.parametrize("code", ["import os\nos.close(1)\nprint('hi')", "import sys\nsys.stdout.close()\nprint(1)",
                                  "import os\nos.close(2)\nos.close(1)\nraise ValueError('x')"])
def test_closed_stdout(pool, code):
    r = run(pool, code)
    assert r.status in ("ok", "error"), r
    assert_healthy(pool)


def test_blocking_on_input(pool):
    r = run(pool, "x = input('number? ')")
    assert r.status == "error" and "EOFError" in r.stderr
    assert r.duration_s < 0.5
    assert_healthy(pool)


def test_writes_and_deletes_outside_the_working_folder(pool, outside):
    keep = outside / "keep.txt"
    for code in [
        f"open('{outside}/pwned.txt', 'w').write('x')",
        f"import os\nos.remove('{keep}')",
        f"open('{keep}', 'w').write('overwritten')",
        f"import shutil\nshutil.rmtree('{outside}')",
        f"import os\nos.chmod('{keep}', 0)",
        "open('/etc/hosts', 'a').write('6.6.6.6 evil')",
    ]:
        r = run(pool, code)
        assert r.status == "error", (code, r)
    assert keep.read_text() == "precious" and not (outside / "pwned.txt").exists()
    assert "evil" not in Path("/etc/hosts").read_text()
    r = run(pool, "open('mine.txt', 'w').write('ok')\nprint(open('mine.txt').read())")
    assert r.stdout == "ok\n"  # the private working folder is writable
    assert_healthy(pool)


def test_network_connect_is_refused(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(_accept(server)))
    t.start()
    r = run(pool, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)")
    t.join()
    server.close()
    assert r.status == "error" and ("unreachable" in r.stderr or "refused" in r.stderr), r
    assert accepted == [None]
    r = run(pool, "import urllib.request\nurllib.request.urlopen('http://pypi.org', timeout=1)")
    assert r.status == "error"
    assert_healthy(pool)


def _accept(server):
    try:
        conn, _ = server.accept()
        conn.close()
        return "connected"
    except OSError:
        return None


def test_killing_the_parent(pool):
    r = run(pool, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('still here')")
    assert r.status in ("ok", "error", "killed")
    r = run(pool, "x = 1", session="parent-killer")
    r = run(pool, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", session="parent-killer")
    assert r.status in ("ok", "error", "killed")
    asyncio.run(pool.close_session("parent-killer"))
    assert_healthy(pool)


def test_signalling_a_process_outside(pool):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        r = run(pool, f"import os, signal\nos.kill({sleeper.pid}, signal.SIGKILL)")
        assert r.status == "error" and ("ProcessLookupError" in r.stderr or "PermissionError" in r.stderr)
        r = run(pool, f"import os, signal\nos.killpg({os.getpgid(sleeper.pid)}, signal.SIGKILL)")
        assert r.status == "error"
        time.sleep(0.2)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert_healthy(pool)


def test_ignoring_sigterm(pool):
    r = run(pool, "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass")
    assert r.status == "timeout" and r.duration_s <= TIMEOUT + 0.5
    assert_healthy(pool)


@pytest.mark.parametrize("code,status", [
    ("import os\nos._exit(3)", "error"),
    ("import sys\nsys.exit(2)", "error"),
    ("import sys\nprint('bye')\nsys.exit(0)", "ok"),
    ("raise KeyboardInterrupt", "error"),
])
def test_exits(pool, code, status):
    r = run(pool, code)
    assert r.status == status, r
    assert_healthy(pool)


def test_deep_recursion(pool):
    r = run(pool, "def f(n):\n    return f(n + 1)\nf(0)")
    assert r.status == "error" and "RecursionError" in r.stderr
    # Python 3.11 keeps Python frames off the C stack: this grows the heap until memory or time runs out.
    r = run(pool, "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)", timeout_s=3)
    assert r.status in ("killed", "error", "memory", "timeout"), r
    assert_healthy(pool)


def test_segfault_through_ctypes(pool):
    r = run(pool, "import ctypes\nctypes.string_at(0)")
    assert r.status == "killed"
    assert "Segmentation fault" in r.stderr or "SIGSEGV" in r.stderr
    assert_healthy(pool)


def test_session_state_survives_failures(pool):
    sid = "cand-7"
    assert run(pool, "import sympy\nx = sympy.Integer(40)", session=sid).status == "ok"
    assert run(pool, "y = x + 1\nraise ValueError('after y')", session=sid).status == "error"
    assert run(pool, "while True:\n    x += 1", session=sid).status == "timeout"
    assert run(pool, "import ctypes\nctypes.string_at(0)", session=sid).status == "killed"
    assert run(pool, "import os\nos._exit(1)", session=sid).status == "error"
    r = run(pool, "print(x, y)", session=sid)
    assert (r.status, r.stdout, r.session_reset) == ("ok", "40 41\n", False)
    r = run(pool, "x + y", session=sid)  # a trailing expression is shown, as in a notebook
    assert r.stdout == "81\n"
    asyncio.run(pool.close_session(sid))
    r = run(pool, "print(x)", session=sid)
    assert r.status == "error" and "NameError" in r.stderr
    asyncio.run(pool.close_session(sid))
    assert_healthy(pool)


def test_sessions_do_not_see_each_other(pool):
    run(pool, "secret = 123", session="a-1")
    r = run(pool, "print(secret)", session="b-2")
    assert r.status == "error" and "NameError" in r.stderr
    for s in ("a-1", "b-2"):
        asyncio.run(pool.close_session(s))


def test_crashed_actor_is_restarted_and_its_queued_work_rerun(pool):
    import ray

    async def scenario():
        runs = [asyncio.ensure_future(pool.run(f"import time\ntime.sleep(0.3)\nprint({i})")) for i in range(6)]
        await asyncio.sleep(0.2)
        pool.workers[0].crash.remote()
        return await asyncio.gather(*runs)

    results = asyncio.run(scenario())
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
    assert all(r.status == "ok" for r in results)
    infos = ray.get([w.info.remote() for w in pool.workers])
    assert all(i["alive"] for i in infos)


def test_map_with_backpressure(pool):
    results = pool.map([f"print({i} ** 2)" for i in range(20)], batch_size=3)
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(20)]


def test_metrics_reach_the_dashboard_exporter(pool, ray_session):
    import urllib.request

    run(pool, "while True:\n    pass", timeout_s=0.3)
    port = ray_session.nodes()[0]["MetricsExportPort"]
    wanted = ("ray_squigglray_sandbox_runs", 'status="timeout"')
    deadline, text = time.time() + 30, ""
    while time.time() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if any(all(w in line for w in wanted) for line in text.splitlines()):
            break
        time.sleep(1)
    lines = text.splitlines()
    assert any(all(w in line for w in wanted) for line in lines)
    assert any("ray_squigglray_sandbox_run_seconds_bucket" in line for line in lines)
    assert any("ray_squigglray_sandbox_queue_depth" in line for line in lines)
