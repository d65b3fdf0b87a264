"""The symbolic core (`squigglray.symbolic`): one safe parser, one guard, one SymPy -> Z3 translation,
and that its three users (inequality verifier, tools, data rules) use it rather than copies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sympy as sp
import z3  # a hard dependency: a missing z3 must fail here, not skip the module

from squigglray.ineq import claim
from squigglray.symbolic import ExpressionError, Grammar, Limits, ToZ3, TooLarge, Untranslatable, apply, parse

ROOT = Path(__file__).resolve().parents[1]
A, B = sp.symbols("a b", positive=True)
INEQ = {"a": A, "b": B}


@pytest.fixture(scope="module")
def tools_grammar():
    from squigglray.verify.tool_ops import GRAMMAR

    return GRAMMAR


@pytest.fixture(scope="module")
def rules_grammar():
    from squigglray.data.rules import _grammar

    return _grammar()


# ------------------------------------------------------------------------------------ parser
@pytest.mark.parametrize("text,why", [
    ("x.__class__", "Attribute"),
    ("a.__class__.__bases__", "Attribute"),
    ("__import__('os').system('true')", "unknown function 'Attribute'"),
    ("__import__('os')", "unknown function '__import__'"),
    ("_a + 1", "may not start with '_'"),
    ("(lambda: 1)()", "unknown function"),
    ("lambda: 1", "Lambda"),
    ("[c for c in ()]", "ListComp"),
    ("'abc'", "literal"),
    ("a[0]", "Subscript"),
    ("a // b", "FloorDiv"),
    ("a % b", "Mod"),
    ("sqrt(x=a)", "positional"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("a + z", "'z'"),
    ("0x1F", "decimal"),
    ("1_000", "decimal"),
    ("2j", "literal"),
    ("a < b", "Compare"),
    ("2a", "not a valid expression"),
    ("a +* b", "not a valid expression"),
    ("", "empty"),
])
def test_the_verifier_grammar_refuses(text, why):
    with pytest.raises(ExpressionError, match=re.escape(why)):
        parse(text, claim.GRAMMAR, INEQ)


@pytest.mark.parametrize("text", ["9**9**9", "a + 9^9^9", "a**1001", "1**5000", "2**(10**6)", "1e400", "1" * 61,
                                  "a" + "+a" * 2500])
def test_too_large_is_refused_before_sympy_computes_it(text):
    with pytest.raises(TooLarge):
        parse(text, claim.GRAMMAR, INEQ)


@pytest.mark.parametrize("text,expected", [
    ("a**2 + 0.1*sqrt(b)", A**2 + sp.sqrt(B) / 10),  # exact decimals
    ("(a^2 + 1e-3)/Rational(1, 2)", 2 * A**2 + sp.Rational(1, 500)),
    ("Abs(a - b) + abs(a) + Min(a, b) + Max(a, b) + cbrt(a) + root(a, 4) + exp(1) + log(a) + pi",
     sp.Abs(A - B) + A + sp.Min(A, B) + sp.Max(A, B) + sp.cbrt(A) + sp.root(A, 4) + sp.E + sp.log(A) + sp.pi),
    ("-(-a)", A),
    ("2**1000", sp.Integer(2) ** 1000),
    ("+".join(["a"] * 1999), 1999 * A),  # long, left-nested: built without recursion
])
def test_the_verifier_grammar_accepts(text, expected):
    assert parse(text, claim.GRAMMAR, INEQ) == expected


def test_the_verifier_wrapper_names_the_text_and_requires_finite_reals():
    syms = claim.symbols(["a", "b"], "positive")
    with pytest.raises(ExpressionError, match=r"lhs 'a \+ z': name 'z'"):
        claim.parse("a + z", syms, "lhs")
    for text in ("1/0", "sqrt(-1)", "(-8)**(1/3)", "a + I"):
        with pytest.raises(ExpressionError, match="not a finite real|'I'"):
            claim.parse(text, syms)
    with pytest.raises(ExpressionError, match="multi-line"):
        claim.parse("a +\nb", syms)


def test_the_tools_grammar(tools_grammar):
    x, y = sp.symbols("x y")
    assert parse("2x + 3(x+1)", tools_grammar) == 5 * x + 3
    assert parse("x^2 = 4", tools_grammar) == sp.Eq(x**2, 4)
    assert parse("x > 0 and y < 1", tools_grammar) == sp.And(x > 0, y < 1)
    assert parse("0.5 + x", tools_grammar) == sp.Float("0.5") + x  # floats stay floats
    assert parse("E + I + pi", tools_grammar) == sp.E + sp.I + sp.pi
    assert parse("x**5000", tools_grammar) == x**5000  # a calculator's exponent limit is 10**6
    for text, error in [("9**9**9", TooLarge), ("factorial(10**7)", TooLarge), ("x**(10**7)", TooLarge),
                        ("x.__class__", ExpressionError), ("__import__('os')", ExpressionError)]:
        with pytest.raises(error):
            parse(text, tools_grammar)


def test_the_rules_grammar_builds_unevaluated(rules_grammar):
    x = sp.Symbol("x")
    e = parse("1+1*1-1/1", rules_grammar)
    assert e.is_number and not e.free_symbols and isinstance(e, sp.Add) and len(e.args) == 3
    assert parse("(1+1)^(1+1)^(1+1)^(1+1)^(1+1)^(1+1)", rules_grammar).is_Pow  # nothing computed, nothing refused
    assert parse("--x", rules_grammar) == x and parse("1*x", rules_grammar) != x  # as parse_expr(evaluate=False)
    with pytest.raises(ExpressionError):
        parse("1 1", rules_grammar)


def test_limits_are_parameters():
    g = Grammar(limits=Limits(max_chars=10, max_nodes=5, max_exponent=3, max_number_chars=3))
    for text in ("1+1+1+1+1+1", "2**4", "1234", "1+2+3+4"):
        with pytest.raises(TooLarge):
            parse(text, g)
    assert parse("2**3", g) == 8


def test_the_guard():
    lim = Limits()
    assert apply(sp.Pow, [sp.Integer(2), sp.Integer(10)], lim) == 1024
    with pytest.raises(TooLarge, match="bits"):
        apply(sp.Pow, [sp.Integer(3), sp.Integer(999)], Limits(max_bits=1000))
    with pytest.raises(TooLarge, match="exponent"):
        apply(sp.Pow, [sp.Symbol("x"), sp.Float(1e9)], lim)
    with pytest.raises(TooLarge, match="factorial"):
        apply(sp.factorial, [sp.Integer(10**5)], lim)


# ------------------------------------------------------------------------------ Z3 translation
X, Y = sp.symbols("x y", real=True)


def _check(formulas, **kw):
    tr = ToZ3(**kw)
    s = z3.Solver()
    s.add(*[tr(f) for f in formulas], *tr.side)
    return s.check()


def test_division_is_asserted_only_where_the_denominator_is_not_zero():
    assert _check([sp.Eq(X / Y, 1), sp.Eq(Y, 0)]) == z3.unsat  # no Z3 x/0 value can satisfy it
    x_over_x = sp.Mul(X, sp.Pow(X, -1, evaluate=False), evaluate=False)
    assert _check([sp.Ne(x_over_x, 1, evaluate=False)]) == z3.unsat  # so x/x == 1 is proved (where defined)
    assert _check([sp.Or(sp.Eq(Y, 0), 1 / Y > 1)]) == z3.sat
    assert _check([sp.Or(sp.Eq(Y, 0), 1 / Y > 1), sp.Eq(Y, 0)]) == z3.unsat  # 1/y must be defined, even in Or


def test_roots_are_principal_real_roots_or_refused():
    assert _check([sp.sqrt(X) < 0], roots=True) == z3.unsat
    assert _check([sp.Eq(sp.sqrt(X), 2), sp.Ne(X, 4)], roots=True) == z3.unsat
    assert _check([sp.Eq(X, -8), sp.Eq(sp.cbrt(X), -2)], roots=True) == z3.unsat  # SymPy's (-8)**(1/3) is not real
    assert _check([sp.sqrt(X) > -1, X < 0], roots=True) == z3.unsat  # sqrt(x) brings x >= 0
    with pytest.raises(Untranslatable, match="integer powers"):
        ToZ3()(sp.sqrt(X))


def test_integer_and_real_variables():
    n, m = sp.symbols("n m")
    assert _check([sp.Eq(2 * n, 3)], sorts={"n": "int"}) == z3.unsat
    assert _check([sp.Eq(2 * n, 3)]) == z3.sat
    # x/y between integers is real division, never integer div: 1/2 is reachable
    assert _check([sp.Eq(n / m, sp.Rational(1, 2))], sorts={"n": "int", "m": "int"}) == z3.sat


def test_abs_min_max_relations_and_refusals():
    assert _check([sp.Abs(X) < 0]) == z3.unsat
    assert _check([sp.Min(X, Y) > sp.Max(X, Y)]) == z3.unsat
    assert _check([sp.And(X > 1, sp.Not(X > 0))]) == z3.unsat
    for e in (sp.sin(X), sp.exp(X), X**Y, X**65, sp.floor(X)):
        with pytest.raises(Untranslatable, match="Z3 cannot take"):
            ToZ3(roots=True)(e)


# ------------------------------------------------------------------------- one core, three users
USERS = ["squigglray/ineq/verifier.py", "squigglray/ineq/claim.py", "squigglray/ineq/prove.py",
         "squigglray/verify/tool_ops.py", "squigglray/data/rules.py"]


def test_no_parser_or_translator_copies_outside_the_core():
    for path in sorted((ROOT / "squigglray").rglob("*.py")):
        if "symbolic" in path.parts:
            continue
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        assert "sympy.parsing" not in text and not re.search(r"(?<!\w)parse_expr\(", text), \
            f"{rel} parses with SymPy's eval-based parser"
        assert not re.search(r"class _?ToZ3\b|def _check_powers?\b|import tokenize", text), f"{rel} has a copy"


@pytest.mark.parametrize("path", USERS)
def test_the_users_import_the_core(path):
    text = (ROOT / path).read_text()
    assert "squigglray.symbolic" in text or "squigglray.ineq.claim" in text
    assert "import ast" not in text and "latex2sympy" not in text or path.endswith("tool_ops.py")
