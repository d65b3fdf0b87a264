"""The proof judge's false-pass rate on wrong proofs made from right ones (`ineq/proof_mutations.py`).

    python bench/ineq_proof_null.py                          # README config's test split, every mutation (~30 s)
    python bench/ineq_proof_null.py --all-families --n-per-family 10 --seed 7   # every generator family (~2 min)

Each problem's reference proof is mutated once per kind (nudge a number, drop a link, write a link
as "=", flip a link, nudge a citation argument); each mutant is labelled by ground truth that does
not use the rule book (a link the claim checker refutes, relations that do not compose, a citation
whose instance does not match the link at random points) and scored by `verifier.judge_completion`
(`verify_claim=False`, the proof score). Prints per kind: mutants, shown wrong, of those scored 1
(false passes) with the 95% upper bound on the false-pass rate (Clopper-Pearson; with 0 false
passes it is 1 - 0.025**(1/n)), and the mutants not shown wrong with how many the judge passes (a
dropped identity link or a rescaled SOS coefficient leaves a right proof: passing those is right).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _problems(all_families: bool, n_per_family: int | None, seed: int | None):
    import yaml

    from squigglray.ineq.config import IneqConfig
    from squigglray.ineq.generator import generate
    from squigglray.ineq.split import split_problems

    cfg = IneqConfig(**yaml.safe_load((ROOT / "squigglray" / "configs" / "ineq.yaml").read_text()))
    d, seed = cfg.data, cfg.seed if seed is None else seed
    problems = generate(None if all_families else d.families, n_per_family or d.n_per_family, seed, d.variants)
    return split_problems(problems, d.test_fraction, seed, d.near_dup_threshold).test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all-families", action="store_true", help="every generator family, not the config's eight")
    ap.add_argument("--n-per-family", type=int, default=None, help="default: the config's")
    ap.add_argument("--seed", type=int, default=None, help="generator and split seed (default: the config's)")
    ap.add_argument("--mutation-seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.perf_counter()
    problems = _problems(a.all_families, a.n_per_family, a.seed)
    from squigglray.ineq.proof_mutations import judge_mutants

    rows = judge_mutants(problems, a.mutation_seed)
    print(f"{len(problems)} test problems ({len({p.family for p in problems})} families), {len(rows)} mutants, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| mutation | mutants | shown wrong | false passes | 95% upper bound | not shown wrong | of those passed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in [*dict.fromkeys(r["kind"] for r in rows), "all"]:
        sel = [r for r in rows if kind in ("all", r["kind"])]
        wrong = [r for r in sel if r["wrong"]]
        fp = sum(r["score"] for r in wrong)
        ub = _upper(fp, len(wrong))
        right = [r for r in sel if not r["wrong"]]
        print(f"| {kind} | {len(sel)} | {len(wrong)} | {fp} | {ub:.2%} | {len(right)} | {sum(r['score'] for r in right)} |")
    for r in rows:
        if r["wrong"] and r["score"]:
            print(f"\nFALSE PASS {r['problem_id']} ({r['kind']}): {r['why']}\n{r['text']}")
    fams = Counter(r["family"] for r in rows if r["wrong"])
    print(f"\nshown-wrong mutants per family: {dict(sorted(fams.items()))}")


def _upper(k: int, n: int, alpha: float = 0.05) -> float:
    """Clopper-Pearson upper bound of a binomial rate (k of n), two-sided 1 - alpha."""
    if n == 0:
        return 1.0
    if k == 0:
        return 1 - (alpha / 2) ** (1 / n)
    from scipy.stats import beta

    return 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))


if __name__ == "__main__":
    main()
