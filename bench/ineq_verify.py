"""Verified inequality claims per second through the pipeline's Ray Data stage against a single-process
loop on the same claims, with the verdict mix, from one run.

    python bench/ineq_verify.py                      # 200 claims, every family, 2 s per claim (~2-4 min, 2 cores)
    python bench/ineq_verify.py --n 1000 --num-cpus 16 --timeout-s 2
    python bench/ineq_verify.py --what proofs        # the gate instead: judge_completion on reference proofs
    python bench/ineq_verify.py --count 2500         # no timing: problems generated and kept by the split (~3 min)

Workload: `--n` claims drawn from the generator (every family, stratified by family with
`split.stratified_subset`, seeded), a share `--false-rate` of them made false by moving the rhs by
1/10 against the relation (false at the equality case, so the sampler must find it). Each claim is
decided by `verifier.check_claim` (sampling, then SymPy, then Z3; `--timeout-s` per claim):
- pipeline: `ray.data.from_items(rows).map_batches(claim_stage, batch_size=32, num_cpus=1)`, the
  shape of the candidates step in squigglray/jobs/ineq.py (there with `mechanical_stage`), on a local
  Ray of `--num-cpus` CPUs (default: all);
- loop: the same claims one after another in this process (one verifier worker subprocess).
Both sides are warmed up first on other claims (Ray's workers and each worker's SymPy/Z3 subprocess
start outside the timing). Prints a markdown table (claims, wall time, claims/s, verdict mix), the
ratio pipeline/loop, whether the two agree claim by claim, and the soundness counts (true claims
refuted, false claims proved: both must be 0).

`--count N` measures the generator instead (issue 21: a cluster config must reach 10k+ distinct
problems after near-duplicate removal): every family at n_per_family=N with the config defaults
(variants proof/bound/relation 0.6/0.2/0.2, seed 0), split by `split.split_problems` at
`--test-fraction` (the cluster example's 0.1) and near_dup_threshold 0.6; per family: generated,
kept (train + test), and distinct claims kept (canonical claim: up to renaming, variant and sides).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections import Counter

VERDICTS = ("proved", "refuted", "unknown")


def workload(n: int, seed: int = 0, false_rate: float = 0.25) -> list[dict]:
    """`n` rows {"problem_json", "problem_id", "family", "label"}: label True for a generated (true) claim."""
    import random

    from squigglray.ineq.generator import FAMILIES, generate
    from squigglray.ineq.split import stratified_subset

    per_family = max(2, -(-2 * n // len(FAMILIES)))
    problems = generate(None, per_family, seed, {"proof": 1.0})
    chosen = stratified_subset(problems, min(n, len(problems)), seed)
    false = set(random.Random(seed).sample(range(len(chosen)), round(len(chosen) * false_rate)))
    rows = []
    for i, p in enumerate(chosen):
        d = p.to_dict()
        label = i not in false
        if not label:  # false at the equality case: lhs == rhs there, and the rhs moves past it
            d["rhs"] = f"({d['rhs']}) + 1/10" if d["rel"] in (">=", ">") else f"({d['rhs']}) - 1/10"
        rows.append({"problem_id": p.problem_id, "family": p.family, "label": label, "problem_json": json.dumps(d),
                     "text": "" if not label else _reference(p)})
    return rows


def _reference(p) -> str:
    from squigglray.ineq.proof_text import reference_text

    return reference_text(p)


def run_loop(rows: list[dict], what: str, timeout_s: float) -> list[str]:
    from actors.ineq_llm import claim_stage, mechanical_stage

    out = []
    for r in rows:
        batch = {"problem_json": [r["problem_json"]], "text": [r["text"]]}
        if what == "claims":
            out.append(claim_stage(batch, timeout_s)["claim_status"][0])
        else:
            out.append(mechanical_stage(batch, "text", timeout_s)["mech_status"][0])
    return out


def run_pipeline(rows: list[dict], what: str, timeout_s: float, batch_size: int) -> list[str]:
    import ray

    from actors.ineq_llm import claim_stage, mechanical_stage

    ds = ray.data.from_items(rows)
    if what == "claims":
        ds = ds.map_batches(claim_stage, fn_kwargs={"timeout_s": timeout_s}, batch_size=batch_size, num_cpus=1)
        col = "claim_status"
    else:
        ds = ds.map_batches(mechanical_stage, fn_kwargs={"text_col": "text", "timeout_s": timeout_s},
                            batch_size=batch_size, num_cpus=1)
        col = "mech_status"
    by_id = {r["problem_id"]: r[col] for r in ds.take_all()}
    return [by_id[r["problem_id"]] for r in rows]


def count(n_per_family: int, test_fraction: float, seed: int) -> None:
    from squigglray.ineq.generator import FAMILIES, generate
    from squigglray.ineq.split import canonical_claim, split_problems

    t0 = time.perf_counter()
    problems = generate(None, n_per_family, seed, {"proof": 0.6, "bound": 0.2, "relation": 0.2})
    t1 = time.perf_counter()
    s = split_problems(problems, test_fraction, seed, 0.6)
    t2 = time.perf_counter()
    kept = s.train + s.test
    made, held = Counter(p.family for p in problems), Counter(p.family for p in kept)
    claims = Counter(p.family for p in {canonical_claim(p): p for p in kept}.values())
    print(f"n_per_family={n_per_family}, seed {seed}, test_fraction {test_fraction}, near_dup_threshold 0.6: "
          f"{len(problems)} problems generated in {t1 - t0:.0f} s; split in {t2 - t1:.0f} s: {len(s.train)} train + "
          f"{len(s.test)} test = {len(kept)} kept ({len(s.removed)} near-duplicates removed), "
          f"{sum(claims.values())} distinct claims kept")
    print()
    print("| family | generated | kept | distinct claims kept |")
    print("|---|---:|---:|---:|")
    for f in FAMILIES:
        print(f"| {f} | {made[f]} | {held[f]} | {claims[f]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="claims (or proofs) to verify")
    ap.add_argument("--what", choices=["claims", "proofs"], default="claims",
                    help="claims: check_claim; proofs: the gate (judge_completion on reference proofs, true rows only)")
    ap.add_argument("--false-rate", type=float, default=0.25, help="share of claims made false")
    ap.add_argument("--timeout-s", type=float, default=2.0, help="per claim (the pipeline's verification.timeout_s)")
    ap.add_argument("--batch-size", type=int, default=32, help="rows per Ray Data batch (the candidates step's 32)")
    ap.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=None, metavar="N_PER_FAMILY",
                    help="measure the generator and split instead of timing (no Ray)")
    ap.add_argument("--test-fraction", type=float, default=0.1, help="with --count")
    a = ap.parse_args()
    if a.count is not None:
        count(a.count, a.test_fraction, a.seed)
        return

    import ray

    t0 = time.perf_counter()
    rows = workload(a.n + 16, a.seed, 0.0 if a.what == "proofs" else a.false_rate)
    warm, rows = rows[a.n:], rows[: a.n]  # the last 16 (other claims) warm up
    t_gen = time.perf_counter() - t0
    cpus = a.num_cpus or os.cpu_count()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    t0 = time.perf_counter()  # warm-up, untimed: Ray's workers and their verifier subprocesses, this process's
    run_pipeline([{**w, "problem_id": f"{w['problem_id']}#{i}"} for i in range(cpus) for w in warm[:2]], a.what,
                 a.timeout_s, 2)
    run_loop(warm[:2], a.what, a.timeout_s)
    t_warm = time.perf_counter() - t0
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, Ray {ray.__version__}; local Ray with {cpus} CPUs")
    fams = Counter(r["family"] for r in rows)
    print(f"workload: {len(rows)} {a.what} from {len(fams)} families (generated in {t_gen:.1f} s; warm-up "
          f"{t_warm:.1f} s), {sum(not r['label'] for r in rows)} made false, timeout {a.timeout_s:g} s each, "
          f"batch size {a.batch_size}")

    results = {}
    t0 = time.perf_counter()
    results["Ray Data pipeline"] = (run_pipeline(rows, a.what, a.timeout_s, a.batch_size), time.perf_counter() - t0)
    t0 = time.perf_counter()
    results["single-process loop"] = (run_loop(rows, a.what, a.timeout_s), time.perf_counter() - t0)

    kinds = VERDICTS if a.what == "claims" else ("valid", "invalid", "incomplete", "unknown")
    print()
    print(f"| path | {a.what} | wall (s) | {a.what}/s | " + " | ".join(kinds) + " | other |")
    print("|---|---:|---:|---:|" + "---:|" * (len(kinds) + 1))
    for name, (verdicts, wall) in results.items():
        c = Counter(verdicts)
        other = sum(v for k, v in c.items() if k not in kinds)
        print(f"| {name} | {len(verdicts)} | {wall:.1f} | {len(verdicts) / wall:.2f} | "
              + " | ".join(str(c.get(k, 0)) for k in kinds) + f" | {other} |")
    (pv, pw), (lv, lw) = results["Ray Data pipeline"], results["single-process loop"]
    print()
    print(f"pipeline / loop throughput: {lw / pw:.2f}x on {cpus} CPUs")
    same = sum(x == y for x, y in zip(pv, lv))
    print(f"same verdict claim by claim: {same}/{len(rows)} (differences are timeouts under load)")
    if a.what == "claims":
        for name, (verdicts, _) in results.items():
            bad_true = sum(r["label"] and v == "refuted" for r, v in zip(rows, verdicts))
            bad_false = sum(not r["label"] and v == "proved" for r, v in zip(rows, verdicts))
            print(f"{name}: true claims refuted {bad_true}, false claims proved {bad_false}")
        unknown = Counter(r["family"] for r, v in zip(rows, lv) if v == "unknown" and r["label"])
        if unknown:
            print(f"true claims left unknown by the loop, per family: {dict(sorted(unknown.items()))}")
    ray.shutdown()


if __name__ == "__main__":
    main()
