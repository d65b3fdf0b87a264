"""The fallback without namespaces (isolation="process", or no namespaces at all): a subreaper, own
session, rlimits and audit hooks. Weak: only with allow_weak_isolation, and the result says so."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from squigglray.solve.sandbox import Limits, Sandbox, SandboxError


@pytest.fixture(scope="module")
def sb():
    with Sandbox(Limits(timeout_s=1.0), isolation="process", allow_weak_isolation=True) as s:
        yield s


def test_reports_process_isolation(sb):
    r = sb.run("print('hi')")
    assert r.status == "ok" and "audit_hook_network" in r.isolation and "pid_namespace" not in r.isolation
    assert sb.mode == "process" and "weak" in r.isolation


def test_weak_isolation_is_refused_unless_allowed():
    with pytest.raises(SandboxError, match="allow_weak_isolation"):
        Sandbox(Limits(timeout_s=1.0), isolation="process")


def test_timeout_and_orphans(sb):
    t0 = time.perf_counter()
    assert sb.run("while True:\n    pass").status == "timeout"
    assert time.perf_counter() - t0 < 2.0
    marker = str(uuid.uuid4().int % 10**6 + 2 * 10**6)
    r = sb.run(f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'])\nprint('ok')")
    assert r.status == "error" or r.stdout == "ok\n"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"sleep {marker}" not in ps


def test_audit_hooks_refuse_network_and_outside_writes(sb, tmp_path):
    r = sb.run("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=0.5)")
    assert r.status == "error" and "network access is refused" in r.stderr
    target = tmp_path / "keep.txt"
    target.write_text("precious")
    r = sb.run(f"open('{target}', 'w').write('x')")
    assert r.status == "error" and "outside the working folder" in r.stderr
    r = sb.run(f"import os\nos.remove('{target}')")
    assert r.status == "error"
    assert target.read_text() == "precious"
    assert sb.run("open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())").stdout == "ok\n"


def test_sessions_work_in_process_mode(sb):
    sb.run("x = 5", session="s")
    assert sb.run("while True:\n    x += 1", session="s").status == "timeout"
    assert sb.run("print(x)", session="s").stdout == "5\n"
    sb.close_session("s")
