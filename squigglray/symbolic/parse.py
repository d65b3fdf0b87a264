"""The one safe parser: expression text in Python/SymPy syntax -> SymPy, without ``eval``.

The text may come from a model, so it is never evaluated as Python. It is parsed with Python's
``ast`` and only whitelisted nodes are turned into SymPy objects, bottom-up and without recursion
(a 2,000-term sum is fine): numbers, names, ``+ - * / **`` (``^`` is ``**``), unary ``-``/``+``,
calls of the grammar's functions with positional arguments; with ``relations`` also comparisons
(``=`` is ``==``), ``and``/``or``/``not``, ``&``/``|``/``~``. Everything else is refused:
attributes (``x.__class__``), subscripts, lambdas, comprehensions, strings, keyword arguments,
``//`` and ``%``, calls of anything but a known function's name, names starting with ``_``, and
names the grammar does not know. Numeric literals are decimal only (``12``, ``1.5``, ``.5``,
``1e-3``; no ``0x10``, ``1_000`` or ``1j``).

Limits (`guard.Limits`): the text's length, the number of expression nodes,
the size of each literal, and -- through `guard.apply`, before SymPy computes anything -- constant
powers and factorials too large to compute. Every refusal raises `ExpressionError` (`TooLarge`
for a limit), whose message names the offending piece but not the whole text: callers add that.

A `Grammar` says what a caller accepts; the three users differ only there:

- the inequality verifier: its variables (by name, with assumptions) and a few real functions, no
  other names, exact decimals (``0.1`` is ``1/10``), no relations, no implicit multiplication;
- the tools: any identifier is a plain Symbol, many functions and constants, relations and logic,
  implicit multiplication (``2x``, ``)(``), floats as SymPy Floats, larger numbers and exponents;
- the data rules: any identifier is a Symbol, nothing evaluated (``evaluate=False``, as
  ``parse_expr(..., evaluate=False)`` builds it), so neither guard nor computation is needed.
"""

from __future__ import annotations

import ast
import operator
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping

import sympy as sp

from squigglray.symbolic.guard import ExpressionError, Limits, TooLarge, apply, check_literal

__all__ = ["Grammar", "parse"]

_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_LINE_END = re.compile(r"\r\n?|\n")  # Python's line ends (not str.splitlines' many)
_SINGLE_EQ = re.compile(r"(?<![<>=!])=(?!=)")
_IMPLICIT = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?)(?![eE][+-]?\d)(?=[A-Za-z_(])"
                       r"|(\))(?=[\d(]|(?!(?:and|or|not|in|is)\b)[A-Za-z_])")
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY = (ast.USub, ast.UAdd)
_LOGIC_BIN = {ast.BitAnd: sp.And, ast.BitOr: sp.Or}
_LOGIC_UNARY = (ast.Not, ast.Invert)
_COMPARE = {ast.Eq: sp.Eq, ast.NotEq: sp.Ne, ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge}


@dataclass(frozen=True)
class Grammar:
    """What `parse` accepts beyond numbers and arithmetic.

    `functions`: name -> SymPy callable, callable by name only. `constants`: name -> value.
    `free_names`: any other identifier (not starting with ``_``) becomes a plain Symbol; without
    it, only `constants` and the ``names`` given to `parse` are allowed. `relations`: comparisons
    and logic. `implicit_mul`: ``2x`` and ``(a)(b)`` multiply. `exact_decimals`: ``0.1`` is the
    Rational 1/10 (else a Float). `evaluate`: False builds Add/Mul/Pow unevaluated, as
    ``parse_expr(..., evaluate=False)`` does (and computes nothing, so the power guard is off).
    `floor_div`: ``a // b`` is SymPy's floor division, computed as ``parse_expr`` left it (the data
    rules keep their old matches with it; elsewhere ``//`` is refused).
    """

    functions: Mapping[str, Callable] = field(default_factory=dict)
    constants: Mapping[str, sp.Basic] = field(default_factory=dict)
    free_names: bool = False
    relations: bool = False
    implicit_mul: bool = False
    exact_decimals: bool = False
    evaluate: bool = True
    floor_div: bool = False
    limits: Limits = Limits()


