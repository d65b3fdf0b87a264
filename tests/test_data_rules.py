"""squigglray.data.rules: the documented family rules, their order, validation, JSON/YAML, SymPy safety.

Pure Python (no ray). The table below is hand-labelled: the expected family is what a reader would
call the problem, and the rules were tuned until every row (and every synthetic family's own text)
maps as labelled.
"""

from __future__ import annotations

import json
import time

import pytest

from squigglray.data import rules as R
from squigglray.data.rules import (
    DEFAULT_RULES,
    FAMILIES,
    UNASSIGNED,
    FamilyMapper,
    Rule,
    classify_answer,
    load_rules,
    rules_from_json,
    rules_hash,
    rules_to_json,
    target_type,
)
from squigglray.schemas.problems import TARGET_TYPES

# (problem, final answer or None, expected family)
TABLE: list[tuple[str, str | None, str]] = [
    # functional equations
    (r"Find all functions $f:\mathbb{R}\to\mathbb{R}$ such that $f(x+y)=f(x)+f(y)$ for all real $x,y$ "
     r"and $f$ is continuous.", r"$f(x) = cx$", "functional_equations"),
    (r"Determine all functions $f: \mathbb{N} \to \mathbb{N}$ satisfying $f(f(n)) = n + 2$ for every $n$.",
     None, "functional_equations"),
    (r"Solve over the positive reals: $f(xy) = f(x)f(y)$ and $f(2) = 4$. Compute $f(8)$.", "64",
     "functional_equations"),
    (r"Let $f$ satisfy $f(x) + 2f(1-x) = 3x$ for every real $x$. Determine $f(0)$.", "2", "functional_equations"),
    ("Which function satisfies the condition above?", r"$f(x) = 3x + 1$", "functional_equations"),
    # order, discrete logarithm, cyclic groups
    (r"Find the order of $2$ modulo $101$.", "100", "discrete_log_order_cyclic"),
    (r"Find the smallest positive integer $n$ such that $2^n \equiv 1 \pmod{101}$.", "100",
     "discrete_log_order_cyclic"),
    (r"Is $3$ a primitive root modulo $17$?", "Yes", "discrete_log_order_cyclic"),
    (r"How many generators does the cyclic group $\mathbb{Z}_{12}$ have?", "4", "discrete_log_order_cyclic"),
    # modular arithmetic
    ("Find the remainder when $3^{100}$ is divided by 7.", "4", "modular_arithmetic_invariants"),
    (r"What is the last digit of $7^{2023}$?", "3", "modular_arithmetic_invariants"),
    (r"Find all integers $x$ such that $x \equiv 3 \pmod{7}$ and $x \equiv 2 \pmod{5}$.",
     r"x \equiv 17 \pmod{35}", "modular_arithmetic_invariants"),
    (r"Solve $5x \equiv 3 \pmod{11}$.", "5", "modular_arithmetic_invariants"),
    # counting
    ("How many ways can 5 people sit around a round table?", "24", "bijections_counting"),
    ("In how many ways can the letters of the word MISSISSIPPI be arranged?", "34650", "bijections_counting"),
    (r"Find the number of subsets of $\{1,2,\ldots,10\}$ that contain no two consecutive integers.", "144",
     "bijections_counting"),
    (r"Compute $\binom{10}{3}$.", "120", "bijections_counting"),
    (r"How many non-negative integer solutions does $x+y+z=10$ have?", "66", "bijections_counting"),
    ("A committee of 4 is chosen from 7 men and 5 women so that it has at least 2 women. Find the number of "
     "such committees, and give the remainder when it is divided by 1000.", "285", "bijections_counting"),
    # graph paths and counting recurrences
    (r"How many lattice paths are there from $(0,0)$ to $(4,4)$ using only right and up steps?", "70",
     "graph_path_recurrence"),
    (r"In how many ways can a $2 \times 10$ rectangle be tiled with $1 \times 2$ dominoes?", "89",
     "graph_path_recurrence"),
    (r"How many walks of length 3 are there between two adjacent vertices of the complete graph $K_5$?", "13",
     "graph_path_recurrence"),
    ("A person can climb 1 or 2 stairs at a time. In how many ways can they climb 10 stairs?", "89",
     "graph_path_recurrence"),
    (r"Let $a_n$ be the number of binary strings of length $n$ with no two consecutive 1s. Find a recurrence "
     r"for $a_n$ and compute $a_{10}$.", "144", "graph_path_recurrence"),
    # invariants
    (r"The numbers $1, 2, \ldots, 20$ are written on a blackboard. In one step we erase two numbers $a, b$ and "
     r"write $a+b-1$. What number remains at the end?", "191", "invariant_monovariant"),
    ("Twelve coins lie on a table, five of them heads up. A move flips exactly two coins. Is it possible to "
     "reach a position with all coins tails up?", "No", "invariant_monovariant"),
    ("Each of 2023 chameleons is red, green or blue; when two of different colours meet, both change to the "
     "third colour. Find a monovariant showing the process stops.", None, "invariant_monovariant"),
    # probability
    ("Two fair dice are rolled. What is the probability that the sum is 7?", r"\frac{1}{6}", "probability"),
    ("A coin is flipped 10 times. What is the expected number of heads?", "5", "probability"),
    # inequalities
    (r"Let $a,b,c>0$ with $a+b+c=3$. Prove that $a^2+b^2+c^2\ge 3$.", None, "inequality_amgm"),
    (r"Find the minimum value of $x + \frac{4}{x}$ for $x > 0$.", "4", "inequality_amgm"),
    (r"For positive reals $x, y$ with $xy = 4$, what is the least possible value of $x + y$?", "4",
     "inequality_amgm"),
    (r"Use AM-GM to show that $\frac{a+b}{2} \geq \sqrt{ab}$ for $a, b \geq 0$.", None, "inequality_amgm"),
    (r"Solve for real $x$: $\frac{x-1}{x+2} < 0$.", r"(-2, 1) \cup \emptyset", "inequality_amgm"),
    # divisibility
    (r"Find $\gcd(84, 126)$.", "42", "divisibility"),
    ("How many positive divisors does $360$ have?", "24", "divisibility"),
    (r"Prove that $n^3 - n$ is divisible by 6 for every integer $n$.", None, "divisibility"),
    ("Find the least common multiple of 12, 18, and 30.", "180", "divisibility"),
    ("What is the largest prime factor of 1001?", "13", "divisibility"),
    # equations
    ("Solve $3x+5=20$.", "5", "equations"),
    (r"Find all real solutions of $x^2 - 5x + 6 = 0$.", r"\{2, 3\}", "equations"),
    (r"Solve the system of equations $x + y = 5$, $x - y = 1$.", "(3, 2)", "equations"),
    (r"If $2x - 7 = 11$, what is $x$?", "9", "equations"),
    (r"Find all pairs of integers $(x, y)$ such that $x^2 - y^2 = 15$.", None, "equations"),
    # arithmetic
    (r"Evaluate $2^{10}-3\cdot 7$.", "1003", "arithmetic"),
    (r"Compute $\frac{3}{4} + \frac{5}{6}$.", r"\frac{19}{12}", "arithmetic"),
    (r"What is $12 \times 15 - 9$?", "171", "arithmetic"),
    ("Calculate 17 * 23 + 4.", "395", "arithmetic"),
    ("What is the value of 45 divided by 9, plus 7?", "12", "arithmetic"),
    ("What is 15% of 80?", "12", "arithmetic"),
    # geometry
    (r"In $\triangle ABC$, $AB = 5$, $BC = 12$ and $\angle B = 90^\circ$. Find $AC$.", "13", "geometry"),
    ("A circle has radius 3. What is its area?", r"9\pi", "geometry"),
    ("Find the area of a regular hexagon with side length 2.", r"6\sqrt{3}", "geometry"),
    ("A cube has volume 64. What is the length of its space diagonal?", r"4\sqrt{3}", "geometry"),
    # calculus
    (r"Evaluate $\int_0^1 x^2\,dx$.", r"\frac{1}{3}", "calculus"),
    (r"Find $\lim_{x\to 0} \frac{\sin x}{x}$.", "1", "calculus"),
    (r"Find the derivative of $x^3 + 2x$.", "3x^2 + 2", "calculus"),
    # sequences and series
    (r"Let $a_1 = 1$ and $a_{n+1} = 2a_n + 1$. Find $a_{10}$.", "1023", "sequences_series"),
    ("Find the sum of the first 20 terms of the arithmetic sequence 3, 7, 11, ...", "820", "sequences_series"),
    (r"Evaluate $\sum_{k=1}^{\infty} \frac{1}{k(k+1)}$.", "1", "sequences_series"),
    # polynomials
    (r"Find the remainder when $x^{100}$ is divided by $x^2 - 1$.", "1", "polynomials"),
    (r"Let $P(x)$ be a monic cubic with $P(1)=P(2)=P(3)=0$. Find $P(4)$.", "6", "polynomials"),
    (r"Find the sum of the roots of $x^3 - 6x^2 + 11x - 6$.", "6", "polynomials"),
    # complex numbers
    (r"Let $z = 3 + 4i$. Find $|z|$.", "5", "complex_numbers"),
    (r"Find the real part of $(1+i)^{10}$.", "0", "complex_numbers"),
    # linear algebra
    (r"Compute the determinant of the matrix $\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}$.", "-2",
     "linear_algebra"),
    (r"Find the eigenvalues of $A = \begin{bmatrix} 2 & 0 \\ 0 & 3 \end{bmatrix}$.", r"\{2, 3\}",
     "linear_algebra"),
    # trigonometry
    (r"Find all $x$ in $[0, 2\pi)$ such that $\sin x = \frac{1}{2}$.", r"\{\pi/6, 5\pi/6\}", "trigonometry"),
    (r"Simplify $\cos^2\theta - \sin^2\theta$.", r"\cos 2\theta", "trigonometry"),
    # logarithms and exponentials
    (r"Solve $\log_2(x+3) = 5$.", "29", "logarithms_exponentials"),
    (r"Find $x$ if $3^{x+1} = 81$.", "3", "logarithms_exponentials"),
    # unassigned
    ("Describe the weather.", None, UNASSIGNED),
    ("John has some apples and gives a few to Mary. How many does he have now?", None, UNASSIGNED),
    ("Write a short story about a dragon.", None, UNASSIGNED),
    ("What is the capital of France?", "Paris", UNASSIGNED),
    ("Explain why the sky is blue.", None, UNASSIGNED),
]

