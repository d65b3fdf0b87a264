"""What the equivalence checker's worker process runs (imported there at start, so loading
math-verify never counts against a call's deadline). math-verify's own timeouts are disabled:
they use signal.alarm; the parent's deadline kills a stuck worker instead.

Why raw strings: math-verify's extraction and LaTeX normalization are what its public test
tables measure (99%+ agreement); pre-normalizing answers ourselves first lost most of that and
made false accepts (a stripped matrix row break, text turned into a product of letters). So the
strings go in as given, with the options of math-verify's own tests (LaTeX with the box first,
then plain expressions; 6-digit float rounding; strict variables; a relation meets a set only the
way round math-verify allows). The only additions keep apart what it would merge (see `equivalent`).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

logging.disable(logging.WARNING)  # "timeout is disabled" warnings: intended here

_CONFIGS = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_VERIFY = dict(float_rounding=6, numeric_precision=15, strict=True, allow_set_relation_comp=False,
               timeout_seconds=None)
# A string with one of these is text with math in it (a model's output, "$x$ and $y$", "$1,000.99"):
# math-verify finds the answer itself. A bare answer ("\frac12", "x = 2", "\$10") has none and is
# wrapped in $...$, except a plain number ("1 000", "1,22"), which its number reader takes as is.
_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")
# One number: "1 000" / "1,000" (groups of three), "1000.99", "1,22" (a decimal comma, as
# math-verify's number reader and its tests read it), ".4". "1, 2" (a list) is not one.
_PLAIN_NUMBER = re.compile(r"^\s*[+-]?(?:\d{1,3}(?:[ ,]\d{3})+(?:\.\d+)?|\d+(?:[.,]\d+)?|\.\d+)\s*%?\s*$")
_WORD_CMD = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mbox|operatorname)\s*\{")


@lru_cache(maxsize=1024)  # a vote compares one answer with every group's representative
def _parse_cached(s: str) -> tuple:
    if _DELIMITED.search(s) or _PLAIN_NUMBER.match(s):
        return tuple(parse(s, _CONFIGS, parsing_timeout=None))
    # A bare answer: as LaTeX (what answers are written in), then as a plain expression.
    wrapped = parse("$" + s + "$", _CONFIGS, parsing_timeout=None)
    return tuple(wrapped or parse(s, _CONFIGS, parsing_timeout=None))


def _parse(s: str) -> list:
    return list(_parse_cached(s))


def _letters_only(p: list) -> str | None:
    """The extracted text when the parsed answer is nothing but letters (a word like "no", "odd",
    "Evelyn", which LaTeX reads as a product of one-letter symbols), else None."""
    if len(p) < 2 or not isinstance(p[-1], str) or isinstance(p[0], str):
        return None
    expr = p[0]
    free = getattr(expr, "free_symbols", None)
    if not free or getattr(expr, "atoms", None) is None:
        return None
    from sympy import Mul, Pow, Symbol

    if not (isinstance(expr, Symbol) or (isinstance(expr, (Mul, Pow)) and all(
            isinstance(a, Symbol) or (a.is_Integer and a > 0) for a in expr.atoms()))):
        return None
    text = re.sub(r"[\s{}]|\\[,;:! ]", "", _WORD_CMD.sub("", p[-1]))
    return text.lower() if len(text) >= 2 and text.isalpha() else None


def _inequality(x) -> bool:
    from sympy import And, Or
    from sympy.core.relational import GreaterThan, LessThan, StrictGreaterThan, StrictLessThan

    if isinstance(x, (And, Or)):
        return all(_inequality(a) for a in x.args)
    return isinstance(x, (GreaterThan, LessThan, StrictGreaterThan, StrictLessThan))


def _set_like(x) -> bool:
    from sympy import Eq, Set

    return isinstance(x, Set) or (isinstance(x, Eq) and isinstance(x.rhs, Set))


def _relation_and_its_set(gold: list, pred: list) -> bool:
    """math-verify compares a relation with a set only one way round (gold "0 < x < 1", pred
    "(0, 1)"; allow_set_relation_comp=False): accept that direction for the symmetric question."""
    return bool(gold and pred) and _inequality(gold[0]) and _set_like(pred[0])


def equivalent(a: str, b: str) -> bool:
    """Equivalent = verify holds in both directions (math-verify's verify(gold, pred) is not
    symmetric), except for an inequality against the set it describes, which math-verify checks
    only with the inequality as gold. Words are compared as words: math-verify reads "no" and "on"
    as n*o and o*n, equal products, so when both answers parse to letters only, the letters must
    match in order."""
    pa, pb = _parse(a), _parse(b)
    if not (pa and pb):
        return False
    ab, ba = verify(pa, pb, **_VERIFY), verify(pb, pa, **_VERIFY)
    if not (ab and ba):
        return (ab and _relation_and_its_set(pa, pb)) or (ba and _relation_and_its_set(pb, pa))
    wa, wb = _letters_only(pa), _letters_only(pb)
    return wa == wb if (wa is not None and wb is not None) else True