def parse(text: str, grammar: Grammar, names: Mapping[str, sp.Basic] | None = None) -> sp.Basic:
    """`text` -> a SymPy object under `grammar`; `names` (e.g. the variables) shadow its constants.
    Raises ExpressionError (TooLarge for a limit)."""
    limits = grammar.limits
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("empty expression")
    if len(text) > limits.max_chars:
        raise TooLarge(f"the text is too long ({len(text)} characters, limit {limits.max_chars})")
    src = text.strip().replace("^", "**")
    if grammar.relations:
        src = _SINGLE_EQ.sub("==", src)
    if grammar.implicit_mul:
        src = _IMPLICIT.sub(lambda m: (m.group(1) or m.group(2)) + "*", src)  # 2x -> 2*x, )( -> )*(
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning on odd literals: the text is refused or fine
            warnings.simplefilter("ignore")
            tree = ast.parse(src, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ExpressionError(f"not a valid expression: {getattr(e, 'msg', None) or type(e).__name__}") from None
    return _Builder(grammar, dict(names or {}), src)(tree.body)


class _Builder:
    """A checked syntax tree -> SymPy, post-order with an explicit stack."""

    def __init__(self, grammar: Grammar, names: dict, src: str):
        self.g, self.names = grammar, names
        self.lines = [line.encode() for line in _LINE_END.split(src)]  # ast's offsets count UTF-8 bytes

    def __call__(self, root: ast.AST):
        self._check(root)
        done: list = []
        todo: list = [(root, False)]
        while todo:
            node, ready = todo.pop()
            kids = self._children(node)
            if not ready:
                todo.append((node, True))
                todo.extend((k, False) for k in reversed(kids))
                continue
            args = done[len(done) - len(kids):]
            del done[len(done) - len(kids):]
            try:
                done.append(self._build(node, args))
            except ExpressionError:
                raise
            except Exception as e:  # noqa: BLE001 - SymPy raises many types on odd input
                raise ExpressionError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
        return done[0]

    # ---- the whitelist, checked on the whole tree before anything is built -------------------
    def _check(self, root: ast.AST) -> None:
        g, count, todo = self.g, 0, [root]
        while todo:
            node = todo.pop()
            count += 1
            if count > g.limits.max_nodes:
                raise TooLarge(f"the expression has more than {g.limits.max_nodes} nodes")
            why = self._refusal(node)
            if why:
                raise ExpressionError(why)
            todo.extend(self._children(node))

    def _refusal(self, node) -> str | None:
        g = self.g
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"literal {repr(v)[:60]} is not allowed"
            literal = self._segment(node)
            if not _NUMBER.fullmatch(literal):
                return f"number {literal[:60]!r} is not allowed (decimal numbers only)"
            check_literal(literal, isinstance(v, float), g.limits)
            return None
        if isinstance(node, ast.Name):
            return self._name_refusal(node.id)
        if isinstance(node, ast.BinOp):
            op = type(node.op)
            ok = op in _ARITH or op is ast.Pow or (g.relations and op in _LOGIC_BIN) or (g.floor_div and op is ast.FloorDiv)
            return None if ok else f"operator {type(node.op).__name__} is not allowed"
        if isinstance(node, ast.UnaryOp):
            ok = isinstance(node.op, _UNARY) or (g.relations and isinstance(node.op, _LOGIC_UNARY))
            return None if ok else f"operator {type(node.op).__name__} is not allowed"
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in g.functions:
                what = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
                return f"unknown function {what!r} (known: {', '.join(sorted(g.functions)) or 'none'})"
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                return f"{node.func.id}(...) takes positional arguments only"
            return None
        if g.relations and isinstance(node, ast.BoolOp):
            return None
        if g.relations and isinstance(node, ast.Compare):
            if all(type(op) in _COMPARE for op in node.ops):
                return None
            return "only ==, !=, <, <=, >, >= (and =) comparisons are allowed"
        return f"{type(node).__name__} is not allowed in an expression"

    def _name_refusal(self, name: str) -> str | None:
        g = self.g
        if name.startswith("_"):
            return f"name {name!r} is not allowed (names may not start with '_')"
        if name in self.names or name in g.constants or g.free_names:
            return None
        known = sorted(self.names) + sorted(g.constants)
        return (f"name {name!r} is not allowed (names: {', '.join(known) or 'none'}; functions: "
                f"{', '.join(sorted(g.functions)) or 'none'})")

    def _segment(self, node) -> str:
        """The source text of a literal (one line)."""
        return self.lines[node.lineno - 1][node.col_offset:node.end_col_offset].decode()

    @staticmethod
    def _children(node) -> list:
        if isinstance(node, ast.BinOp):
            return [node.left, node.right]
        if isinstance(node, ast.UnaryOp):
            return [node.operand]
        if isinstance(node, ast.Call):
            return list(node.args)  # the function's name is checked, not built
        if isinstance(node, ast.Compare):
            return [node.left, *node.comparators]
        if isinstance(node, ast.BoolOp):
            return list(node.values)
        return []  # Constant, Name; anything else is refused before it is built

    # ---- building ---------------------------------------------------------------------------
    def _build(self, node, args: list):
        g = self.g
        if isinstance(node, ast.Constant):
            if isinstance(node.value, int):
                return sp.Integer(node.value)
            return sp.Rational(self._segment(node)) if g.exact_decimals else sp.Float(repr(node.value))
        if isinstance(node, ast.Name):
            name = node.id
            if name in self.names:
                return self.names[name]
            return g.constants[name] if name in g.constants else sp.Symbol(name)
        if isinstance(node, ast.UnaryOp):
            (x,) = args
            if isinstance(node.op, ast.USub):
                return -x
            return x if isinstance(node.op, ast.UAdd) else sp.Not(x)
        if isinstance(node, ast.BinOp):
            return self._binop(node, *args)
        if isinstance(node, ast.Call):
            return apply(g.functions[node.func.id], args, g.limits, node.func.id)
        if isinstance(node, ast.BoolOp):
            return (sp.And if isinstance(node.op, ast.And) else sp.Or)(*args)
        rels = [_COMPARE[type(op)](a, b, evaluate=False) for op, a, b in zip(node.ops, args, args[1:])]
        return rels[0] if len(rels) == 1 else sp.And(*rels)

    def _binop(self, node, a, b):
        op = type(node.op)
        if op in _LOGIC_BIN:
            return _LOGIC_BIN[op](a, b)
        if op is ast.FloorDiv:
            return a // b
        if self.g.evaluate:
            return apply(sp.Pow, [a, b], self.g.limits) if op is ast.Pow else _ARITH[op](a, b)
        # unevaluated, as sympy_parser's EvaluateFalseTransformer builds it (nested Add/Mul flattened)
        if op is ast.Pow:
            return sp.Pow(a, b, evaluate=False)
        if op is ast.Sub:
            b = sp.Mul(-1, b, evaluate=False)
        elif op is ast.Div:
            b = sp.Pow(b, -1, evaluate=False)
        cls, ops = (sp.Add, (ast.Add, ast.Sub)) if op in (ast.Add, ast.Sub) else (sp.Mul, (ast.Mult, ast.Div))

        def nested(child) -> bool:
            return isinstance(child, ast.BinOp) and isinstance(child.op, ops)

        left = list(a.args) if nested(node.left) else [a]
        right = list(b.args) if op in (ast.Add, ast.Mult) and nested(node.right) else [b]
        return cls(*left, *right, evaluate=False)
