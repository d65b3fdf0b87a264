"""Final-answer extraction and normalisation for solver candidates; the one parser of boxed
answers (`last_box`), which the held-out evaluation reads the project's traces with too.

Kept pure (stdlib only) so voting runs anywhere: a driver, a Ray actor, a notebook.
AIMO answers are integers in [0, 99999]; `as_aimo_integer` is the gate for that rule.
"""

from __future__ import annotations

import re

__all__ = ["extract_answer", "extract_boxed", "last_box", "normalize_answer", "as_aimo_integer", "is_correct",
           "AIMO_MIN", "AIMO_MAX"]

AIMO_MIN, AIMO_MAX = 0, 99999

_BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_TRACE_BOX = re.compile(r"\\boxed(?=\{)")  # the trace format's own box, squigglray.families.trace.BOXED
_BOX_SPACE_ARG = re.compile(r"[ \t]+([^\s${}]+)")
# Plain fallbacks, tried in this order; within one the LAST occurrence wins.
_FALLBACKS = [
    re.compile(r"final\s+answer\s*(?:is|:)\s*(?:\*\*)?\s*:?\s*", re.I),
    re.compile(r"the\s+answer\s+is\s*(?:\*\*)?\s*:?\s*", re.I),
    re.compile(r"answer\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.I),
]


def balanced_group(text: str, open_at: int) -> str | None:
    """Content of the brace group opening at `text[open_at] == '{'`; None if it is never closed."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


def last_box(text: str, trace_format: bool = False) -> tuple[int | None, str | None]:
    """(where the last box ends, its content stripped): the one parser of boxed answers.

    A model's answer (the default): the last ``\\boxed`` / ``\\fbox`` command; its argument is a
    brace group after optional spaces (nested braces balanced) or a bare token (``\\boxed 5``, TeX
    allows it); an empty box gives None. `trace_format`: the project's own traces
    (squigglray.families.trace, "The answer is \\boxed{X}."): only ``\\boxed{`` exactly, and an empty
    box gives '' (a box was written: the held-out evaluation counts the trace as well-formed).

    (None, None) without a box. An unclosed last box ends at the end of the text and gives None:
    the trace was cut mid-answer, and an earlier box was an answer the model moved past."""
    matches = list((_TRACE_BOX if trace_format else _BOX_CMD).finditer(text))
    if not matches:
        return None, None
    end = matches[-1].end()
    rest = text[end:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        open_at = end + len(rest) - len(stripped)
        inner = balanced_group(text, open_at)
        if inner is None:
            return len(text), None
        return open_at + len(inner) + 2, inner.strip() if trace_format else inner.strip() or None
    m = _BOX_SPACE_ARG.match(rest)  # never in trace_format: its box is followed by "{"
    return (end + m.end(), m.group(1).strip()) if m else (end, None)


def extract_boxed(text: str) -> str | None:
    """The answer a trace of the project's format boxed (`last_box(trace_format=True)`): the content
    of the last ``\\boxed{...}``, stripped; None without one or when it is never closed."""
    return last_box(text, trace_format=True)[1]


_MATH_GROUPS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_IS = re.compile(r"\bis\b", re.I)
_STARTS_AS_ANSWER = re.compile(r"[\d+\-\\(\[{]")


def _math_group(tail: str) -> str | None:
    """Content of the $..$ / \\(..\\) / \\[..\\] group `tail` starts with, else None."""
    for open_, close in _MATH_GROUPS:
        if tail.startswith(open_):
            j = tail.find(close, len(open_))
            if j > 0:
                return tail[len(open_) : j].strip() or None
    return None


def _sentence(tail: str) -> str | None:
    """Answer text right after a phrase: a leading $..$ / \\(..\\) group; else the sentence (up
    to a period followed by space/end, '!', '?', newline). A sentence that starts with a word
    ("The largest $n$ is 34.") gives what follows its last "is" ("34"), or, without an "is",
    its last math group; one that starts like an answer ("42 ways") is kept whole."""
    tail = tail.lstrip()
    group = _math_group(tail)
    if group is not None:
        return group
    m = re.match(r"(.*?)(?:\.(?=\s|$)|[!?\n]|$)", tail)
    out = m.group(1).strip().strip("*").strip() if m else ""
    if out and not _STARTS_AS_ANSWER.match(out):
        hits = list(_IS.finditer(out))
        if hits:
            return _sentence(out[hits[-1].end() :])
        groups = re.findall(r"\$([^$]+)\$", out)
        if groups:
            return groups[-1].strip() or None
    out = out.replace("$", "").strip()
    return out or None


def _last_phrase(text: str, pat: re.Pattern, after: int = 0) -> str | None:
    """Answer of the last occurrence of `pat` starting at or after `after`, else None."""
    hits = [h for h in pat.finditer(text) if h.start() >= after]
    return _sentence(text[hits[-1].end() :]) if hits else None


def extract_answer(text: str | None) -> str | None:
    """The candidate's final answer as raw (stripped, un-normalised) text, or None.

    Precedence (first that applies):

    1. a "final answer is X" / "final answer: X" statement that comes AFTER the last box (models
       box intermediate results, then state the answer: "\\boxed{255} ... The final answer is
       $10,455$" gives "10,455"); its last occurrence;
    2. the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces balanced) or ``\\boxed 5``
       space form; an unclosed last box gives None (a trace cut mid-answer);
    3. without any box, the plain phrases "final answer is X", "the answer is X", "answer: X"
       in that order (the last occurrence of the first phrase that appears).

    X is a leading $...$ group, else the sentence (see `_sentence`: "Final Answer: The largest
    $n$ is 34." gives "34"). Otherwise None. We deliberately never guess "the last number in the
    text": that turns unfinished or rambling traces into votes and rewards truncation.
    """
    if not text:
        return None
    box_end, boxed = last_box(text)
    if box_end is not None:
        stated = _last_phrase(text, _FALLBACKS[0], after=box_end)
        return stated if stated is not None else boxed
    for pat in _FALLBACKS:
        if pat.search(text):
            return _last_phrase(text, pat)
    return None


_WRAP = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|boxed|fbox)\s*\{")
# A thin space / \! between digit groups of three is a thousands separator ("1\,000"); a comma
# followed by \! ("32,\! 349", MATH's style) is one too. Nothing else joins digits.
_DIGIT_GAP = re.compile(r"(?<=\d)(?:\\[,!]|[\u2009\u202f\u2006\u2005\u00a0])(?=\d{3}(?!\d))")
_COMMA_BANG = re.compile(r"(?<=\d),\\!\s*(?=\d{3}(?!\d))")
# A matched pair of backslashes is a LaTeX row break and stays; \! goes; other spacing is a space.
_TEX_SPACE = re.compile(r"\\\\|\\[!,;: ]|[\u00a0\u2009\u202f\u2006\u2005]")
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


def _tex_space(m: re.Match) -> str:
    t = m.group()
    return t if t == "\\\\" else "" if t == "\\!" else " "


def _constant(s: str) -> bool:
    """No variable in `s` (letters of LaTeX command names like \\frac, \\pi do not count)."""
    return not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", s))


def normalize_answer(s: str | None) -> str:
    """Conservative canonical text of an answer, for keying votes and for `is_correct` on
    non-integer answers (not a CAS: the EquivalenceChecker does mathematics).

    Every rule must keep two different answers apart (tests/test_answer_judging.py checks the
    known traps). Strips: surrounding $ / \\( \\) / \\[ \\], \\left / \\right, \\text{} /
    \\mathrm{} (and \\textbf, \\mathbf, \\boxed, \\fbox) wrappers, \\! and degree signs, a
    trailing period; a leading single-variable assignment ("x =", "n_1 =") only when what follows
    is a constant ("x = \\frac12" -> "\\frac12", but "y = 2x+1" stays whole, so it never equals
    "x = 2x+1"); thousands separators in a number that is the whole answer ("1,000", "1{,}000",
    "1\\,000", "32,\\! 349"; "(1,2)" and "1,2" untouched). \\, \\; \\: and \\<space> become spaces,
    whitespace runs collapse to one space; a LaTeX row break \\\\ is kept (dropping it made the
    matrix rows "2 \\\\ 7" and "2 \\\\ 9" look alike to later steps).
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
        s = _COMMA_BANG.sub(",", _DIGIT_GAP.sub("", s))
        s = _TEX_SPACE.sub(_tex_space, s)
        s = _DEGREE.sub("", s)
        s = s.replace("{,}", ",")
        s = " ".join(s.split())
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
        m = _ASSIGN.match(s)
        if m and m.end() < len(s) and "=" not in s[m.end() :] and _constant(s[m.end() :]):
            s = s[m.end() :]
        if _THOUSANDS.match(s):
            s = s.replace(",", "")
    return s


# An AIMO integer, as answers write it: optional currency sign, digits (thousands groups allowed),
# an optional ".0", then optionally a unit or words after a space ("34 apples", "42 ways",
# "12 cm^2"). The tail is checked word by word by `_unit_tail`.
_AIMO_FORM = re.compile(
    r"^(?:\\?\$\s*)?\+?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.0*)?"
    r"(?P<tail>\s*\\?%|\s+[A-Za-z][A-Za-z .'/-]*(?:\^\{?[23]\}?|[\u00b2\u00b3])?)?\s*(?:\\?\$)?$"
)
# Words that change the number or join another one: "3 or five", "2 pi", "5 squared", "3 dozen".
# A tail with any of these is not a unit, so the answer is not an integer. A percent sign or word
# is a unit here, as math-verify (general mode) also accepts "28\%" for 28.
_NOT_UNITS = frozenset(
    "or and to plus minus times over divided by of pi squared cubed "
    "dozen hundred thousand million billion trillion half halves third thirds quarter quarters "
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
    "sqrt factorial mod modulo".split()
)


def _unit_tail(tail: str | None) -> bool:
    """True for no tail, or units/words of two letters or more, none of them in _NOT_UNITS
    ("3 x" is not 3 apples: a one-letter word reads as a variable)."""
    if not tail:
        return True
    words = re.findall(r"[A-Za-z]+", tail)
    return all(len(w) >= 2 and w.lower().rstrip("s") not in _NOT_UNITS and w.lower() not in _NOT_UNITS
               for w in words)


def as_aimo_integer(s: str | None) -> int | None:
    """Integer value of an answer if it is a valid AIMO answer (an integer in [0, 99999]).

    Accepts "12", "012", "+12", "12.0", "1,000", "32,\\! 349", "1{,}000", "\\boxed{7}", "$7$",
    "\\$7", "n = 7", "42\\text{ ways}", "34 apples" (via normalize_answer). In this mode the number
    is what counts: "3 apples" and "3 pears" are both 3 (the question fixes the unit; the vote is
    over numbers; "28\\%" is 28, as math-verify also reads it for a percent question). None for
    negatives, non-integers ("12.5", "1/2", "\\frac{4}{2}": no CAS here, an answer written as a
    fraction is not in AIMO form), lists ("1,2"), values > 99999, numbers with modifying words
    ("3 dozen", "2 pi") and text.
    """
    if s is None:
        return None
    t = normalize_answer(s)
    a = _ASSIGN.match(t)  # "n = 34 apples": normalize_answer keeps non-constant right sides
    if a and "=" not in t[a.end() :]:
        t = t[a.end() :]
    m = _AIMO_FORM.match(t)
    if not m or not _unit_tail(m.group("tail")):
        return None
    digits = m.group("int").replace(",", "").lstrip("0") or "0"
    if len(digits) > 5:  # also avoids int() on absurdly long digit strings
        return None
    v = int(digits)
    return v if AIMO_MIN <= v <= AIMO_MAX else None


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def number_count(s: str | None) -> int:
    """How many numbers an answer writes, once normalized ("1,000" and "x = 7" write one)."""
    return len(_NUMBER.findall(normalize_answer(s))) if s else 0


def is_correct(answer: str | None, gold) -> bool:
    """Both AIMO integers and equal (so "34 apples" is right for 34); otherwise equal normalized
    text (non-empty). No mathematics here: "y = 2x+1" is not "x = 2x+1", and "1/2" is not
    "0.5" either (use the EquivalenceChecker for that)."""
    if answer is None or gold is None:
        return False
    a, g = as_aimo_integer(str(answer)), as_aimo_integer(str(gold))
    if a is not None and g is not None:
        return a == g
    na = normalize_answer(str(answer))
    return bool(na) and na == normalize_answer(str(gold))
