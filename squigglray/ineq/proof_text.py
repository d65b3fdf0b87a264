"""Proofs as text: what a model reads in SFT data and writes at eval time, and its parser.

One line per chain link, compact so that a tiny model's context holds it::

    Proof: a**2 + b**2
    >= 2*sqrt(a**2*b**2) by am_gm(a**2, b**2)
    = 2*a*b by algebra
    Equality: a = b
    QED

A line is ``<rel> <expr> [by <lemma>[(<args>)]]``. Lemma arguments are comma-separated expressions;
lemmas with two or three lists separate them with ``;`` (``titu(a, b; x, y)``, ``weighted_am_gm(x, y; w1, w2)``,
``square_nonneg(a - b, b - c; 1, 1)``, ``schur(a, b, c; 1)``, ``power_mean(a, b; 2, 1)``,
``rearrangement(a, b; a**2, b**2; b**2, a**2)``). ``by algebra`` (or no ``by``) means a plain step that the
verifier checks on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from squigglray.ineq.problems import LEMMAS, Problem, Step

_RELS = (">=", "<=", "=", ">", "<")
_LINE = re.compile(r"^(>=|<=|=|>|<)\s*(.+?)(?:\s+by\s+([a-z_]+)\s*(?:\((.*)\))?)?\s*$")
_LIST_ARGS = {"am_gm": ("terms",), "weighted_am_gm": ("terms", "weights"), "cauchy_schwarz": ("xs", "ys"),
              "titu": ("xs", "ys"), "square_nonneg": ("squares", "coeffs"), "schur": ("terms", "t"),
              "power_mean": ("terms", "exps"), "chebyshev": ("xs", "ys"), "rearrangement": ("xs", "ys", "zs"),
              "holder": ("xs", "ys", "zs")}


class ProofParseError(ValueError):
    pass


@dataclass(frozen=True)
class ParsedProof:
    start: str
    steps: tuple[Step, ...]
    equality_text: str


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def format_args(lemma: str, args: dict) -> str:
    names = _LIST_ARGS.get(lemma)
    if not names:
        return ""
    return "(" + "; ".join(", ".join(str(x) for x in args[n]) for n in names if n in args) + ")"


def format_proof(start: str, steps: tuple[Step, ...] | list[Step], equality_text: str = "") -> str:
    lines = [f"Proof: {start}"]
    for s in steps:
        by = f" by {s.lemma}{format_args(s.lemma, s.args)}" if s.lemma else " by algebra"
        lines.append(f"{s.rel} {s.rhs}{by}")
    if equality_text:
        lines.append(f"Equality: {equality_text}")
    lines.append("QED")
    return "\n".join(lines)


def reference_text(p: Problem) -> str:
    """The reference completion of a proof problem (bound/relation variants end with their answer)."""
    text = format_proof(p.lhs, p.proof, p.equality_text)
    if p.variant != "proof":
        text += f"\nAnswer: {p.answer}"
    return text


def parse_proof(text: str) -> ParsedProof:
    """The first ``Proof:`` block of `text`, up to ``QED`` (or the end). Raises ProofParseError
    naming the line that does not parse."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    try:
        i = next(k for k, ln in enumerate(lines) if ln.startswith("Proof:"))
    except StopIteration:
        raise ProofParseError("no 'Proof:' line") from None
    start = lines[i][len("Proof:"):].strip()
    if not start:
        raise ProofParseError("the 'Proof:' line names no starting expression")
    steps, eq_text = [], ""
    for ln in lines[i + 1:]:
        if not ln:
            continue
        if ln.startswith("QED"):
            break
        if ln.startswith("Equality:"):
            eq_text = ln[len("Equality:"):].strip()
            continue
        if ln.startswith("Answer:"):
            break
        m = _LINE.match(ln)
        if not m:
            raise ProofParseError(f"line {ln!r} is not '<rel> <expr> [by <lemma>(<args>)]'")
        rel, expr, lemma, raw = m.groups()
        if lemma in (None, "algebra"):
            steps.append(Step(rel=rel, rhs=expr.strip()))
            continue
        if lemma not in LEMMAS:
            raise ProofParseError(f"unknown lemma {lemma!r} in line {ln!r}; known: {', '.join(LEMMAS)}")
        args: dict = {}
        names = _LIST_ARGS.get(lemma, ())
        groups = _split_top(raw or "", ";")
        if len(groups) > len(names):
            raise ProofParseError(f"lemma {lemma} takes {len(names)} argument list(s), got {len(groups)} in {ln!r}")
        for name, g in zip(names, groups):
            args[name] = _split_top(g, ",")
        steps.append(Step(rel=rel, rhs=expr.strip(), lemma=lemma, args=args))
    if not steps:
        raise ProofParseError("the proof has no steps")
    return ParsedProof(start=start, steps=tuple(steps), equality_text=eq_text)


def parse_answer(text: str) -> str | None:
    m = re.search(r"^Answer:\s*(.+?)\s*$", text, flags=re.M)
    return m.group(1) if m else None
