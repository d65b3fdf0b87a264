"""The two LLM steps of data generation, as prompts and parsers (the Ray layer runs them at scale).

- generation: a model writes a proof for each problem, prompted with worked examples;
- verification: a *different* model (shared blind spots are the failure the seed guards against)
  reads a problem and a candidate proof after many worked verdicts, correct and incorrect ones, and
  answers ``Verdict: correct`` or ``Verdict: incorrect``.

Incorrect examples for the many-shot prompt come from `corrupt`, which breaks a reference proof
in ways a careless writer does (a wrong constant, a flipped relation, a dropped step, a wrong
lemma argument); the mechanical verifier confirms each one really fails before it is shown.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from squigglray.ineq.problems import Problem
from squigglray.ineq.prompts import few_shot_prompt, render_statement, select_shots
from squigglray.ineq.proof_text import format_proof, reference_text

VERDICT_RE = re.compile(r"verdict\s*[:=]\s*(correct|incorrect)", re.I)
_FLIP = {">=": "<=", "<=": ">=", ">": "<", "<": ">", "=": "="}


def _bump_number(expr: str, rng: random.Random) -> str | None:
    nums = list(re.finditer(r"(?<![\w.*/])\d+(?![\w.])", expr))
    if not nums:
        return None
    m = rng.choice(nums)
    new = int(m.group(0)) + rng.choice([1, 2])
    return expr[: m.start()] + str(new) + expr[m.end():]


def corrupt(p: Problem, rng: random.Random) -> str:
    """A plausible but wrong proof text for `p` (not guaranteed wrong: callers verify)."""
    steps = list(p.proof)
    kind = rng.choice(["constant", "relation", "drop", "argument"])
    i = rng.randrange(len(steps))
    if kind == "constant":
        bumped = _bump_number(steps[i].rhs, rng)
        if bumped:
            steps[i] = replace(steps[i], rhs=bumped)
            return format_proof(p.lhs, steps, p.equality_text)
    if kind == "relation" and steps[i].rel != "=":
        steps[i] = replace(steps[i], rel=_FLIP[steps[i].rel])
        return format_proof(p.lhs, steps, p.equality_text)
    if kind == "drop" and len(steps) > 1:
        del steps[i]
        return format_proof(p.lhs, steps, p.equality_text)
    lemma_steps = [k for k, s in enumerate(steps) if s.lemma and s.args]
    if lemma_steps:
        k = rng.choice(lemma_steps)
        name = next(iter(steps[k].args))
        vals = list(steps[k].args[name])
        vals[rng.randrange(len(vals))] = f"2*({vals[0]})"
        steps[k] = replace(steps[k], args={**steps[k].args, name: vals})
        return format_proof(p.lhs, steps, p.equality_text)
    steps[-1] = replace(steps[-1], rhs=f"2*({steps[-1].rhs})")
    return format_proof(p.lhs, steps, p.equality_text)


def generation_prompt(p: Problem, pool: list[Problem], k: int, seed: int) -> str:
    """The eval harness's few-shot prompt (same rendering, same shot choice), so a generator writes
    proofs in the format the judges parse and SFT trains on."""
    return few_shot_prompt(p, select_shots(p, pool, k, seed))


def verification_prompt(p: Problem, proof_text: str, shots: list[tuple[Problem, str, bool]]) -> str:
    """Many-shot: each shot is (problem, proof text, is it correct)."""
    def block(q: Problem, text: str) -> str:
        return f"{render_statement(q)}{text.strip()}\n"

    parts = [block(q, t) + f"Verdict: {'correct' if ok else 'incorrect'}\n" for q, t, ok in shots]
    return "\n".join(parts + [block(p, proof_text) + "Verdict:"])


def parse_verdict(text: str) -> bool | None:
    """True/False from 'Verdict: correct|incorrect' (or a bare leading word); None if neither."""
    m = VERDICT_RE.search(text)
    if m:
        return m.group(1).lower() == "correct"
    word = text.strip().split()[:1]
    if word and word[0].lower().strip(".,:") in ("correct", "incorrect"):
        return word[0].lower().strip(".,:") == "correct"
    return None


def shot_pool(problems: list[Problem], k: int, seed: int) -> list[Problem]:
    """k problems for the verifier's shared worked verdicts: one per family first, deterministic in seed."""
    rng = random.Random(seed)
    pool = list(problems)
    rng.shuffle(pool)
    by_family: dict[str, list[Problem]] = {}
    for p in pool:
        by_family.setdefault(p.family, []).append(p)
    out: list[Problem] = []
    while len(out) < k and any(by_family.values()):
        for fam in sorted(by_family):
            if by_family[fam] and len(out) < k:
                out.append(by_family[fam].pop())
    return out


def verification_shots(problems: list[Problem], k: int, seed: int, check) -> list[tuple[Problem, str, bool]]:
    """k shots alternating correct (reference) and incorrect (a corruption that `check(problem, text)`
    scores 0, i.e. the mechanical judge really rejects it)."""
    rng = random.Random(seed)
    out: list[tuple[Problem, str, bool]] = []
    for i, p in enumerate(shot_pool(problems, k, seed)):
        if i % 2 == 0:
            out.append((p, reference_text(p), True))
            continue
        for _ in range(5):
            bad = corrupt(p, rng)
            if check(p, bad)["score"] == 0:
                out.append((p, bad, False))
                break
    return out

