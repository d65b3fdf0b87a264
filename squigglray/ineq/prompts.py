"""Prompts for the inequality task: one rendering of a problem shared by SFT data and both eval modes.

The fine-tuned model is evaluated zero-shot on exactly the prompt it was trained on
(``zero_shot_prompt(p) == sft_example(p)["prompt"]``); the base model, which has not learned the
format, sees k worked examples (rendered problem + reference completion) before the same rendering.
A prompt ends with a format cue line and a newline; the completion starts with ``Proof:``::

    Problem: Let $a$, $b$ be real numbers. Prove that $a^{2} + b^{2} \\ge 2 a b$.
    Domain: a, b real
    Claim: a**2 + b**2 >= 2*a*b
    Prove it (one step per line, end with QED).
    Proof: a**2 + b**2
    >= 2*a*b by square_nonneg(a - b; 1)
    Equality: a = b
    QED

Few-shot examples are separated by a blank line, so generation stops on ``STOP`` (the next
``Problem:``) when a base model goes on to invent another example.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from squigglray.ineq.problems import Problem
from squigglray.ineq.proof_text import reference_text

STOP = ["\nProblem:"]  # a model that starts a new example has finished its own
SEPARATOR = "\n\n"  # between worked examples
_DOMAIN = {"positive": "> 0", "nonnegative": ">= 0", "real": "real"}
_CUE = {
    "proof": "Prove it (one step per line, end with QED).",
    "bound": "Prove the bound (one step per line, end with QED), then write 'Answer: <constant>'.",
    "relation": "Prove the relation (one step per line, end with QED), then write 'Answer: <letter>'.",
}
_LABELLED = re.compile(r"^\s*\(?[A-Z]\s*[).:]")


def _constraint_text(constraint: str, problem_id: str) -> str:
    """``a + b + c - 3`` -> ``a + b + c = 3``: the surface as an equation, in the proof's syntax."""
    import sympy as sp

    try:
        expr = sp.sympify(constraint)
    except (sp.SympifyError, SyntaxError, TypeError) as e:
        raise ValueError(f"problem {problem_id}: constraint {constraint!r} does not parse: {e}") from None
    const, _ = expr.as_coeff_Add()
    return f"{sp.sstr(expr - const)} = {sp.sstr(-const)}"


def render_problem(p: Problem) -> str:
    """The problem as the model sees it: `render_statement`, then a cue line for the answer format.
    Ends with a newline; the completion starts with ``Proof:``."""
    return render_statement(p) + _CUE[p.variant] + "\n"


def render_statement(p: Problem) -> str:
    """Statement, domain (and constraint), and for bound/relation variants the question and options;
    without the format cue (the LLM judge shows the problem this way). Ends with a newline."""
    if p.variant not in _CUE:
        raise ValueError(f"problem {p.problem_id}: unknown variant {p.variant!r}; expected one of {list(_CUE)}")
    if p.domain not in _DOMAIN:
        raise ValueError(f"problem {p.problem_id}: unknown domain {p.domain!r}; expected one of {list(_DOMAIN)}")
    if not p.statement.strip():
        raise ValueError(f"problem {p.problem_id}: empty statement")
    domain = f"{', '.join(p.variables)} {_DOMAIN[p.domain]}"
    if p.constraint:
        domain += f" with {_constraint_text(p.constraint, p.problem_id)}"
    statement = " ".join(p.statement.split())
    lines = [f"Problem: {statement}", f"Domain: {domain}", _in_proof_syntax(p)]
    if p.variant != "proof":
        question = " ".join(p.question.split())
        if question and question not in statement:  # generated statements already end with the question
            lines.append(f"Question: {question}")
        if p.variant == "relation":
            if not p.options:
                raise ValueError(f"problem {p.problem_id}: a relation problem needs options")
            if "(A)" not in statement + question:
                opts = [o.strip() if _LABELLED.match(o) else f"({chr(65 + i)}) {o.strip()}"
                        for i, o in enumerate(p.options)]
                lines.append("Options: " + " ".join(opts))
    return "\n".join(lines) + "\n"