LEVELS = ("easy", "medium", "hard")


@pytest.fixture(scope="module")
def mapper() -> FamilyMapper:
    return FamilyMapper()


def _id(row: tuple[str, str | None, str]) -> str:
    return f"{row[2]}:{row[0][:40]}"


@pytest.mark.parametrize("problem,answer,expected", TABLE, ids=[_id(r) for r in TABLE])
def test_table(mapper: FamilyMapper, problem: str, answer: str | None, expected: str) -> None:
    fam, rule = mapper.assign(problem, answer)
    assert fam == expected, f"got {fam} via rule {rule}"
    if expected == UNASSIGNED:
        assert rule == UNASSIGNED
    else:
        assert next(r for r in DEFAULT_RULES if r.rule_id == rule).family_id == fam


def test_table_covers_every_family() -> None:
    labels = [row[2] for row in TABLE]
    assert set(FAMILIES) <= set(labels)
    assert labels.count(UNASSIGNED) >= 3
    assert len(TABLE) >= 45


def test_families_vocabulary() -> None:
    assert UNASSIGNED not in FAMILIES
    targets = {t for t in FAMILIES.values() if t is not None}
    assert targets == set(TARGET_TYPES)
    for fam, t in FAMILIES.items():
        assert t is None or t == fam
        assert target_type(fam) == t
    assert target_type(UNASSIGNED) is None
    assert FamilyMapper.target_type("geometry") is None
    with pytest.raises(ValueError, match="nonexistent"):
        target_type("nonexistent")
    assert 30 <= len(DEFAULT_RULES) <= 45


