"""ToolBox (squigglray.verify.tools): every op on good and bad input, deadlines, budgets, the memo
cache (canonical keys, disk persistence, timeout caching), batching and concurrency.

Calls that must succeed get generous deadlines (the machine may be loaded); only the tests that
need a timeout use short ones. The slow input is expand((a+b+c+d+e+1)**40): over a million terms,
many seconds of SymPy work on any machine.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from fractions import Fraction

import pytest

from squigglray.verify.cache import MemoCache
from squigglray.verify.canonical import cache_key, canonical_expr
from squigglray.verify.result import ToolResult
from squigglray.verify.tools import Budget, ToolBox

SLOW = "(a+b+c+d+e+1)**40"  # expand() of this takes far more than 5 s
OK_S = 20.0


@pytest.fixture(scope="module")
def tb():
    with ToolBox(timeout_s=OK_S) as box:
        yield box.start()


@pytest.fixture(scope="module")
def slow_tb():
    """A separate box for the tests that kill workers (so the shared one stays warm)."""
    with ToolBox(timeout_s=OK_S) as box:
        yield box.start()  # elapsed_s includes a worker's start-up: have it done


def _ok(tb, op, **args):
    r = tb.call(op, args)
    assert r.ok, r
    return r.result


# ------------------------------------------------------------------ ops on good input
@pytest.mark.parametrize("op,args,expected", [
    ("factor", {"expr": "x**2-1"}, "(x - 1)*(x + 1)"),
    ("expand", {"expr": "(x+1)**2"}, "x**2 + 2*x + 1"),
    ("simplify", {"expr": "sin(x)**2 + cos(x)**2"}, "1"),
    ("simplify", {"expr": r"\frac{1}{2}+\frac{1}{3}"}, "5/6"),  # LaTeX, detected automatically
    ("simplify", {"expr": r"\left(\dfrac{x^{2}-1}{x-1}\right)", "syntax": "latex"}, "x + 1"),
    ("evaluate", {"expr": r"\frac{1}{2}+\frac{1}{3}"}, "0.833333333333333"),
    ("evaluate", {"expr": "sqrt(2)", "digits": 25}, "1.414213562373095048801689"),
    ("diff", {"expr": "x**3 + 2x"}, "3*x**2 + 2"),
    ("diff", {"expr": "sin(x)*y", "var": "x", "order": 2}, "-y*sin(x)"),
    ("integrate", {"expr": "x**2"}, "x**3/3"),
    ("integrate", {"expr": "x**2", "var": "x", "lower": 0, "upper": 3}, "9"),
    ("integrate", {"expr": "exp(-x^2)", "lower": "-oo", "upper": "oo"}, "sqrt(pi)"),
    ("solve", {"equation": "x**2 = 4"}, ["-2", "2"]),
    ("solve", {"equation": "x^2 - 5x + 6"}, ["2", "3"]),
    ("solve", {"equation": "a*x + b = 0", "var": "x"}, ["-b/a"]),
    ("equivalent", {"a": "(x+1)**2", "b": "x**2 + 2*x + 1"}, True),
    ("equivalent", {"a": "(x+1)**2", "b": "x**2 + 1"}, False),
    ("equivalent", {"a": "sqrt(x**2)", "b": "x"}, False),  # not for negative x
    ("equivalent", {"a": r"\frac{x^2-1}{x-1}", "b": "x+1"}, True),
    ("equivalent", {"a": "2*x + 2 = 0", "b": "x = -1"}, True),  # the same equation
    ("equivalent", {"a": "x = 2", "b": "2"}, True),
    ("equivalent", {"a": "x = 2", "b": "3"}, False),
    ("answer_equivalent", {"a": r"\frac12", "b": "0.5"}, True),
    ("answer_equivalent", {"a": r"\frac12", "b": "0.6"}, False),
])
def test_op_answers(tb, op, args, expected):
    assert _ok(tb, op, **args) == expected


def _value(claim_lhs_minus_rhs, point: dict[str, str]) -> Fraction:
    return claim_lhs_minus_rhs(**{k: Fraction(v) for k, v in point.items()})


def test_z3_prove_and_refute(tb):
    assert _ok(tb, "z3_prove", claim="x**2 + y**2 >= 2*x*y") == {"status": "proved", "counterexample": None}
    r = _ok(tb, "z3_prove", claim="x + y >= 2*x*y")
    assert r["status"] == "refuted" and set(r["counterexample"]) == {"x", "y"}
    assert _value(lambda x, y: x + y - 2 * x * y, r["counterexample"]) < 0  # it really violates the claim
    c = _ok(tb, "z3_counterexample", claim="x + y >= 2*x*y")
    assert c["found"] is True and c["status"] == "refuted"
    assert _value(lambda x, y: x + y - 2 * x * y, c["counterexample"]) < 0
    assert _ok(tb, "z3_counterexample", claim="a/b > 0", assumptions=["a > 0", "b > 0"]) == {
        "found": False, "counterexample": None, "status": "proved"}
    # with the assumption x, y in [0, 1/2] the claim holds: x + y >= 2xy
    assert _ok(tb, "z3_prove", claim="x + y >= 2*x*y",
               assumptions=["0 <= x", "x <= 1/2", "0 <= y", "y <= 1/2"])["status"] == "proved"


def test_z3_satisfiable(tb):
    r = _ok(tb, "z3_satisfiable", constraints=["x + y = 10", "x - y == 2"])
    assert r == {"status": "sat", "model": {"x": "6", "y": "4"}}
    assert _ok(tb, "z3_satisfiable", constraints=["x > 1", "x < 1"]) == {"status": "unsat", "model": None}
    r = _ok(tb, "z3_satisfiable", constraints=["x*y == 6", "x + y == 5", "x > y"], vars={"x": "int", "y": "int"})
    assert r == {"status": "sat", "model": {"x": "3", "y": "2"}}
    assert _ok(tb, "z3_satisfiable", constraints=["2*n == 3"], vars={"n": "int"})["status"] == "unsat"
    r = _ok(tb, "z3_satisfiable", constraints=["x**2 == 2", "x > 0"])  # an algebraic model, as a decimal
    assert r["status"] == "sat" and r["model"]["x"].startswith("1.41421356")


def test_ops_lists_every_op(tb):
    ops = tb.ops()
    assert set(ops) == {"simplify", "expand", "factor", "evaluate", "diff", "integrate", "solve", "equivalent",
                        "answer_equivalent", "z3_satisfiable", "z3_prove", "z3_counterexample"}
    assert "expr" in ops["factor"] and "constraints" in ops["z3_satisfiable"] and "claim" in ops["z3_prove"]


# ------------------------------------------------------------------ bad input
def test_parent_side_errors_need_no_worker(tb):
    before = tb.stats()["worker_calls"]
    r = tb.call("frobnicate", {"expr": "x"})
    assert (r.ok, r.error_type) == (False, "unknown_op") and "factor" in r.error and "z3_prove" in r.error
    cases = [
        ("factor", {"expr": 3}, "bad_input", "string"),
        ("factor", {}, "bad_input", "missing"),
        ("factor", {"expr": "x", "bogus": 1}, "bad_input", "bogus"),
        ("diff", {"expr": "x", "order": "2"}, "bad_input", "order"),
        ("answer_equivalent", {"a": ["1"], "b": "1"}, "bad_input", "string"),
        ("z3_satisfiable", {"constraints": "x > 0"}, "bad_input", "list"),
        ("z3_prove", {"claim": "x > 0", "vars": {"x": "complex"}}, "bad_input", "vars"),
        ("integrate", {"expr": "x", "lower": 0}, "bad_input", "upper"),
        ("factor", {"expr": "x+" * 1001}, "too_large", "limit 2000"),
        ("z3_satisfiable", {"constraints": ["x > 0"] * 5000}, "too_large", "JSON"),
    ]
    for op, args, kind, word in cases:
        r = tb.call(op, args)
        assert (r.ok, r.error_type) == (False, kind), (args, r)
        assert word in r.error, r.error
    assert tb.call("factor", {"expr": "x"}, timeout_s=0).error_type == "bad_input"
    assert tb.stats()["worker_calls"] == before


@pytest.mark.parametrize("args,kind", [
    ({"expr": r"\frac{1}{"}, "bad_input"),  # unparseable LaTeX
    ({"expr": "x +* 2"}, "bad_input"),
    ({"expr": "__import__('os').system('touch /tmp/squigglray_pwned')", "syntax": "sympy"}, "bad_input"),
    ({"expr": "x.__class__"}, "bad_input"),
    ({"expr": "open('/etc/passwd')"}, "bad_input"),
    ({"expr": "[c for c in ()]"}, "bad_input"),
    ({"expr": "'abc'"}, "bad_input"),
    ({"expr": "9**9**9"}, "too_large"),  # refused before SymPy tries to compute it
    ({"expr": "factorial(10**7)"}, "too_large"),
])
def test_worker_side_bad_input(tb, args, kind):
    r = tb.call("factor", args)
    assert (r.ok, r.error_type) == (False, kind), r
    assert r.error.startswith("factor: ")
    assert not os.path.exists("/tmp/squigglray_pwned")


def test_op_specific_bad_input(tb):
    for op, args, word in [
        ("evaluate", {"expr": "x + 1"}, "free symbols"),
        ("diff", {"expr": "x*y"}, "give var"),
        ("solve", {"equation": "x > 1"}, "inequality"),
        ("factor", {"expr": "x = 1"}, "not an expression"),
        ("z3_prove", {"claim": "sin(x) <= 1"}, "Z3 cannot take"),
        ("z3_prove", {"claim": "sqrt(x) >= 0"}, "integer powers"),
        ("z3_satisfiable", {"constraints": ["x + 1"]}, "not a relation"),
    ]:
        r = tb.call(op, args)
        assert (r.ok, r.error_type) == (False, "bad_input"), (op, args, r)
        assert word in r.error, r.error


# ------------------------------------------------------------------ deadlines and timeout caching
def test_timeout_kills_then_next_call_works_and_timeouts_are_cached(slow_tb):
    tb = slow_tb
    s0 = tb.stats()
    r = tb.call("expand", {"expr": SLOW}, timeout_s=1.0)
    assert (r.ok, r.error_type, r.cached) == (False, "timeout", False), r
    assert 0.9 <= r.elapsed_s < 4.0 and r.result == {"timeout_s": 1.0}
    assert _ok(tb, "factor", expr="x**2 - 4") == "(x - 2)*(x + 2)"  # a fresh worker took over
    s1 = tb.stats()
    assert s1["timeouts"] == s0["timeouts"] + 1 and s1["worker_restarts"] >= s0["worker_restarts"] + 1
    # the same input again, with the same or a shorter deadline: the cached timeout, no worker call
    for limit in (1.0, 0.5):
        r = tb.call("expand", {"expr": SLOW.replace("**", "^")}, timeout_s=limit)
        assert (r.error_type, r.cached) == ("timeout", True) and r.elapsed_s < 0.5
    assert tb.stats()["worker_calls"] == s1["worker_calls"]
    # a longer deadline deserves a real try
    r = tb.call("expand", {"expr": SLOW}, timeout_s=1.5)
    assert (r.error_type, r.cached, r.result) == ("timeout", False, {"timeout_s": 1.5})
    assert r.elapsed_s >= 1.4
    assert tb.stats()["worker_calls"] == s1["worker_calls"] + 1


# ------------------------------------------------------------------ budgets
def test_budget_calls(tb):
    b = Budget(max_calls=2)
    assert _ok(tb, "factor", expr="x**2 - 25") and not b.exhausted
    rs = [tb.call("expand", {"expr": f"(x+{k})**3"}, budget=b) for k in (11, 12, 13)]
    assert [r.ok for r in rs] == [True, True, False]
    assert rs[2].error_type == "budget" and "budget" in rs[2].error
    assert b.calls == 2 and b.exhausted and b.seconds > 0
    before = tb.stats()["worker_calls"]
    r = tb.call("factor", {"expr": "x**2 - 25"}, budget=b)  # cache hits are free, even when exhausted
    assert r.ok and r.cached
    assert tb.call("factor", {"expr": "x**2 - 36"}, budget=b).error_type == "budget"
    assert tb.stats()["worker_calls"] == before and b.calls == 2


def test_budget_seconds_cuts_the_deadline(slow_tb):
    tb = slow_tb
    _ok(tb, "factor", expr="x**2 - 9")  # the worker is up: start-up is not charged anyway
    b = Budget(max_seconds=0.5)
    t0 = time.monotonic()
    r = tb.call("expand", {"expr": "(a+b+c+d+e+2)**40"}, timeout_s=OK_S, budget=b)
    assert (r.ok, r.error_type) == (False, "budget") and "seconds" in r.error, r
    assert time.monotonic() - t0 < 3.0
    assert b.exhausted and 0.45 <= b.seconds < 3.0 and b.calls == 1
    before = tb.stats()["worker_calls"]
    assert tb.call("factor", {"expr": "x**2 - 49"}, budget=b).error_type == "budget"
    assert tb.stats()["worker_calls"] == before


def test_budget_is_thread_safe():
    b = Budget(max_calls=50)
    got = []
    threads = [threading.Thread(target=lambda: got.extend(b.acquire() for _ in range(20))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(got) == 50 and b.calls == 50 and b.exhausted


# ------------------------------------------------------------------ cache keys
@pytest.mark.parametrize("a,b", [
    (("simplify", {"expr": "x**2 + 1"}), ("simplify", {"expr": "x^2+1"})),
    (("simplify", {"expr": "x+1"}), ("simplify", {"expr": " 1 + x "})),
    (("simplify", {"expr": "(x+y)"}), ("simplify", {"expr": "y+x"})),
    (("simplify", {"expr": "x - 1"}), ("simplify", {"expr": "-1+x"})),
    (("simplify", {"expr": "x*y*2"}), ("simplify", {"expr": "2*y*x"})),
    (("simplify", {"expr": "x \u2212 1"}), ("simplify", {"expr": "x-1"})),  # unicode minus
    (("simplify", {"expr": r"2\cdot 3"}), ("simplify", {"expr": "2 \\times 3"})),
    (("simplify", {"expr": "2\u00d73"}), ("simplify", {"expr": "2 * 3"})),  # unicode times
    (("simplify", {"expr": r"\left(\dfrac{1}{2}\right)"}), ("simplify", {"expr": r"(\frac{1}{2})"})),
    (("simplify", {"expr": r"\tfrac{1}{2}"}), ("simplify", {"expr": r"\frac{1}{2}"})),
    (("simplify", {"expr": "x+1"}), ("simplify", {"expr": "x+1", "syntax": "sympy"})),
    (("equivalent", {"a": "x+1", "b": "y"}), ("equivalent", {"a": "y", "b": "1+x"})),
    (("answer_equivalent", {"a": r"\frac12", "b": "0.5"}), ("answer_equivalent", {"a": "0.5", "b": r"\dfrac12"})),
    (("diff", {"expr": "x**3"}), ("diff", {"expr": "x**3", "order": 1})),
    (("integrate", {"expr": "x", "lower": 0, "upper": 1}), ("integrate", {"expr": "x", "lower": "0", "upper": "1"})),
    (("z3_satisfiable", {"constraints": ["x>0", "y>0"]}), ("z3_satisfiable", {"constraints": ["y > 0", "x > 0"]})),
    (("z3_prove", {"claim": "x+y >= 2*x*y"}), ("z3_prove", {"claim": "y + x >= 2*y*x", "assumptions": []})),
])
def test_cache_keys_that_must_collide(a, b):
    assert cache_key(*a) == cache_key(*b)


@pytest.mark.parametrize("a,b", [
    (("simplify", {"expr": "x+1"}), ("simplify", {"expr": "x+2"})),
    (("simplify", {"expr": "x+1"}), ("simplify", {"expr": "y+1"})),
    (("simplify", {"expr": "x-1"}), ("simplify", {"expr": "1-x"})),
    (("simplify", {"expr": "x+1"}), ("expand", {"expr": "x+1"})),
    (("simplify", {"expr": "x y"}), ("simplify", {"expr": "xy"})),
    (("simplify", {"expr": "1.0+x"}), ("simplify", {"expr": "1+x"})),
    (("simplify", {"expr": "2*x-3"}), ("simplify", {"expr": "2*(x-3)"})),
    (("simplify", {"expr": "(1,2)"}), ("simplify", {"expr": "1,2"})),
    (("simplify", {"expr": "x^{23}"}), ("simplify", {"expr": "x^{2}3"})),
    (("simplify", {"expr": "x+1"}), ("simplify", {"expr": "x+1", "syntax": "latex"})),
    (("diff", {"expr": "x*y", "var": "x"}), ("diff", {"expr": "x*y", "var": "y"})),
    (("diff", {"expr": "x**3"}), ("diff", {"expr": "x**3", "order": 2})),
    (("integrate", {"expr": "x", "lower": 0, "upper": 1}), ("integrate", {"expr": "x", "lower": 0, "upper": 2})),
    (("integrate", {"expr": "x", "lower": 0, "upper": 1}), ("integrate", {"expr": "x", "lower": 1, "upper": 0})),
    (("integrate", {"expr": "x"}), ("integrate", {"expr": "x", "lower": 0, "upper": 1})),
    (("solve", {"equation": "a*x = b"}), ("solve", {"equation": "b*x = a"})),
    (("z3_prove", {"claim": "a >= b"}), ("z3_prove", {"claim": "b >= a"})),
    (("z3_prove", {"claim": "a >= b"}), ("z3_counterexample", {"claim": "a >= b"})),
    (("z3_satisfiable", {"constraints": ["x>0"]}), ("z3_satisfiable", {"constraints": ["x>0"], "vars": {"x": "int"}})),
])
def test_cache_keys_that_must_not_collide(a, b):
    assert cache_key(*a) != cache_key(*b)


def test_canonical_expr_forms():
    assert canonical_expr("x + y >= 2 * x * y") == "x+y>=2*x*y"
    assert canonical_expr("((x+1))") == "1+x"
    assert canonical_expr(r"\left( x \right) \cdot y") == "(x)*y"
    assert canonical_expr(r"\sin x") == r"\sin x"  # a space that separates words stays
    assert canonical_expr(r"a \leftarrow b") == r"a\leftarrow b"  # \left only as a delimiter


# ------------------------------------------------------------------ the memo cache
def test_toolbox_cache_hits_and_misses(tb):
    s0 = tb.stats()
    r1 = tb.call("factor", {"expr": "x**2 - 81"})
    r2 = tb.call("factor", {"expr": "x^2-81"})  # same canonical key
    r3 = tb.call("factor", {"expr": "x**2 - 64"})  # a different input
    assert (r1.cached, r2.cached, r3.cached) == (False, True, False)
    assert r1.result == r2.result == "(x - 9)*(x + 9)" and r3.result == "(x - 8)*(x + 8)"
    s1 = tb.stats()
    assert (s1["cache_hits"] - s0["cache_hits"], s1["cache_misses"] - s0["cache_misses"]) == (1, 2)
    assert s1["worker_calls"] - s0["worker_calls"] == 2 and s1["calls"] - s0["calls"] == 3
    r4 = tb.call("factor", {"expr": r"\frac{1}{"})  # deterministic bad input is cached too
    assert r4.error_type == "bad_input" and tb.call("factor", {"expr": r"\frac{1}{"}).cached


def test_memo_cache_lru_and_copies():
    c = MemoCache(max_items=2)
    for k in "abc":
        c.put(k, ToolResult("factor", True, result=k))
    assert len(c) == 2 and c.get("a") is None and c.get("c").result == "c"
    got = c.get("b")
    got.result = "changed"  # callers get copies
    assert c.get("b").result == "b"
    assert (c.hits, c.misses) == (3, 1)


_WRITER = """
import sys
from squigglray.verify.cache import MemoCache
from squigglray.verify.result import ToolResult
c = MemoCache(path=sys.argv[1])
for i in range(40):
    c.put(f"{sys.argv[2]}-{i}", ToolResult("factor", True, result=i))
