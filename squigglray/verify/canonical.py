"""Cheap, string-level canonical forms of tool calls, and the cache key over them.

Why strings and not SymPy: the key is computed in the parent, on untrusted input, before any
worker is involved, so it must be fast, bounded, and unable to hang or execute anything. Every
rule here only rewrites text into text that parses to the same thing (whitespace, ``**`` vs
``^``, ``\\cdot``/``\\times``, ``\\left``/``\\right``, ``\\dfrac``, unicode operators, redundant outer
parentheses, the order of a top-level sum or product of plain atoms, the order of a symmetric
pair or of a conjunction of constraints), so two calls share a key only when they are the same
computation. `ToolBox` also sends the worker exactly the canonical arguments, so a key can never
stand for two different results even where a rule is imperfect.

The canonical arguments carry each expression as ``[syntax, text]`` with ``syntax`` resolved
("auto" means LaTeX when the text has a backslash or braces), defaults filled in, and
`answer_equivalent`'s answers as bare LaTeX-ish text (math-verify does its own parsing).
"""

from __future__ import annotations

import hashlib
import json
import re

__all__ = ["DEFAULTS", "EXPR_ARGS", "EXPR_LIST_ARGS", "SYMMETRIC_OPS", "cache_key", "canonical_args", "digest",
           "canonical_expr", "resolve_syntax"]

_VERSION = "squigglray.verify.tools/1"  # bump when an op's meaning changes: old disk entries stop matching
EXPR_ARGS = ("expr", "equation", "a", "b", "claim", "lower", "upper")
EXPR_LIST_ARGS = ("constraints", "assumptions")  # conjunctions: order does not matter
SYMMETRIC_OPS = frozenset({"equivalent", "answer_equivalent"})
DEFAULTS: dict[str, dict] = {
    "evaluate": {"digits": 15}, "diff": {"order": 1},
    "z3_prove": {"assumptions": []}, "z3_counterexample": {"assumptions": []},
}

_UNICODE = str.maketrans({"\u2212": "-", "\u00d7": "*", "\u00b7": "*", "\u22c5": "*", "\u00f7": "/",
                          "\u00a0": " ", "\u2009": " ", "\u202f": " "})
_LATEX_RULES = [
    (re.compile(r"\\(?:left|right)\."), ""),  # invisible delimiters
    (re.compile(r"\\(?:left|right)(?![A-Za-z])"), ""),  # but not \leftarrow, \rightarrow
    (re.compile(r"\\[dt]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\(?:cdot|times)(?![A-Za-z])"), "*"),
    (re.compile(r"\\[,;:! ]"), " "),  # spacing commands
]
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[\w.]")
_ATOM = {"sympy": r"(?:[A-Za-z][A-Za-z0-9_]*|\d+(?:\.\d+)?)", "latex": r"(?:[A-Za-z]+|\d+(?:\.\d+)?)"}
_SUM = {k: re.compile(rf"[+-]?{a}(?:[+-]{a})+") for k, a in _ATOM.items()}
_PRODUCT = {k: re.compile(rf"{a}(?:\*{a})+") for k, a in _ATOM.items()}
_TERM = re.compile(r"[+-]?[^+-]+")
_REL = {"sympy": re.compile(r"<=|>=|==|!=|<|>|="),
        "latex": re.compile(r"<=|>=|!=|<|>|=|\\(?:leq?|geq?|neq?|lt|gt)(?![A-Za-z]) ?")}  # with its space


def resolve_syntax(text: str, syntax: str = "auto") -> str:
    """'latex' or 'sympy' ("auto": LaTeX when the text has a backslash or braces)."""
    if syntax in ("latex", "sympy"):
        return syntax
    return "latex" if any(c in text for c in "\\{}") else "sympy"


def _squeeze(s: str) -> str:
    """Drop whitespace unless it separates two word characters ("x y" is not "xy")."""
    def keep(m: re.Match) -> str:
        a, b = s[m.start() - 1: m.start()], s[m.end(): m.end() + 1]
        return " " if a and b and _WORD.match(a) and _WORD.match(b) else ""
    return _SPACE.sub(keep, s)


def _matching_outer_parens(s: str) -> bool:
    """True when s is '( ... )' with the first parenthesis closed by the last one and no comma
    at the top level inside (a tuple or interval keeps its parentheses)."""
    if len(s) < 2 or s[0] != "(" or s[-1] != ")":
        return False
    depth = 0
    for i, c in enumerate(s):
        depth += c in "([{"
        depth -= c in ")]}"
        if depth == 0 and i < len(s) - 1:
            return False
        if c == "," and depth == 1:
            return False
    return True


def _sort_side(s: str, syntax: str) -> str:
    while _matching_outer_parens(s):
        s = s[1:-1]
    if _SUM[syntax].fullmatch(s):
        terms = sorted(t if t[0] in "+-" else "+" + t for t in _TERM.findall(s))
        return "".join(terms).removeprefix("+")
    if _PRODUCT[syntax].fullmatch(s):
        return "*".join(sorted(s.split("*")))
    return s


def _top_level_relations(s: str, syntax: str) -> list[str] | None:
    """[side, rel, side, ...] split at relation operators outside brackets, or None if none."""
    depth, parts, last, i = 0, [], 0, 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            m = _REL[syntax].match(s, i)
            if m:
                parts += [s[last:i], m.group()]
                last = i = m.end()
                continue
        i += 1
    return parts + [s[last:]] if parts else None


def canonical_expr(s: str, syntax: str = "auto") -> str:
    """Meaning-preserving normal form of one expression (see the module docstring)."""
    syntax = resolve_syntax(s, syntax)
    s = s.translate(_UNICODE)
    if syntax == "latex":
        for pattern, repl in _LATEX_RULES:
            s = pattern.sub(repl, s)
    else:
        s = s.replace("**", "^")
    s = _squeeze(s.strip())
    parts = _top_level_relations(s, syntax)
    if parts is None:
        return _sort_side(s, syntax)
    return "".join(p if k % 2 else _sort_side(p, syntax) for k, p in enumerate(parts))


def _expr_arg(value, syntax: str) -> list[str]:
    text = str(value)  # bounds may be numbers
    resolved = resolve_syntax(text, syntax)
    return [resolved, canonical_expr(text, resolved)]


def canonical_args(op: str, args: dict) -> dict:
    """The arguments as the worker receives them: defaults filled, expressions canonical."""
    args = {**DEFAULTS.get(op, {}), **args}
    syntax = args.pop("syntax", "auto")
    out: dict = {}
    for k, v in args.items():
        if op == "answer_equivalent" and k in ("a", "b"):
            out[k] = canonical_expr(str(v), "latex")
        elif k in EXPR_ARGS:
            out[k] = _expr_arg(v, syntax)
        elif k in EXPR_LIST_ARGS:
            out[k] = sorted(_expr_arg(x, syntax) for x in v)
        else:
            out[k] = v
    if op in SYMMETRIC_OPS and "a" in out and "b" in out:
        out["a"], out["b"] = sorted([out["a"], out["b"]])
    return out


def digest(op: str, canonical: dict) -> str:
    """sha256 hex of (version, op, already canonical args)."""
    blob = json.dumps({"v": _VERSION, "op": op, "args": canonical}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_key(op: str, args: dict) -> str:
    """sha256 hex of (op, canonical_args(op, args))."""
    return digest(op, canonical_args(op, args))