@pytest.mark.parametrize("level", LEVELS)
def test_synthetic_families_map_to_their_target_type(mapper: FamilyMapper, level: str) -> None:
    from squigglray.families import list_families, sample

    fams = list_families()
    assert len(fams) >= 16
    for fam in fams:
        for seed in (0, 1, 2, 7):
            for inst in sample(fam, 3, seed=seed, difficulty=level):
                got, rule = mapper.assign(inst.problem, str(inst.answer))
                assert target_type(got) == inst.target_type, (fam, level, seed, inst.problem, got, rule)


def test_deterministic(mapper: FamilyMapper) -> None:
    first = [mapper.assign(p, a) for p, a, _ in TABLE]
    fresh = FamilyMapper(rules_from_json(rules_to_json(DEFAULT_RULES)))
    R._sympy_match.cache_clear()
    again = [fresh.assign(p, a) for p, a, _ in TABLE]
    assert first == again


def test_first_matching_rule_wins() -> None:
    a = Rule("first", "geometry", "keyword", ("circle",))
    b = Rule("second", "calculus", "regex", (r"\bcircle\b",))
    text = "A circle has radius 2."
    assert FamilyMapper([a, b]).assign(text, None) == ("geometry", "first")
    assert FamilyMapper([b, a]).assign(text, None) == ("calculus", "second")
    assert FamilyMapper([a, b]).assign("no match here", None) == (UNASSIGNED, UNASSIGNED)