def _in_proof_syntax(p: Problem) -> str:
    """The sides in the proof language, so a model copies rather than translates LaTeX; nothing that
    gives away a bound's constant or a relation's answer."""
    if p.variant == "proof":
        return f"Claim: {p.lhs} {p.rel} {p.rhs}"
    if p.variant == "relation":
        return f"Compare: L = {p.lhs}; R = {p.rhs}"
    return f"Start: {p.lhs}"


def zero_shot_prompt(p: Problem) -> str:
    """The target alone, exactly as in SFT data, so the fine-tuned model sees its training format."""
    return render_problem(p)


def sft_example(p: Problem) -> dict[str, str]:
    """One SFT pair: the zero-shot prompt and the reference completion (which starts with ``Proof:``)."""
    return {"prompt": zero_shot_prompt(p), "completion": reference_text(p)}


def worked_example(p: Problem) -> str:
    return render_problem(p) + reference_text(p)


def few_shot_prompt(p: Problem, shots: list[Problem], max_prompt_chars: int | None = None) -> str:
    """Worked examples in the given order, then the target's zero-shot prompt (which the prompt ends
    with). Under `max_prompt_chars`, shots are dropped from the end until it fits (the target stays
    even if it alone is over). With no shots this is the zero-shot prompt."""
    return _assemble(p, _fit(p, list(shots), max_prompt_chars))


def _assemble(p: Problem, shots: list[Problem]) -> str:
    return "".join(worked_example(s) + SEPARATOR for s in shots) + zero_shot_prompt(p)


def _fit(p: Problem, shots: list[Problem], max_prompt_chars: int | None) -> list[Problem]:
    if max_prompt_chars is None:
        return shots
    while shots and len(_assemble(p, shots)) > max_prompt_chars:
        shots.pop()
    return shots


def select_shots(p: Problem, pool: list[Problem], k: int, seed: int = 0,
                 max_prompt_chars: int | None = None) -> list[Problem]:
    """Up to k shots from `pool` (the train split), best first: same family and variant, same family,
    same variant, then the rest, in a seeded order within each tier. The target itself (same id or
    same claim) is never a shot. Under `max_prompt_chars`, a shot that would overflow is skipped and
    the next candidate tried, so the count adapts to the budget (it may end below k, even at 0)."""
    if k < 0:
        raise ValueError(f"k={k} must be >= 0")
    key = p.claim_key()
    cands = [q for q in pool if q.problem_id != p.problem_id and q.claim_key() != key]
    rng = random.Random(f"{seed}:{p.problem_id}")  # per target, so adding a problem reorders nothing else
    rng.shuffle(cands)
    cands.sort(key=lambda q: (q.family != p.family, q.variant != p.variant))  # stable: keeps the shuffle
    chosen: list[Problem] = []
    size = len(zero_shot_prompt(p))
    for q in cands:
        if len(chosen) == k:
            break
        extra = len(worked_example(q)) + len(SEPARATOR)
        if max_prompt_chars is not None and size + extra > max_prompt_chars:
            continue
        chosen.append(q)
        size += extra
    return chosen


@dataclass(frozen=True)
class BuiltPrompt:
    """A prompt and how it was made (recorded per eval row)."""

    text: str
    mode: str
    shot_ids: tuple[str, ...]
    over_budget: bool  # the target alone is longer than max_prompt_chars

    @property
    def shots_used(self) -> int:
        return len(self.shot_ids)


MODES = ("few_shot", "zero_shot")


def build_prompt(p: Problem, mode: str, pool: list[Problem] = (), k: int = 3, seed: int = 0,
                 max_prompt_chars: int | None = None) -> BuiltPrompt:
    """The eval prompt of `p` in `mode`; few-shot shots are chosen by `select_shots`."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    shots = select_shots(p, list(pool), k, seed, max_prompt_chars) if mode == "few_shot" else []
    text = _assemble(p, shots)
    over = max_prompt_chars is not None and len(text) > max_prompt_chars
    return BuiltPrompt(text, mode, tuple(s.problem_id for s in shots), over)
