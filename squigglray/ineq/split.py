"""Train/test split of inequality problems: deterministic, stratified by family, no leaks.

A leak here is the same claim up to variable names (``a**2 + b**2 >= 2*a*b`` and
``x**2 + y**2 >= 2*x*y``), or the same claim asked as another variant (proof, best constant,
relation, with sides swapped). So problems are grouped by a canonical claim (variables renamed in
order of first appearance, the relation turned to >= or >), every group goes to one side, and each
family's groups are ranked by sha256(seed, group) and the first `test_fraction` go to test. Then
train items whose canonical claim text is a near-duplicate (word 3-gram Jaccard >= threshold,
the slice builder's MinHash index) of a test item are dropped and listed with the match.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from squigglray.data.dedup import ContaminationGuard
from squigglray.ineq.problems import Problem

_SWAP = {"<=": ">=", "<": ">"}


def _seeded_rank(seed: int, key) -> str:
    """Sort key of `key` under `seed`: sha256 of "seed:key" (seeded, independent of input order)."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def canonical_claim(p: Problem) -> str:
    """The claim with variables renamed v0, v1, ... by first appearance and oriented to >= / >."""
    lhs, rel, rhs = p.lhs, p.rel, p.rhs
    if rel in _SWAP:
        lhs, rhs, rel = rhs, lhs, _SWAP[rel]
    text = f"{lhs} {rel} {rhs} | {p.constraint or ''} | {p.domain}"
    order: dict[str, str] = {}
    for m in re.finditer(r"[A-Za-z_]\w*", text):
        name = m.group(0)
        if name in p.variables and name not in order:
            order[name] = f"v{len(order)}"
    return re.sub(r"[A-Za-z_]\w*", lambda m: order.get(m.group(0), m.group(0)), text)


def group_key(p: Problem) -> str:
    return hashlib.sha256(canonical_claim(p).encode()).hexdigest()[:16]


@dataclass
class Split:
    train: list[Problem]
    test: list[Problem]
    removed: list[dict] = field(default_factory=list)  # train items dropped as near-duplicates of test

    def summary(self) -> dict:
        fams = sorted({p.family for p in self.train + self.test})
        return {"train": len(self.train), "test": len(self.test), "removed": len(self.removed),
                "per_family": {f: {"train": sum(p.family == f for p in self.train),
                                   "test": sum(p.family == f for p in self.test)} for f in fams}}


def split_problems(problems: list[Problem], test_fraction: float = 0.2, seed: int = 0,
                   near_dup_threshold: float | None = 0.6) -> Split:
    """Deterministic in (the set of problems, test_fraction, seed, threshold), not in their order."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    groups: dict[str, list[Problem]] = {}
    for p in sorted(problems, key=lambda q: q.problem_id):
        groups.setdefault(group_key(p), []).append(p)
    by_family: dict[str, list[str]] = {}
    for key, members in groups.items():
        by_family.setdefault(members[0].family, []).append(key)
    test_keys: set[str] = set()
    for family, keys in sorted(by_family.items()):
        ranked = sorted(keys, key=lambda k: _seeded_rank(seed, k))
        n_test = max(1, round(len(ranked) * test_fraction)) if len(ranked) > 1 else 0
        test_keys.update(ranked[:n_test])
    test = [p for k in sorted(test_keys) for p in groups[k]]
    train = [p for k in sorted(set(groups) - test_keys) for p in groups[k]]
    removed: list[dict] = []
    if near_dup_threshold is not None and test:
        guard = ContaminationGuard(threshold=near_dup_threshold, seed=seed)
        for p in test:
            guard.protect(p.problem_id, canonical_claim(p))
        kept = []
        for p in train:
            hit = guard.check(p.problem_id, canonical_claim(p))
            if hit is None:
                kept.append(p)
            else:
                removed.append({"problem_id": p.problem_id, "family": p.family, "reason": hit.reason,
                                "matched": hit.matched_key, "similarity": round(hit.similarity, 4)})
        train = kept
    return Split(train=sorted(train, key=lambda q: q.problem_id), test=sorted(test, key=lambda q: q.problem_id),
                 removed=removed)


def _get(item, name: str):
    return item[name] if isinstance(item, dict) else getattr(item, name)


def stratified_order(items: list, seed: int = 0, family: str = "family", ident: str = "problem_id") -> list:
    """`items` (Problems or dicts) in the order a learning curve takes them: every prefix is stratified
    by family and the prefixes are nested.

    Within a family, items are ranked by sha256(seed, id) (seeded, independent of input order). The
    families are then interleaved so that in every prefix of size n each family's count c_f stays
    strictly within 1 of its quota n * N_f / N (its share of `items`): the k-th item of family f has
    the window R_k = floor((k-1) N / N_f) + 1 <= position <= D_k = ceil(k N / N_f), and positions are
    filled earliest-deadline-first among the released items. Such a sequence exists (Tijdeman 1980,
    the chairman assignment problem) and EDF is optimal for unit jobs with release times and deadlines,
    so every window is met. Ties go by a seeded hash of the family name."""
    by_family: dict[str, list] = {}
    for it in items:
        by_family.setdefault(str(_get(it, family)), []).append(it)
    ranked = {f: sorted(m, key=lambda it: _seeded_rank(seed, _get(it, ident)))
              for f, m in by_family.items()}
    tie = {f: _seeded_rank(seed, f"family:{f}") for f in ranked}
    total = len(items)
    taken = {f: 0 for f in ranked}
    out: list = []
    for pos in range(1, total + 1):
        best, best_key = None, None
        for f, members in ranked.items():
            k, n_f = taken[f] + 1, len(members)
            if k > n_f:
                continue
            released = (k - 1) * total // n_f + 1 <= pos
            key = (not released, -(-k * total // n_f), tie[f])
            if best_key is None or key < best_key:
                best, best_key = f, key
        out.append(ranked[best][taken[best]])
        taken[best] += 1
    return out


def stratified_subset(items: list, n: int, seed: int = 0, family: str = "family", ident: str = "problem_id") -> list:
    """The first `n` items of `stratified_order`: stratified by family, seeded, nested in n."""
    if not 0 <= n <= len(items):
        raise ValueError(f"subset size {n} is not in [0, {len(items)}]")
    return stratified_order(items, seed, family, ident)[:n]