def test_keyword_is_case_insensitive_substring_and_answer_field() -> None:
    m = FamilyMapper([
        Rule("kw", "geometry", "keyword", ("TRIANGLE",)),
        Rule("ans_kw", "probability", "keyword", ("percent",), field="answer"),
        Rule("ans_int", "arithmetic", "answer_type", ("integer",), field="answer"),
    ])
    assert m.assign("In a right-Triangles problem", None) == ("geometry", "kw")
    assert m.assign("something", "50 Percent") == ("probability", "ans_kw")
    assert m.assign("something", "1,024") == ("arithmetic", "ans_int")
    assert m.assign("something", None) == (UNASSIGNED, UNASSIGNED)


@pytest.mark.parametrize("answer,kind", [
    ("f(x) = x^2", "function"), (r"$\boxed{g(t)=2t+1}$", "function"), ("[0, 1)", "interval"),
    (r"(-\infty, 2]", "interval"), (r"\{1, 2, 3\}", "set"), ("-12", "integer"), ("1,000", "integer"),
    ("3/4", "fraction_or_radical"), (r"\frac{3}{4}", "fraction_or_radical"), (r"2\sqrt{3}", "fraction_or_radical"),
    ("n(n+1)/2", "expression"), ("(1, 2)", None), ("", None), (None, None),
])
def test_classify_answer(answer: str | None, kind: str | None) -> None:
    assert classify_answer(answer) == kind


