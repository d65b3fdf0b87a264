"""Write Parquet shards in OpenMathReasoning's published layout, for tests and benchmarks.

    python -m squigglray.data.omr_sample /tmp/omr --rows 100000 --shards 4

The real dataset (tens of GB) cannot be downloaded everywhere; these shards have its file names
(`<split>-NNNNN-of-NNNNN.parquet`), its columns and their types, several solutions per problem, cot
and tir modes and pass rates, with problems drawn from templates across the family buckets (and
the project's synthetic families), so the slice pipeline sees what it would see on the real data.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OMR_SCHEMA = pa.schema([
    ("expected_answer", pa.string()), ("problem_type", pa.string()), ("problem_source", pa.string()),
    ("generation_model", pa.string()), ("pass_rate_72b_tir", pa.string()), ("problem", pa.string()),
    ("generated_solution", pa.string()), ("inference_mode", pa.string()), ("used_in_kaggle", pa.bool_()),
])

TEMPLATES = (
    "Find the remainder when ${a}^{{{b}}}$ is divided by ${c}$.",
    "Find all functions $f:\\mathbb{{R}}\\to\\mathbb{{R}}$ such that $f(x+y)=f(x)+{a}y$ for all real $x, y$ with f({b})={c}.",
    "How many ways can {a} people be seated around a round table if {b} of them refuse to sit together?",
    "In triangle $ABC$, $AB={a}$, $BC={b}$ and $\\angle ABC = {c}^\\circ$. Find the area of the triangle.",
    "Evaluate $\\int_0^{{{a}}} x^{{{b}}}\\,dx$.",
    "A fair die is rolled {a} times. What is the probability that the sum is at least {b}?",
    "Let $a, b, c > 0$ with $a + b + c = {a}$. Find the minimum value of $a^2 + b^2 + c^2 + {b}abc$.",
    "Find the number of positive divisors of ${a}$ that are multiples of ${b}$.",
    "Solve for $x$: ${a}x + {b} = {c}$.",
    "Compute ${a} \\times {b} - {c}$.",
    "What is the order of ${a}$ modulo ${c}$?",
    "The numbers $1, 2, \\ldots, {a}$ are written on a blackboard. At each step two numbers are erased and "
    "replaced by their sum plus {b}. What number remains at the end?",
    "A sequence satisfies $a_{{n+1}} = {a}a_n - a_{{n-1}}$ with $a_1 = 1$, $a_2 = {b}$. Find $a_{{{c}}}$.",
    "Describe all the ways in which a town of {a} houses could be painted, given a palette of {b} colors.",
)
SOURCES = ("aops_c4_high_school_math", "aops_c6_high_school_olympiads", "aops_c5_contests_amp_programs",
           "aops_c7_college_math")
MODELS = ("DeepSeek-R1", "QwQ-32B")


def _solution(rng: random.Random, mode: str, answer: str, words: int) -> str:
    filler = " ".join(rng.choice(("we", "consider", "the", "value", "so", "then", "note", "that", "hence", "case",
                                  "by", "symmetry", "compute", "check")) for _ in range(words))
    if mode == "tir":
        return (f"<think>\n{filler}\n</think>\nLet me compute it.\n```python\nprint({answer})\n```\n```output\n"
                f"{answer}\n```\nSo the answer is \\boxed{{{answer}}}.")
    return f"<think>\n{filler}\n</think>\nTherefore the answer is \\boxed{{{answer}}}."


def omr_rows(n_rows: int, seed: int = 0, solutions_per_problem: int = 4, words: int = 60) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    problem_no = 0
    while len(rows) < n_rows:
        problem_no += 1
        t = TEMPLATES[problem_no % len(TEMPLATES)]
        problem = t.format(a=rng.randint(2, 999), b=rng.randint(2, 99), c=rng.randint(2, 9999))
        answer = str(rng.randint(0, 99_999))
        meta = {"problem_type": "has_answer_extracted", "problem_source": rng.choice(SOURCES),
                "pass_rate_72b_tir": rng.choice(("0.9375", "0.5", "0.125", "n/a"))}
        for _ in range(min(solutions_per_problem, n_rows - len(rows))):
            mode = rng.choice(("cot", "cot", "tir"))
            rows.append({"expected_answer": answer, **meta, "generation_model": rng.choice(MODELS), "problem": problem,
                         "generated_solution": _solution(rng, mode, answer, words), "inference_mode": mode,
                         "used_in_kaggle": rng.random() < 0.3})
    return rows


def write_omr_shards(folder: str | Path, n_rows: int, shards: int = 2, seed: int = 0, words: int = 60,
                     row_group_size: int = 8192) -> list[Path]:
    """Rows split over `shards` files per split (cot, tir), named as on the Hugging Face hub."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    per = max(1, n_rows // shards)
    for k in range(shards):
        rows = omr_rows(per, seed=seed * 1000 + k, words=words)
        for mode in ("cot", "tir"):
            part = [r for r in rows if r["inference_mode"] == mode]
            path = folder / f"{mode}-{k:05d}-of-{shards:05d}.parquet"
            pq.write_table(pa.Table.from_pylist(part, schema=OMR_SCHEMA), path, row_group_size=row_group_size)
            out.append(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for p in write_omr_shards(args.folder, args.rows, args.shards, args.seed):
        print(p)


if __name__ == "__main__":
    main()
