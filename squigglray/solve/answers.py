"""Final-answer extraction and normalisation for solver candidates.

Kept pure (stdlib only) so voting runs anywhere: a driver, a Ray actor, a notebook.
AIMO answers are integers in [0, 99999]; `as_aimo_integer` is the gate for that rule.
"""

from __future__ import annotations

import re

from squigglray.families.trace import balanced_group

__all__ = ["extract_answer", "normalize_answer", "as_aimo_integer", "is_correct", "AIMO_MIN", "AIMO_MAX"]

AIMO_MIN, AIMO_MAX = 0, 99999

_BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BOX_SPACE_ARG = re.compile(r"[ \t]+([^\s${}]+)")
# Plain fallbacks, tried in this order; within one the LAST occurrence wins.
_FALLBACKS = [
    re.compile(r"final\s+answer\s*(?:is|:)\s*(?:\*\*)?\s*:?\s*", re.I),
    re.compile(r"the\s+answer\s+is\s*(?:\*\*)?\s*:?\s*", re.I),
    re.compile(r"answer\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.I),
]


def _extract_boxed(text: str) -> tuple[bool, str | None]:
    """(found a box command, content of the last one). An unclosed last box yields None:
    the trace was cut mid-answer, and an earlier box was an answer the model moved past."""
    matches = list(_BOX_CMD.finditer(text))
    if not matches:
        return False, None
    end = matches[-1].end()
    rest = text[end:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        inner = balanced_group(text, end + len(rest) - len(stripped))
        return True, (inner.strip() or None) if inner is not None else None
    m = _BOX_SPACE_ARG.match(rest)  # "\boxed 5" (TeX allows a bare token argument)
    return True, (m.group(1).strip() if m else None)


def _sentence(tail: str) -> str | None:
    """Answer text right after a fallback phrase: a $..$ / \\(..\\) group, else up to the
    end of the sentence (a period followed by space/end, '!', '?', newline)."""
    tail = tail.lstrip()
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if tail.startswith(open_):
            j = tail.find(close, len(open_))
            if j > 0:
                return tail[len(open_) : j].strip() or None
    m = re.match(r"(.*?)(?:\.(?=\s|$)|[!?\n]|$)", tail)
    out = m.group(1).strip().strip("*").strip() if m else ""
    out = out.replace("$", "").strip()
    return out or None


def extract_answer(text: str | None) -> str | None:
    """The candidate's final answer as raw (stripped, un-normalised) text, or None.

    Order: the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces balanced) or
    ``\\boxed 5`` space form; an unclosed last box gives None. Without any box, the plain
    phrases "final answer is X", "the answer is X", "answer: X" are tried in that order
    (last occurrence of the first phrase that appears; X runs to the end of the sentence or
    line, $...$ stripped). Otherwise None. We deliberately never guess "the last number in
    the text": that turns unfinished or rambling traces into votes and rewards truncation.
    """
    if not text:
        return None
    found, boxed = _extract_boxed(text)
    if found:
        return boxed
    for pat in _FALLBACKS:
        hits = list(pat.finditer(text))
        if hits:
            return _sentence(text[hits[-1].end() :])
    return None


_WRAP = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|boxed|fbox)\s*\{")
_SPACES = re.compile(r"\\[!,;: ]|[\u00a0\u2009\u202f\u2006\u2005]")
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![A-Za-z])")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_ASSIGN = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def _unwrap(s: str) -> str:
    """Replace every \\text{X} / \\mathrm{X} / ... with X (balanced braces)."""
    while True:
        m = _WRAP.search(s)
        if not m:
            return s
        inner = balanced_group(s, m.end() - 1)
        if inner is None:
            return s
        s = s[: m.start()] + inner + s[m.end() + len(inner) + 1 :]


def normalize_answer(s: str | None) -> str:
    """Conservative canonical text of an answer, for keying votes (not a CAS).

    Strips: surrounding $ / \\( \\) / \\[ \\], \\left / \\right, \\text{} / \\mathrm{}
    (and \\textbf, \\mathbf, \\boxed, \\fbox) wrappers, \\! \\, \\; \\: and unicode thin
    spaces, degree signs, a trailing period, a leading single-variable assignment
    ("x =", "n_1 ="; only when no other '=' follows), and thousands separators in a plain
    number ("1,000" / "1{,}000" -> "1000"; "(1,2)" and "1,2" untouched). Whitespace runs
    collapse to one space. Anything smarter belongs to the EquivalenceChecker.
    """
    if s is None:
        return ""
    s = str(s).strip()
    prev = None
    while s != prev:
        prev = s
        for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(open_) + len(close) and s.startswith(open_) and s.endswith(close):
                s = s[len(open_) : len(s) - len(close)].strip()
        s = _unwrap(s)
        s = _LEFT_RIGHT.sub("", s)
        s = _SPACES.sub("", s)
        s = _DEGREE.sub("", s)
        s = s.replace("{,}", ",")
        s = " ".join(s.split())
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
        m = _ASSIGN.match(s)
        if m and "=" not in s[m.end() :] and m.end() < len(s):
            s = s[m.end() :]
        if _THOUSANDS.match(s):
            s = s.replace(",", "")
    return s


_PLAIN_INT = re.compile(r"^\+?(\d+)(?:\.0*)?$")


def as_aimo_integer(s: str | None) -> int | None:
    """Integer value of an answer if it is a valid AIMO answer (an integer in [0, 99999]).

    Accepts "12", "012", "+12", "12.0", "1,000", "\\boxed{7}" (via normalize_answer).
    None for negatives, non-integers ("12.5", "1/2", "\\frac{4}{2}": no CAS here, an
    answer written as a fraction is not in AIMO form), values > 99999, and text.
    """
    if s is None:
        return None
    m = _PLAIN_INT.match(normalize_answer(s))
    if not m:
        return None
    digits = m.group(1).lstrip("0") or "0"
    if len(digits) > 5:  # also avoids int() on absurdly long digit strings
        return None
    v = int(digits)
    return v if AIMO_MIN <= v <= AIMO_MAX else None


def is_correct(answer: str | None, gold) -> bool:
    """Both AIMO integers and equal; otherwise equal normalized text (non-empty)."""
    if answer is None or gold is None:
        return False
    a, g = as_aimo_integer(str(answer)), as_aimo_integer(str(gold))
    if a is not None and g is not None:
        return a == g
    na = normalize_answer(str(answer))
    return bool(na) and na == normalize_answer(str(gold))