@pytest.mark.parametrize("rules,name", [
    ([Rule("dup", "geometry", "keyword", ("a",)), Rule("dup", "calculus", "keyword", ("b",))], "dup"),
    ([Rule("r1", "no_such_family", "keyword", ("a",))], "no_such_family"),
    ([Rule("bad_re", "geometry", "regex", ("(unclosed",))], "bad_re"),
    ([Rule("bad_kind", "geometry", "fuzzy", ("a",))], "bad_kind"),           # type: ignore[arg-type]
    ([Rule("bad_field", "geometry", "keyword", ("a",), field="solution")], "bad_field"),  # type: ignore[arg-type]
    ([Rule("bad_atype", "geometry", "answer_type", ("matrix",), field="answer")], "bad_atype"),
    ([Rule("atype_on_problem", "geometry", "answer_type", ("integer",))], "atype_on_problem"),
    ([Rule("bad_sympy", "arithmetic", "sympy", ("anything",))], "bad_sympy"),
    ([Rule("empty", "geometry", "keyword", ())], "empty"),
    ([Rule("empty_kw", "geometry", "keyword", ("",))], "empty_kw"),
    ([Rule(UNASSIGNED, "geometry", "keyword", ("a",))], UNASSIGNED),
])
def test_validation_errors_name_the_rule(rules: list[Rule], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        FamilyMapper(rules)


def test_json_round_trip_and_hash() -> None:
    data = rules_to_json(DEFAULT_RULES)
    assert json.loads(json.dumps(data)) == data
    back = rules_from_json(json.loads(json.dumps(data)))
    assert back == DEFAULT_RULES
    h = rules_hash(DEFAULT_RULES)
    assert len(h) == 64 and h == rules_hash(back) == rules_hash(list(DEFAULT_RULES))
    changed = (DEFAULT_RULES[0].__class__(**{**data[0], "patterns": tuple(data[0]["patterns"]) + ("x",)}),
               *DEFAULT_RULES[1:])
    assert rules_hash(changed) != h
    assert rules_hash(DEFAULT_RULES[::-1]) != h            # order is part of the rules
    # answer_type entries default to field "answer"
    (r,) = rules_from_json([{"rule_id": "a", "family_id": "arithmetic", "kind": "answer_type", "patterns": "integer"}])
    assert r.field == "answer" and r.patterns == ("integer",)


def test_rules_from_json_errors() -> None:
    with pytest.raises(ValueError, match="entry #1.*unknown keys"):
        rules_from_json([rules_to_json(DEFAULT_RULES[:1])[0], {"rule_id": "x", "family_id": "geometry",
                                                                 "kind": "keyword", "patterns": ["a"], "colour": 1}])
    with pytest.raises(ValueError, match="missing keys"):
        rules_from_json([{"rule_id": "x", "family_id": "geometry"}])
    with pytest.raises(ValueError, match="must be a list"):
        rules_from_json({"rule_id": "x"})  # type: ignore[arg-type]


def test_load_rules_yaml_and_json(tmp_path) -> None:
    y = tmp_path / "rules.yaml"
    y.write_text(
        "- rule_id: pell\n"
        "  family_id: equations\n"
        "  kind: regex\n"
        "  patterns: ['\\bpell\\b']\n"
        "  doc: Pell equations\n"
        "- rule_id: ints\n"
        "  family_id: arithmetic\n"
        "  kind: answer_type\n"
        "  patterns: [integer]\n", encoding="utf-8")
    rules = load_rules(y)
    assert [r.rule_id for r in rules] == ["pell", "ints"]
    m = FamilyMapper(rules)
    assert m.assign("Solve the Pell equation x^2 - 2y^2 = 1.", None) == ("equations", "pell")
    assert m.assign("Anything", "7") == ("arithmetic", "ints")

    j = tmp_path / "rules.json"
    j.write_text(json.dumps(rules_to_json(DEFAULT_RULES)), encoding="utf-8")
    assert load_rules(j) == DEFAULT_RULES
    assert load_rules(str(j)) == DEFAULT_RULES


@pytest.mark.parametrize("content,what", [
    ("- rule_id: a\n  family_id: [unclosed\n", "not valid YAML"),
    ("- rule_id: a\n  family_id: geometry\n  kind: keyword\n  patterns: [x]\n"
     "- rule_id: a\n  family_id: geometry\n  kind: keyword\n  patterns: [y]\n", "duplicate"),
    ("- rule_id: b\n  family_id: astrology\n  kind: keyword\n  patterns: [x]\n", "astrology"),
    ("- rule_id: c\n  family_id: geometry\n  kind: regex\n  patterns: ['(']\n", "bad regex"),
    ("just a string\n", "must be a list"),
    ("- 42\n", "entry #0"),
])
def test_load_rules_malformed_names_the_file(tmp_path, content: str, what: str) -> None:
    p = tmp_path / "my_bad_rules.yaml"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as exc:
        load_rules(p)
    assert "my_bad_rules.yaml" in str(exc.value)
    assert what in str(exc.value)


def test_load_rules_missing_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="nope.yaml"):
        load_rules(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", [
    "Evaluate __import__('os').system('echo hi').",
    "What is " + "9" * 5000 + "?",
    "Compute " + " + ".join(["1"] * 200) + ".",
    "Solve " + "x + " * 100 + "1 = 2.",
    "What is lambda: 1?",
    "Compute exec('1+1').",
    "Evaluate 2**3**4**5 if x = ().__class__.",
])
def test_unsafe_or_long_text_never_reaches_sympy(monkeypatch, text: str) -> None:
    def boom(s: str):  # pragma: no cover - reaching it is the failure
        raise AssertionError(f"sympy was asked to parse {s!r}")

    monkeypatch.setattr(R, "_parse_expr", boom)
    R._sympy_match.cache_clear()
    t0 = time.perf_counter()
    m = FamilyMapper([Rule("num", "arithmetic", "sympy", ("numeric_expression", "univariate_equation"))])
    assert m.assign(text, None) == (UNASSIGNED, UNASSIGNED)
    assert time.perf_counter() - t0 < 1.0
    R._sympy_match.cache_clear()