"""


def test_memo_cache_on_disk_shared_by_processes(tmp_path):
    path = str(tmp_path / "memo" / "tools.sqlite")
    MemoCache(path=path).put("k", ToolResult("simplify", True, result="5/6", elapsed_s=0.3))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, path, tag], env=env) for tag in ("p", "q")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    fresh = MemoCache(path=path)
    assert len(fresh) == 0 and fresh.get("k") == ToolResult("simplify", True, result="5/6", elapsed_s=0.3)
    assert all(fresh.get(f"{t}-{i}").result == i for t in "pq" for i in range(40))
    assert fresh.disk_hits == 81
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_toolbox_disk_cache_survives_a_restart(tmp_path):
    path = str(tmp_path / "tools.sqlite")
    with ToolBox(timeout_s=OK_S, cache=MemoCache(path=path)) as first:
        assert first.call("integrate", {"expr": "x*exp(x)"}).result == "(x - 1)*exp(x)"
    with ToolBox(timeout_s=OK_S, cache=MemoCache(path=path)) as second:
        r = second.call("integrate", {"expr": "x * exp(x)"})
        assert r.ok and r.cached and r.result == "(x - 1)*exp(x)"
        assert second.stats()["worker_calls"] == 0 and second.stats()["cache_hits"] == 1


def test_use_cache_false_runs_every_time():
    with ToolBox(timeout_s=OK_S, use_cache=False) as box:
        assert box.cache is None
        rs = [box.call("factor", {"expr": "x**2 - 1"}) for _ in range(2)]
        assert [r.cached for r in rs] == [False, False] and box.stats()["worker_calls"] == 2


# ------------------------------------------------------------------ batches and concurrency
def test_call_many_dedups_and_keeps_order(tb):
    before = tb.stats()["worker_calls"]
    calls = [("factor", {"expr": "x**2 - 100"}), ("diff", {"expr": "x**5"}), ("nope", {}),
             ("factor", {"expr": "x^2-100"}), ("factor", {"expr": 7}), ("factor", {"expr": "x**2 - 100"})]
    rs = tb.call_many(calls)
    assert [r.op for r in rs] == ["factor", "diff", "nope", "factor", "factor", "factor"]
    assert [r.ok for r in rs] == [True, True, False, True, False, True]
    assert rs[0].result == rs[3].result == rs[5].result == "(x - 10)*(x + 10)" and rs[1].result == "5*x**4"
    assert (rs[0].cached, rs[3].cached, rs[5].cached) == (False, True, True)
    assert (rs[2].error_type, rs[4].error_type) == ("unknown_op", "bad_input")
    assert tb.stats()["worker_calls"] == before + 2


def test_two_workers_serve_two_callers_at_once():
    with ToolBox(timeout_s=OK_S, workers=2, use_cache=False) as box:
        box.start()
        t0 = time.monotonic()
        rs = box.call_many([("expand", {"expr": SLOW}), ("expand", {"expr": SLOW.replace("1", "3")})], timeout_s=1.0)
        assert [r.error_type for r in rs] == ["timeout", "timeout"]
        assert time.monotonic() - t0 < 1.9  # one after the other would take 2 s
        box.start()
        out: list = []
        threads = [threading.Thread(target=lambda e=e: out.append(box.call("expand", {"expr": e}, timeout_s=1.0)))
                   for e in (SLOW.replace("1", "5"), SLOW.replace("1", "7"))]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.error_type for r in out] == ["timeout", "timeout"]
        assert time.monotonic() - t0 < 1.9
        assert box.stats()["timeouts"] == 4
        assert box.call("factor", {"expr": "x**2 - 1"}).ok  # still serving


def test_results_are_json_round_trippable(tb):
    r = tb.call("z3_prove", {"claim": "x + y >= 2*x*y"})
    assert ToolResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
