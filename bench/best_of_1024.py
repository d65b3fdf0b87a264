"""One /solve request with N = 1024 candidates, end to end through the Serve app and its sandbox
pool, on a CPU (issue 25 part 5): the served solver.yaml with `max_n: 1024` (its file says 64; the
cap is the deployment's), the nano model, short rounds, no early stop, so every candidate generates,
runs its code in the pool and votes.

    python bench/best_of_1024.py                        # trains a nano model (~20 s) into a temp dir
    python bench/best_of_1024.py --data-dir data --model tiny --n 1024

Prints the wall time, candidates, code runs (all in the sandbox pool), tokens, the answer and its
vote share, and the solver's own generate/execute split.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NANO = {  # tests/conftest.py's SOLVER_MODEL: ~20 s, writes well-formed tool-integrated traces
    "name": "bench-nano", "seed": 0, "model": {"preset": "nano", "max_seq_len": 160, "vocab_size": 400},
    "data": {"families": ["arithmetic", "mod_power"], "pool_per_family_level": 200, "seed": 0},
    "curriculum": [{"name": "easy", "fraction": 1.0, "levels": {"easy": 1.0}}],
    "train": {"steps": 250, "batch_size": 32, "lr": 0.01, "warmup_steps": 10, "log_dense_until": 8,
              "log_every": 50, "threads": 2},
    "eval": {"n_per_family": 2, "levels": ["easy"]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--model", default="nano")
    ap.add_argument("--data-dir", default="", help="default: a temporary folder with a freshly trained nano model")
    ap.add_argument("--max-tokens-per-round", type=int, default=48)
    ap.add_argument("--sandbox-workers", type=int, default=2)
    a = ap.parse_args()
    import ray
    from ray import serve

    from squigglray.families import sample
    from squigglray.jobs.serve_solver import serve_solver
    from squigglray.paths import ArtifactStore

    data = a.data_dir or tempfile.mkdtemp(prefix="best_of_1024-")
    store = ArtifactStore(data)
    if not store.exists(store.model_pointer(a.model)):
        if a.model != "nano":
            sys.exit(f"no trained {a.model!r} in {store.uri}: train it (squigglray quickstart) or leave --model out")
        from squigglray.training import BaseTrainConfig, train_base

        train_base(BaseTrainConfig.model_validate(NANO), store, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    overrides = {"model": a.model, "data_dir": store.uri, "port": free_port(), "max_n": a.n,
                 "sandbox_workers": a.sandbox_workers, "engine_num_cpus": 0.5, "ingress_num_cpus": 0.1,
                 "sandbox_num_cpus": 0.5, "solve_timeout_s": 3600, "defaults.early_stop": False,
                 "defaults.wave_size": 64, "defaults.max_tokens_per_round": a.max_tokens_per_round}
    try:
        url = serve_solver(str(ROOT / "serve_apps/solver.yaml"), blocking=False, overrides=overrides,
                           log=lambda *_: None)
        problem = sample("arithmetic", 1, seed=5)[0].problem
        body = {"problem": problem, "n": a.n, "rounds": 2, "traces": True}
        req = urllib.request.Request(f"{url}/solve", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=3600) as resp:
            out = json.loads(resp.read())
        wall = time.perf_counter() - t0
    finally:
        serve.shutdown()
        ray.shutdown()
    runs = sum(len(c["code_runs"]) for c in out["candidates"])
    share = out["votes"].get(str(out["answer"]), 0) / max(sum(out["votes"].values()), 1e-9)
    print(f"best-of-{a.n} through the Serve app on {a.sandbox_workers} sandbox workers ({a.model}): {wall:.1f} s, "
          f"{out['n_candidates']} candidates, {runs} code runs in the pool, {out['tokens']:,} tokens")
    print(f"  answer {out['answer']!r} with {share:.0%} of the vote; solver timings "
          + ", ".join(f"{k} {v:.1f} s" for k, v in out["timings"].items()))


if __name__ == "__main__":
    main()