def test_sympy_candidates() -> None:
    R._sympy_match.cache_clear()
    assert R.sympy_matches(r"Evaluate $2^{10}-3\cdot 7$.", "numeric_expression")
    assert R.sympy_matches("What is the value of 77 times 71, plus 34 times 93, minus 3495?", "numeric_expression")
    assert R.sympy_matches("Compute $2(3+4)$.", "numeric_expression")
    assert R.sympy_matches(r"Find the value of $\sqrt{49} + \sqrt[3]{8}$.", "numeric_expression")
    assert R.sympy_matches(r"What is $\dfrac{1}{2} \div \left(3 - 1\right)$?", "numeric_expression")
    assert not R.sympy_matches("Compute $2x+1$.", "numeric_expression")
    assert R.sympy_matches("Solve for x: 9x + 9 = 5x + 49.", "univariate_equation")
    assert R.sympy_matches(r"If $\frac{x}{2} + 1 = 4$, find x.", "univariate_equation")
    assert not R.sympy_matches("Let $n = 5$. How many squares are there?", "univariate_equation")
    assert not R.sympy_matches("Solve $x + y = 3$.", "univariate_equation")
    assert not R.sympy_matches("Solve x = = 3.", "univariate_equation")
    # a huge exponent is parsed unevaluated, never computed
    t0 = time.perf_counter()
    assert R.sympy_matches("Compute 9^9^9^9.", "numeric_expression")
    assert time.perf_counter() - t0 < 2.0
    with pytest.raises(ValueError, match="nope"):
        R.sympy_matches("x", "nope")


def _reference_assign(rules, problem: str, answer: str | None) -> tuple[str, str]:
    """The documented semantics, implemented naively (no pre-filters, no combined patterns)."""
    import re

    for r in rules:
        text = problem if r.field == "problem" else answer
        if text is None:
            continue
        if r.kind == "keyword":
            hit = any(p.lower() in text.lower() for p in r.patterns)
        elif r.kind == "regex":
            hit = any(re.search(p, text, re.IGNORECASE) for p in r.patterns)
        elif r.kind == "answer_type":
            hit = classify_answer(text) in r.patterns
        else:
            hit = any(R.sympy_matches(text, p) for p in r.patterns)
        if hit:
            return r.family_id, r.rule_id
    return UNASSIGNED, UNASSIGNED


def test_prefilters_do_not_change_results(mapper: FamilyMapper) -> None:
    from squigglray.families import list_families, sample

    texts = [(p, a) for p, a, _ in TABLE]
    texts += [(i.problem, str(i.answer)) for f in list_families() for lvl in LEVELS for i in sample(f, 2, 3, lvl)]
    # non-ASCII and case variants: the pre-filters must not hide a match re.IGNORECASE would find
    texts += [(p.upper(), a) for p, a, _ in TABLE[::3]]
    texts += [("ſtraight line AB meets the CIRCLE — find the angle at 30°.", None),
              ("The KELVIN sign \u212a and \u017fimple graph on 5 vertices.".encode().decode("unicode_escape"), None),
              ("Ωmega: prove that x ≥ 2 for all ≡ classes.", None)]
    for p, a in texts:
        assert mapper.assign(p, a) == _reference_assign(DEFAULT_RULES, p, a), p
    custom = [Rule("ks", "geometry", "regex", ("\u017ftar".encode().decode("unicode_escape"),)),
              Rule("grp", "calculus", "regex", (r"(ab|cd)+ef?", r"x{3}y"))]
    cm = FamilyMapper(custom)
    for p in ["a star is born", "xxxy", "CDEF", "abab", "nothing"]:
        assert cm.assign(p, None) == _reference_assign(custom, p, None), p


def test_mapper_is_fast(mapper: FamilyMapper) -> None:
    rows = [(p, a) for p, a, _ in TABLE]
    n = 20_000
    data = (rows * (n // len(rows) + 1))[:n]
    mapper.assign("warm up: Evaluate 1+1.", None)
    t0 = time.perf_counter()
    out = [mapper.assign(p, a) for p, a in data]
    elapsed = time.perf_counter() - t0
    assert len(out) == n
    assert elapsed < 5.0, f"{n} rows took {elapsed:.2f}s"


def test_mapper_is_fast_on_uncached_unique_texts(mapper: FamilyMapper) -> None:
    # distinct numbers defeat the SymPy cache; rows that reach SymPy still stay cheap
    data = [(f"{p} (variant {i}: compute {i} + {i % 7}.)", a) for i in range(400) for p, a, _ in TABLE[-12:]]
    t0 = time.perf_counter()
    for p, a in data:
        mapper.assign(p, a)
    assert time.perf_counter() - t0 < 10.0


def test_module_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = "import sys, squigglray.data.rules as r; r.FamilyMapper().assign('Solve 3x+5=20.', None); " \
           "print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
