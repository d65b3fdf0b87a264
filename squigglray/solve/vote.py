"""Weighted voting over solver candidates, plus early-stop rules for best-of-N sampling.

AIMO rule (seed 004, "voting_verifiers"): an answer counts only if it is an integer in
[0, 99999] (weight 1), and counts double when the candidate's code ran successfully
(weight 2). Pure Python: no Ray here, callers gather candidates however they like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Literal

from squigglray.solve.answers import as_aimo_integer, normalize_answer

if TYPE_CHECKING:
    from squigglray.solve.equivalence import EquivalenceChecker

__all__ = [
    "CandidateAnswer",
    "VoteResult",
    "aimo_weight",
    "weighted_vote",
    "leader_is_safe",
    "should_stop",
]

VoteMode = Literal["aimo", "majority", "general"]


@dataclass
class CandidateAnswer:
    """One sampled solution. `index` is the sample number (tie-breaks prefer the earliest);
    `code_ok`: it ran at least one code block and its code runs succeeded. `finished` is
    carried for reporting/filtering by callers; it does not change weights (the extractor
    already refuses to guess answers from truncated traces)."""

    index: int
    answer: str | None
    code_ok: bool = False
    finished: bool = True


@dataclass
class VoteResult:
    """Outcome of a vote. `votes`/`counts` are keyed by canonical answer, best first;
    `margin` = leader weight - runner-up weight (0 when none); `tie_break` names the rule
    that decided between equal top weights ('count' or 'index'), None if weight decided."""

    answer: str | None
    votes: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    n_candidates: int = 0
    n_valid: int = 0
    margin: float = 0.0
    tie_break: str | None = None


def aimo_weight(answer: str | None, code_ok: bool) -> float:
    """Seed rule: 0 unless the answer is an AIMO integer; then 2 with working code, else 1."""
    if as_aimo_integer(answer) is None:
        return 0.0
    return 2.0 if code_ok else 1.0


def _key_and_weight(c: CandidateAnswer, mode: str) -> tuple[str | None, float]:
    if mode == "aimo":
        v = as_aimo_integer(c.answer)
        return (None, 0.0) if v is None else (str(v), aimo_weight(c.answer, c.code_ok))
    norm = normalize_answer(c.answer) if c.answer is not None else ""
    if not norm:
        return None, 0.0
    if mode == "majority":
        return norm, 1.0
    return norm, 2.0 if c.code_ok else 1.0


def weighted_vote(
    cands: Iterable[CandidateAnswer],
    mode: VoteMode = "aimo",
    equivalence: EquivalenceChecker | None = None,
) -> VoteResult:
    """Vote over candidates.

    mode 'aimo': keyed by integer value ("12" == "12.0" == "012"), weights from aimo_weight.
    mode 'majority': each non-empty answer weighs 1, keyed by normalize_answer.
    mode 'general': weight 1 (2 with code_ok); answers are grouped by mathematical
    equivalence against each group's first member (comparing to a representative, not
    transitively), and the group key is that member's normalized text. The checker sees the
    raw answers (math-verify parses them as written); equal normalized text also groups, which
    normalize_answer's rules keep safe. A checker is created and closed per call when none is
    given; pass one to reuse its worker/cache.

    Ties on total weight: more supporting candidates wins, then the answer whose first
    supporting candidate has the smallest index. No answer with weight > 0 -> answer None.
    """
    if mode not in ("aimo", "majority", "general"):
        raise ValueError(f"unknown vote mode {mode!r}")
    cands = sorted(cands, key=lambda c: c.index)
    weights: dict[str, float] = {}
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    raw: dict[str, str] = {}  # group key -> its first member's answer as written

    own_checker = None
    if mode == "general" and equivalence is None:
        from squigglray.solve.equivalence import EquivalenceChecker

        equivalence = own_checker = EquivalenceChecker()
    try:
        for c in cands:
            key, w = _key_and_weight(c, mode)
            if key is None or w <= 0:
                continue
            if mode == "general" and key not in weights:
                key = next((k for k in weights if equivalence.equivalent(raw[k], c.answer)), key)
            raw.setdefault(key, c.answer)
            weights[key] = weights.get(key, 0.0) + w
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, c.index)
    finally:
        if own_checker is not None:
            own_checker.close()

    order = sorted(weights, key=lambda k: (-weights[k], -counts[k], first[k]))
    result = VoteResult(
        answer=order[0] if order else None,
        votes={k: weights[k] for k in order},
        counts={k: counts[k] for k in order},
        n_candidates=len(cands),
        n_valid=sum(counts.values()),
    )
    if len(order) >= 2:
        lead, run = order[0], order[1]
        result.margin = weights[lead] - weights[run]
        if result.margin == 0:
            result.tie_break = "count" if counts[lead] != counts[run] else "index"
    elif order:
        result.margin = weights[order[0]]
    return result


def leader_is_safe(votes: dict[str, float], remaining: int, max_weight: float = 2.0) -> bool:
    """True when the leader can be neither overtaken nor tied even if every remaining
    candidate (each worth at most `max_weight`) backs the runner-up (or a new answer):
    leader - runner_up > remaining * max_weight. An exact tie is not safe. Use
    max_weight=1.0 for 'majority' mode."""
    if not votes:
        return False
    top = sorted(votes.values(), reverse=True)
    runner = top[1] if len(top) > 1 else 0.0
    return top[0] - runner > remaining * max_weight


def should_stop(
    result: VoteResult, remaining: int, agree_k: int | None = None, max_weight: float = 2.0
) -> bool:
    """Stop sampling when the leader is safe (exact: more samples cannot change the
    answer), or, with `agree_k`, once the leader has >= agree_k supporting candidates.
    The agree_k rule is a heuristic: it can stop on an answer later samples would outvote."""
    if result.answer is None:
        return False
    if leader_is_safe(result.votes, remaining, max_weight):
        return True
    return agree_k is not None and result.counts.get(result.answer, 0) >= agree_k
