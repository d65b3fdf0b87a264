"""The verifier service (serve_apps/verifiers.py) under a best-of-N answer-checking load, over real
HTTP: the app with its memo cache against the same app without it, in one run.

    python bench/verifier_service.py                        # 40 problems x N=16, 32 clients (~1-2 min, 2 cores)
    python bench/verifier_service.py --problems 100 --n 64 --clients 64 --workers 2 --replicas 2

Workload: 40 problems with an exact gold answer (fractions, integers, surds: mode "answer", i.e.
math-verify; polynomials: mode "expression", i.e. SymPy). Each problem gets N candidate answers, as
a best-of-N sampler would write them: most are the gold in one of many equivalent spellings
(`\\frac{1}{2}`, `1/2`, `0.5`, `\\dfrac12`, `2/4`, `\\left(\\frac{1}{2}\\right)`, `\\boxed{1,234}`, `1234.0`,
`\\sqrt{8}` for `2\\sqrt{2}`, `(x+1)*(x+2)` for `x**2+3*x+2`, ...), a few are wrong. Every candidate is
checked against its gold with POST /verify/equivalence by `--clients` threads (a requests.Session
each). Both apps are deployed side by side (route prefixes /cache and /nocache, same workers and
replicas), warmed up on other inputs, then timed on the same requests: the workload is cut into
--chunks chunks (whole problems) that run on one app and then the other, alternating which goes
first, so drifting load on the machine hits both alike. Twice by default (--passes): pass 1 checks
the candidates for the first time, pass 2 checks them again, as a later epoch or a re-scoring run
would.

Prints a markdown table (requests, throughput, p50/p99 latency, cache hit rate, tool runs) and the
ratios cache/no-cache; every run must give the same verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import threading
import time
from fractions import Fraction

import requests


# -- the workload ---------------------------------------------------------------------------------

def _fraction_forms(f: Fraction) -> tuple[list[str], list[str]]:
    p, q = f.numerator, f.denominator
    right = [f"\\frac{{{p}}}{{{q}}}", f"{p}/{q}", f" {p}/{q} ", f"{2 * p}/{2 * q}", f"\\frac{{{2 * p}}}{{{2 * q}}}",
             f"\\left(\\frac{{{p}}}{{{q}}}\\right)", f"\\boxed{{\\frac{{{p}}}{{{q}}}}}", f"\\tfrac{{{p}}}{{{q}}}"]
    if p < 10 and q < 10:
        right.append(f"\\dfrac{p}{q}")
    else:
        right.append(f"\\dfrac{{{p}}}{{{q}}}")
    d = q
    for prime in (2, 5):
        while d % prime == 0:
            d //= prime
    if d == 1:  # a terminating decimal
        right.append(str(float(f)))
    wrong = [f"\\frac{{{q}}}{{{p}}}", f"{p}/{q + 1}", f"\\frac{{{p + 1}}}{{{q}}}"]
    return right, wrong


def _integer_forms(n: int) -> tuple[list[str], list[str]]:
    right = [str(n), f"\\boxed{{{n}}}", f"{n}.0", f" {n} ", f"${n}$", f"{n:,}", f"\\boxed{{{n:,}}}", f"{n}.00"]
    wrong = [str(n + 1), f"\\boxed{{{n - 10}}}", f"{n * 10:,}"]
    return right, wrong


def _surd_forms(a: int, b: int) -> tuple[list[str], list[str]]:
    right = [f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}", f"{a} \\sqrt{{{b}}}", f"\\boxed{{{a}\\sqrt{{{b}}}}}",
             f"\\sqrt{{{b}}} \\cdot {a}", f"\\left({a}\\sqrt{{{b}}}\\right)"]
    if b < 10:  # `\sqrt 10` is \sqrt{1}0 in LaTeX
        right.append(f"{a}\\sqrt {b}")
    wrong = [f"\\sqrt{{{a * b}}}", f"{a + 1}\\sqrt{{{b}}}", f"{a}\\sqrt{{{b + 1}}}"]
    return right, wrong


def _poly_forms(r: int, s: int) -> tuple[str, list[str], list[str]]:
    gold = f"x**2 + {r + s}*x + {r * s}"
    right = [f"(x + {r})*(x + {s})", f"(x + {s})*(x + {r})", f"x**2 + {r + s}*x + {r * s}", f"x*(x + {r + s}) + {r * s}",
             f"{r * s} + {r + s}*x + x**2", f"(x + {r})**2 + {s - r}*(x + {r})", f"x**2+{r + s}*x+{r * s}"]
    wrong = [f"(x + {r})*(x - {s})", f"x**2 + {r + s}*x + {r * s + 1}", f"(x + {r + 1})*(x + {s})"]
    return gold, right, wrong


def workload(problems: int, n: int, seed: int = 0, wrong_rate: float = 0.25) -> list[dict]:
    """`problems` x `n` requests: {"body": JSON body, "label": whether the candidate is the gold}."""
    rng = random.Random(seed)
    out: list[dict] = []
    for i in range(problems):
        kind = ("fraction", "integer", "surd", "poly")[i % 4]
        mode = "answer"
        if kind == "fraction":
            f = Fraction(rng.randint(1, 19), rng.choice([2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 25]))
            while f.denominator == 1:
                f = Fraction(rng.randint(1, 19), rng.choice([3, 4, 8]))
            gold = f"\\frac{{{f.numerator}}}{{{f.denominator}}}"
            right, wrong = _fraction_forms(f)
        elif kind == "integer":
            v = rng.randint(1000, 999_999)
            gold = str(v)
            right, wrong = _integer_forms(v)
        elif kind == "surd":
            a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7, 10, 11])
            gold = f"{a}\\sqrt{{{b}}}"
            right, wrong = _surd_forms(a, b)
        else:
            r = rng.randint(1, 9)
            gold, right, wrong = _poly_forms(r, r + rng.randint(1, 9))
            mode = "expression"
        for _ in range(n):
            label = rng.random() >= wrong_rate
            cand = rng.choice(right if label else wrong)
            out.append({"body": {"a": cand, "b": gold, "mode": mode}, "label": label})
    return out


def warmup_workload(timed: list[dict], seed: int) -> list[dict]:
    """Other problems of the same kinds, minus any check that is also timed (the cache starts cold on those)."""
    seen = {json.dumps(x["body"], sort_keys=True) for x in timed}
    return [x for x in workload(8, 8, seed + 1000) if json.dumps(x["body"], sort_keys=True) not in seen]


# -- the load -------------------------------------------------------------------------------------

def run_load(url: str, items: list[dict], clients: int) -> dict:
    """POST every item from `clients` threads; latencies, verdicts, cached flags, wall time."""
    lock = threading.Lock()
    nxt = [0]
    lat: list[float] = [0.0] * len(items)
    verdicts: list = [None] * len(items)
    cached = [False] * len(items)
    failures: list[str] = []

    def worker() -> None:
        with requests.Session() as s:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(items):
                    return
                t0 = time.perf_counter()
                r = s.post(f"{url}/verify/equivalence", data=json.dumps(items[i]["body"]),
                           headers={"Content-Type": "application/json"}, timeout=120)
                lat[i] = time.perf_counter() - t0
                if r.status_code != 200:
                    with lock:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    continue
                d = r.json()
                verdicts[i], cached[i] = d["equivalent"], d["cached"]

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"wall": wall, "lat": lat, "verdicts": verdicts, "cached": cached, "failures": failures}


def stats(url: str) -> dict:
    return requests.get(f"{url}/healthz", timeout=60).json()["stats"]  # the replica's ToolBox (one replica)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--n", type=int, default=16, help="candidate answers per problem (best-of-N)")
    ap.add_argument("--clients", type=int, default=32, help="concurrent client threads")
    ap.add_argument("--workers", type=int, default=1, help="tool worker processes per replica")
    ap.add_argument("--replicas", type=int, default=1, help="replicas of each app")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--wrong-rate", type=float, default=0.25, help="share of wrong candidates")
    ap.add_argument("--passes", type=int, default=2,
                    help="times the same checks run (pass 2 = a later epoch re-checking the same candidates)")
    ap.add_argument("--chunks", type=int, default=4, help="workload chunks, run on the two apps in turn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=None, help="HTTP port (default: a free one)")
    ap.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs (default: all)")
    a = ap.parse_args()

    import ray
    from ray import serve

    from serve_apps.verifiers import app_builder

    ray.init(num_cpus=a.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    port = a.port or _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    common = {"workers": a.workers, "min_replicas": a.replicas, "max_replicas": a.replicas, "num_cpus": 0.1,
              "max_batch_size": a.max_batch_size, "max_ongoing_requests": max(64, 2 * a.max_batch_size),
              "timeout_s": 5.0}
    apps = {"cache": {**common, "cache": True}, "no cache": {**common, "cache": False}}
    urls = {}
    t0 = time.perf_counter()
    for name, args in apps.items():
        prefix = "/" + name.replace(" ", "")
        serve.run(app_builder(args), name=prefix.strip("/"), route_prefix=prefix, blocking=False)
        urls[name] = f"http://127.0.0.1:{port}{prefix}"
    items = workload(a.problems, a.n, a.seed, a.wrong_rate)
    for name, url in urls.items():  # the tool workers' first calls and Serve's code paths, outside the timing
        w = run_load(url, warmup_workload(items, a.seed), a.clients)
        assert not w["failures"], w["failures"][:3]
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, Ray {ray.__version__}; apps up in {time.perf_counter() - t0:.1f} s")
    modes = sum(1 for x in items if x["body"]["mode"] == "expression")
    print(f"workload: {a.problems} problems x N={a.n} = {len(items)} POST /verify/equivalence "
          f"({len(items) - modes} answer mode, {modes} expression mode; "
          f"{len({json.dumps(x['body'], sort_keys=True) for x in items})} distinct), {a.clients} client threads, "
          f"{a.replicas} replica(s) x {a.workers} tool worker(s), max_batch_size {a.max_batch_size}")

    # interleaved: chunk k of the workload runs on one app, then on the other (first app alternating),
    # so drifting machine load hits both alike; a problem's N candidates stay in one chunk
    per = -(-a.problems // max(1, min(a.chunks, a.problems))) * a.n
    chunks = [items[i:i + per] for i in range(0, len(items), per)]
    rows: dict[tuple[str, int], dict] = {}
    for p in range(1, a.passes + 1):
        for name in urls:
            rows[name, p] = {"requests": 0, "wall": 0.0, "lat": [], "cached": 0, "verdicts": [], "tool_runs": 0}
        for k, chunk in enumerate(chunks):
            for name in (("no cache", "cache") if k % 2 == 0 else ("cache", "no cache")):
                before = stats(urls[name])
                res = run_load(urls[name], chunk, a.clients)
                after = stats(urls[name])
                assert not res["failures"], f"{name}: {len(res['failures'])} failed, e.g. {res['failures'][:3]}"
                row = rows[name, p]
                row["requests"] += len(chunk)
                row["wall"] += res["wall"]
                row["lat"] += res["lat"]
                row["cached"] += sum(res["cached"])
                row["verdicts"] += res["verdicts"]
                row["tool_runs"] += after.get("worker_calls", 0) - before.get("worker_calls", 0)
    for row in rows.values():
        row["hit_rate"] = row["cached"] / row["requests"]

    def line(label: str, ps: list[int], name: str) -> dict:
        rs = [rows[name, p] for p in ps]
        lat = [x for r in rs for x in r["lat"]]
        n, wall = sum(r["requests"] for r in rs), sum(r["wall"] for r in rs)
        out = {"rps": n / wall, "p50": statistics.median(lat), "p99": _pct(lat, 0.99)}
        hit = sum(r["hit_rate"] * r["requests"] for r in rs) / n
        runs = sum(r["tool_runs"] for r in rs) if a.replicas == 1 else "-"  # /healthz reaches one replica
        print(f"| {name} | {label} | {n} | {wall:.2f} | {out['rps']:.1f} | {out['p50'] * 1e3:.1f} | "
              f"{out['p99'] * 1e3:.1f} | {hit:.0%} | {runs} |")
        return out

    print()
    print("| app | pass | requests | wall (s) | throughput (req/s) | p50 (ms) | p99 (ms) | cache hit rate | tool runs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for name in ("no cache", "cache"):
        for p in range(1, a.passes + 1):
            summary[name, p] = line(str(p) if a.passes > 1 else "-", [p], name)
        if a.passes > 1:
            summary[name, 0] = line("all", list(range(1, a.passes + 1)), name)
    print()
    for p in ([0] if a.passes > 1 else []) + list(range(1, a.passes + 1)):
        c, nc = summary["cache", p], summary["no cache", p]
        label = "all passes" if p == 0 else f"pass {p}"
        print(f"cache / no cache, {label}: throughput {c['rps'] / nc['rps']:.2f}x, p50 latency "
              f"{c['p50'] / nc['p50']:.2f}x, p99 latency {c['p99'] / nc['p99']:.2f}x")
    labels = [x["label"] for x in items]
    verdicts = [rows[k]["verdicts"] for k in rows]
    agree = sum(v == lab for v, lab in zip(verdicts[0], labels)) / len(items)
    print(f"same verdicts in every run: {all(v == verdicts[0] for v in verdicts)}; "
          f"verdicts matching the workload's labels: {agree:.1%}")
    print("cache hit rate: responses answered without a tool run (`cached: true`): from the memo cache, or a "
          "repeat of another call in the same batch (ToolBox.call_many runs identical calls once, also "
          "without the cache)")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
