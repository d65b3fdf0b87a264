r"""Family rules: deterministic heuristics that give every pool item a ``family_id``.

Each problem (and optionally its final answer) is checked against an ordered list of
:class:`Rule` objects. **The first rule that matches wins**; a problem no rule matches goes to the
explicit bucket ``unassigned`` (rule id ``"unassigned"``). The result is a pure function of the
text, the answer and the rule list, so it is the same in every process, order and batch.
The rule id that fired is recorded next to the family, so per-rule counts can be reported.

Rule kinds
----------
``keyword``
    Case-insensitive substring test; the rule matches when any pattern occurs in the field.
``regex``
    ``re.search`` with ``re.IGNORECASE``; the rule matches when any pattern is found. Use
    ``\b`` for word boundaries and ``(?-i:...)`` for a case-sensitive part.
``answer_type``
    The final answer (``field`` must be ``"answer"``) is classified by :func:`classify_answer`
    into one of ``ANSWER_TYPES`` (first that applies): ``function`` (``f(x) = ...``),
    ``interval`` (``[0, 1)``, ``(-\infty, 2]``, ``... \cup ...``), ``set`` (``\{1, 2\}``),
    ``integer`` (``-12``, ``1,000``), ``fraction_or_radical`` (``3/4``, ``\frac{3}{4}``,
    ``2\sqrt{3}``), ``expression`` (anything else with a variable, e.g. ``n(n+1)/2``). The rule
    matches when the answer's type is one of the patterns. A missing answer never matches.
``sympy``
    Patterns from ``SYMPY_PATTERNS``. Candidate strings are cut from the text: the rest of the
    sentence after a lead phrase ("Evaluate", "Compute", "Calculate", "Simplify", "What is (the
    value of)", "Find (the value of)"; for equations also "Solve (for x:)", "such that", "if",
    "satisfies", "given") and, for equations, every ``$...$`` span containing ``=``. A few LaTeX
    tokens and words are rewritten (``\times \cdot \div``, ``\frac{a}{b}`` and ``\sqrt{a}`` with
    brace-free arguments, ``{}``→``()``, ``^``, "times", "plus", "minus", "divided by", ...). SymPy only ever
    sees a candidate of at most 120 characters made of digits, ``+ - * / ^ ( ) .`` and spaces
    (equations: also one single-letter variable and exactly one ``=``), parsed by the symbolic
    core's parser (``squigglray.symbolic``, no ``eval``) with ``evaluate=False`` so nothing is
    computed; any other text is a no-match.
    ``numeric_expression`` matches a number with no free symbols; ``univariate_equation``
    matches when both sides parse with exactly one free symbol in total (``x = 5`` alone is an
    assignment, not an equation).

A rule has ``field`` ``"problem"`` (default) or ``"answer"``: which string it looks at.

Default order (``DEFAULT_RULES``; specific before generic)
----------------------------------------------------------
1. functional equations (``f(x+y)``, ``f(xy)``, ``f(f(x))``, ``f:\mathbb{R}\to\mathbb{R}``,
   "find all functions"; also an answer of type ``function``),
2. order / discrete log / cyclic groups (before modular arithmetic: "smallest k with a^k ≡ 1
   (mod n)" is an order question),
3. invariants and board operations (before counting and modular: "... what is N mod p?"),
4. probability (before counting and paths: a probability question often counts ways),
5. graph paths and counting recurrences (lattice paths, stairs, tilings, "recurrence"),
6. counting and bijections (before modular and divisibility: "find the number of ways ... modulo
   1000" is a counting problem),
7. polynomial remainders (before modular: "remainder when x^100 is divided by x^2+1"),
8. modular arithmetic, 9. divisibility and primes, 10. inequalities and optimisation,
11. the non-target buckets complex numbers, linear algebra, calculus, geometry, trigonometry,
    logarithms/exponentials, polynomials, sequences/series,
12. equations (SymPy, then keywords), 13. plain arithmetic (SymPy, then a regex fallback),
14. last resort: an interval answer means an inequality was solved.

Families (``FAMILIES``: family id → target type; ``None`` = bucket outside ``TARGET_TYPES``)
--------------------------------------------------------------------------------------------
functional_equations, discrete_log_order_cyclic, modular_arithmetic_invariants,
bijections_counting, graph_path_recurrence, invariant_monovariant, inequality_amgm,
divisibility, equations, arithmetic map to the target type of the same name. geometry,
calculus, probability, sequences_series, polynomials, complex_numbers, linear_algebra,
trigonometry, logarithms_exponentials have no target type. ``unassigned`` is not a family.

Custom rules
------------
A YAML or JSON file holding a list of rule mappings (the defaults written out by
``rules_to_json(DEFAULT_RULES)`` are a good start)::

    - rule_id: my_pell
      family_id: equations
      kind: regex            # keyword | regex | answer_type | sympy
      patterns: ['\bpell\b', 'x\^2\s*-\s*\d+\s*y\^2\s*=\s*1']
      field: problem         # optional; answer_type rules default to answer
      doc: Pell equations    # optional

Load it with :func:`load_rules` (a malformed file raises ``ValueError`` naming the file and the
entry) and pass the tuple to :class:`FamilyMapper`. The list replaces the defaults; to extend
them, concatenate: ``FamilyMapper(my_rules + DEFAULT_RULES)``. :func:`rules_hash` fingerprints
a rule list for manifests.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from squigglray.solve.answers import last_box

UNASSIGNED = "unassigned"

FAMILIES: dict[str, str | None] = {
    "functional_equations": "functional_equations",
    "discrete_log_order_cyclic": "discrete_log_order_cyclic",
    "modular_arithmetic_invariants": "modular_arithmetic_invariants",
    "bijections_counting": "bijections_counting",
    "graph_path_recurrence": "graph_path_recurrence",
    "invariant_monovariant": "invariant_monovariant",
    "inequality_amgm": "inequality_amgm",
    "divisibility": "divisibility",
    "equations": "equations",
    "arithmetic": "arithmetic",
    "geometry": None,
    "calculus": None,
    "probability": None,
    "sequences_series": None,
    "polynomials": None,
    "complex_numbers": None,
    "linear_algebra": None,
    "trigonometry": None,
    "logarithms_exponentials": None,
}

KINDS: tuple[str, ...] = ("keyword", "regex", "answer_type", "sympy")
FIELDS: tuple[str, ...] = ("problem", "answer")
ANSWER_TYPES: tuple[str, ...] = ("function", "interval", "set", "integer", "fraction_or_radical", "expression")
SYMPY_PATTERNS: tuple[str, ...] = ("numeric_expression", "univariate_equation")
_RULE_KEYS = ("rule_id", "family_id", "kind", "patterns", "field", "doc")


@dataclass(frozen=True)
class Rule:
    """One heuristic: if ``patterns`` (interpreted by ``kind``) match ``field``, assign ``family_id``."""

    rule_id: str
    family_id: str
    kind: Literal["keyword", "regex", "answer_type", "sympy"]
    patterns: tuple[str, ...]
    field: Literal["problem", "answer"] = "problem"
    doc: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.patterns, list):
            object.__setattr__(self, "patterns", tuple(self.patterns))


def target_type(family_id: str) -> str | None:
    """The target type of a family; ``None`` for ``unassigned`` and for non-target buckets."""
    if family_id == UNASSIGNED:
        return None
    if family_id not in FAMILIES:
        raise ValueError(f"unknown family {family_id!r}; known: {', '.join(FAMILIES)}, {UNASSIGNED}")
    return FAMILIES[family_id]


# --------------------------------------------------------------------------------------------
# The default rules.

def _r(rule_id: str, family_id: str, kind: str, patterns: Sequence[str], doc: str, field: str = "problem") -> Rule:
    return Rule(rule_id, family_id, kind, tuple(patterns), field, doc)  # type: ignore[arg-type]


DEFAULT_RULES: tuple[Rule, ...] = (
    # 1. functional equations
    _r("fe_text", "functional_equations", "keyword", [
        "functional equation", "all functions", "all the functions", "all continuous functions",
        "all monotonic functions", "all injective functions", "all surjective functions",
    ], "wording of functional-equation problems"),
    _r("fe_notation", "functional_equations", "regex", [
        r"\b[fg]\s*\(\s*[a-z]\s*[+\-]\s*[a-z]\s*\)",                         # f(x+y), f(x-y)
        r"\b[fg]\s*\(\s*[a-z]\s*(?:\*|\\cdot)?\s*[a-z]\s*\)",                  # f(xy)
        r"\b[fg]\s*\(\s*[fg]\s*\(\s*[a-z]\s*\)",                              # f(f(x))
        r"\b[fg]\s*:\s*(?:\\mathbb\s*\{?\s*[nzqrc]\b|[nzqrc](?:\^\+|_\{?\+\}?)?\s*(?:->|\\to\b|\\rightarrow\b|→))",
        r"\b([fg])\s*\(\s*[^()$]*[a-z][^()$]*\)\s*[+\-]\s*\d*\s*\1\s*\(\s*[^()$]*[a-z]",  # f(x) + 2f(1-x)
    ], "f(x+y), f(xy), f(f(x)), f: R -> R, f(x) + c f(g(x))"),
    _r("fe_answer", "functional_equations", "answer_type", ["function"],
       "the final answer is a function f(x) = ...", field="answer"),

    # 2. order, discrete logarithm, cyclic groups
    _r("dlog_text", "discrete_log_order_cyclic", "keyword", [
        "discrete log", "multiplicative order", "primitive root", "cyclic group", "cyclic subgroup",
        "additive group", "multiplicative group", "order of the element", "generator of the group",
        "generators of the group", "\\operatorname{ord}",
    ], "order, primitive roots, discrete logarithms, cyclic groups"),
    _r("dlog_power_order", "discrete_log_order_cyclic", "regex", [
        r"\b(?:smallest|least|minimal)\s+(?:positive\s+)?(?:integer\s+)?\$?([a-z])\b\$?[^.?]{0,120}?"
        r"\^\s*\{?\s*\1\b\s*\}?[^?]{0,150}?(?:\bmod(?:ulo)?\b|\\[pb]?mod|\\equiv|≡|\bremainder|\bdivisible|\\mid\b)",
    ], "smallest k with a^k = b (mod n) / a^k - 1 divisible by n"),
    _r("dlog_order", "discrete_log_order_cyclic", "regex", [
        r"\border\s+of\s+\$?\d+\$?\s+(?:mod(?:ulo)?|in)\b",
        r"\b(?:have|has)\s+order\b", r"\belements?\s+of\s+order\b", r"\border\s+exactly\b",
        r"\border\b[^.?]{0,60}\bgroup\b", r"\bgroup\b[^.?]{0,60}\border\b",
        r"\bord_", r"\bz\s*/\s*\d*\s*[a-z]?\s*z\b",
    ], "order of an element, Z/nZ"),

    # 3. invariants and monovariants
    _r("inv_text", "invariant_monovariant", "keyword", [
        "invariant", "monovariant", "blackboard", "whiteboard", "chalkboard", "on a board",
        "on the board",
    ], "invariants and numbers on a board"),
    _r("inv_operations", "invariant_monovariant", "regex", [
        r"\b(?:erases?|erased|wipes?\s+out)\b[^.?]{0,80}\b(?:writes?|replaces?|puts?)\b",
        r"\b(?:may|can)\s+be\s+replaced\s+(?:by|with)\b",
        r"\brepeatedly\s+(?:replace|erase|choose|pick|apply|perform|remove)",
        r"\b(?:only\s+one|a\s+single)\s+(?:number|integer|coin|stone|pile)\s+(?:is\s+left|remains)",
        r"\bis\s+it\s+possible\s+(?:to\s+(?:reach|obtain|get|end|make\s+all)|that\s+after)",
        r"\bafter\s+(?:a\s+finite\s+number\s+of|finitely\s+many|several|some)\s+(?:moves|operations|steps)",
    ], "repeated operations: erase/replace, reachable states"),

    # 4. probability
    _r("prob_text", "probability", "keyword", [
        "probability", "probabilities", "expected value", "expected number", "expectation",
        "at random", "randomly", "random variable", "fair coin", "coin is tossed", "coins are tossed",
        "coin is flipped", "coins are flipped", "die is rolled", "dice are rolled",
    ], "probability and expectation"),
    _r("prob_regex", "probability", "regex", [
        r"\b(?:a|one|two|three|four|fair|six-sided|\d+)\s+(?:fair\s+)?(?:six-sided\s+)?(?:dice|die|coins?)\s+(?:is|are)\s+(?:rolled|tossed|flipped|thrown)",
        r"\bchosen\s+uniformly\b",
    ], "dice and coins"),

    # 5. graph paths and counting recurrences
    _r("path_text", "graph_path_recurrence", "keyword", [
        "lattice path", "staircase", "stairs", "rungs", "domino", "recurrence", "hamiltonian",
        "eulerian", "shortest path", "ordered sequences with every term",
    ], "lattice paths, stairs, tilings, recurrences"),
    _r("path_regex", "graph_path_recurrence", "regex", [
        r"\b(?:right|up)\s+or\s+(?:one\s+unit\s+)?(?:right|up|down|left)\b",
        r"\(\s*right\s*/\s*up\s*\)", r"\bunit\s+steps?\b",
        r"\bpaths?\b[^.?]{0,60}\bfrom\s+(?:\$?\(|the\s+origin|point|vertex|corner)",
        r"\b(?:simple|directed|undirected|connected|complete|bipartite|planar|regular)\s+graphs?\b",
        r"\bgraph\s+(?:with|on|has)\s+\$?\d+\$?\s+(?:vertices|nodes)", r"\bwalks?\s+of\s+length\b",
        r"\b(?:or|and)\s+\$?\d+\$?\s+(?:steps?|stairs|rungs|units?|squares|cells|pads|stones)\s+at\s+a\s+time",
        r"\btil(?:ed|ing|ings)\b", r"\bcompositions?\s+of\s+\$?\d", r"\bordered\s+sequences?\b[^.?]{0,60}\bsum\b",
    ], "paths in grids and graphs, step/tiling counts"),

    # 6. counting and bijections
    _r("count_stars_bars", "bijections_counting", "keyword", [
        "identical balls", "indistinguishable balls", "identical candies", "identical objects",
        "distinct boxes", "distinguishable boxes", "non-negative integer solutions",
        "nonnegative integer solutions", "solutions in non-negative integers",
        "solutions in nonnegative integers", "tuples of non-negative integers",
        "tuples of nonnegative integers", "stars and bars",
    ], "distributing identical objects / non-negative solutions"),
    _r("count_text", "bijections_counting", "keyword", [
        "how many ways", "number of ways", "how many different ways", "number of different ways",
        "permutation", "combinations", "committee", "anagram", "bijection", "subsets",
        "sit around", "seated around", "round table", "circular table", "\\binom", "\\choose",
        "binomial coefficient", "pigeonhole", "inclusion-exclusion", "derangement",
        "number of ordered", "how many ordered",
    ], "counting wording"),
    _r("count_regex", "bijections_counting", "regex", [
        r"\barrang(?:e|ed|es|ing|ements?)\b",
        r"\bhow\s+many\s+(?:different\s+|distinct\s+)?(?:\w+[\s-]+)?(?:words|strings|arrangements|"
        r"permutations|subsets|committees|teams|handshakes|license\s+plates|passwords|selections|"
        r"outcomes|colorings|colourings|functions|necklaces|bracelets)\b",
        r"\bhow\s+many\s+(?:\w+\s+)?(?:\d+|two|three|four|five|six)-digit\b",
        r"\b(?:choose|select|pick)\s+\$?\d+\$?\s+(?:of|from|out|people|students|books|balls|cards|letters)",
        r"\bcount\s+the\s+(?:number\s+of\s+)?(?:ordered\s+)?\$?\d*\$?-?(?:tuples|pairs|triples|subsets|sequences|words|strings)\b",
    ], "counting objects"),

    # 7. polynomial remainders (before modular arithmetic)
    _r("poly_remainder", "polynomials", "regex", [
        r"\bremainder\b[^.?]{0,80}\bdivided\s+by\s+\$?\(?\s*[a-z]\s*(?:\^|[+\-]\s*\d)",
        r"\bremainder\b[^.?]{0,80}\b[pq]\s*\(\s*x\s*\)",
    ], "remainder of a polynomial division"),

    # 8. modular arithmetic
    _r("mod_text", "modular_arithmetic_invariants", "keyword", [
        "remainder", "\\pmod", "\\bmod", "\\equiv", "≡", "modulo", "congruent", "congruence",
        "last digit", "last two digits", "last three digits", "units digit", "unit digit",
        "ones digit", "residue",
    ], "remainders, congruences, last digits"),
    _r("mod_regex", "modular_arithmetic_invariants", "regex", [
        r"\bmod\b", r"\\mod\b",
    ], "a mod n"),

    # 9. divisibility and primes
    _r("div_text", "divisibility", "keyword", [
        "divisible", "divisor", "greatest common", "least common multiple", "gcd", "lcm",
        "coprime", "relatively prime", "prime factor", "totient", "trailing zero", "perfect square",
        "perfect cube",
    ], "divisors, gcd/lcm, primes, perfect powers"),
    _r("div_regex", "divisibility", "regex", [
        r"\bdivides\b", r"\bthat\s+divides?\b", r"\bdivides?\s+(?:both|each|every|all)\b",
        r"\bprimes?\b", r"\bfactors?\s+of\s+\$?\d", r"\bmultiples?\s+of\s+\$?\d", r"\\mid\b",
        r"\\(?:var)?phi\s*\(\s*\d",
    ], "a | b, primes, factors, multiples"),

    # 10. inequalities and optimisation
    _r("ineq_text", "inequality_amgm", "keyword", [
        "am-gm", "am–gm", "amgm", "cauchy-schwarz", "cauchy–schwarz", "cauchy schwarz", "jensen",
        "schur", "muirhead", "hölder", "holder's inequality", "rearrangement inequality", "inequality",
        "inequalities", "minimum value", "maximum value", "minimum possible value",
        "maximum possible value", "smallest possible value", "largest possible value",
        "least possible value", "greatest possible value", "the minimum of", "the maximum of",
        "minimize", "maximize", "minimise", "maximise",
    ], "named inequalities, min/max of an expression"),
    _r("ineq_prove", "inequality_amgm", "regex", [
        r"\b(?:prove|show|verify)\b[^?]{0,300}?(?:\\geq?\b|\\leq?\b|\\geqslant|\\leqslant|≥|≤|>=|<=)",
        r"\bsolve\b[^.?=]{0,80}(?:<=?|>=?|\\[lg]e(?:q|qslant)?\b|\\[lg]t\b|≤|≥)[^.?=]*(?:[.?]|$)",
    ], "prove an inequality; solve one (an inequality sign and no '=' in the sentence)"),

    # 11. non-target buckets
    _r("cplx_text", "complex_numbers", "keyword", [
        "complex number", "complex plane", "imaginary part", "real part", "imaginary unit",
        "roots of unity", "root of unity", "argand", "\\overline{z}", "\\bar{z}", "complex conjugate",
        "i^2 = -1", "i^2=-1", "de moivre",
    ], "complex numbers"),
    _r("cplx_regex", "complex_numbers", "regex", [
        r"\bz\s*=\s*-?\d*\s*[+\-]\s*\d*\s*i\b", r"\|\s*z\s*\|", r"\bi\s*\^\s*\{?\s*\d",
        r"\(\s*-?\d+\s*[+\-]\s*\d*\s*i\s*\)", r"\\operatorname\{(?:re|im)\}",
    ], "z = a + bi, |z|, (1+i)"),
    _r("linalg_text", "linear_algebra", "keyword", [
        "matrix", "matrices", "determinant", "eigenvalue", "eigenvector", "\\det", "pmatrix",
        "bmatrix", "vmatrix", "linear transformation", "linear map", "vector space",
        "linearly independent", "linearly dependent", "dot product", "cross product",
    ], "matrices and vectors"),
    _r("calc_text", "calculus", "keyword", [
        "\\int", "integral", "integrate", "antiderivative", "derivative", "differentiate",
        "\\lim", "limit", "d/dx", "dy/dx", "\\frac{d", "\\frac{\\partial", "\\partial",
        "tangent line", "differential equation", "taylor", "maclaurin", "inflection", "concave",
    ], "integrals, derivatives, limits"),
    _r("calc_regex", "calculus", "regex", [
        r"\bf\s*'+\s*\(", r"\\,\s*d[xt]\b", r"\\mathrm\{d\}\s*[xt]\b",
    ], "f'(x), dx"),
    _r("geo_text", "geometry", "keyword", [
        "triangle", "angle", "circle", "radius", "radii", "diameter", "perimeter", "polygon",
        "hexagon", "pentagon", "octagon", "quadrilateral", "rectangle", "parallelogram",
        "trapezoid", "rhombus", "hypotenuse", "circumcenter", "incenter", "orthocenter", "centroid",
        "inscribed", "circumscribed", "hemisphere", "cylinder", "perpendicular", "bisector",
        "midpoint", "altitude", "surface area", "area of", "tangent to", "chord", "parallel",
        "coordinate plane",
    ], "plane and solid geometry"),
    _r("geo_regex", "geometry", "regex", [
        r"\b(?:cones?|cubes?|prisms?|pyramids?|tetrahedr(?:on|a)|spheres?)\b(?!\s+roots?)",
        r"(?-i:\b(?:[Ss]quare|[Ss]egment|[Ll]ine|[Pp]oints?)\s+\$?[A-Z]{1,4}\b)",
        r"\\overline\{\s*[a-z]{2}\s*\}", r"\d+\s*(?:\^\s*\{?\s*\\circ|°)",
    ], "solids, named points/segments, degrees"),
    _r("trig_regex", "trigonometry", "regex", [
        r"\b(?:sin|cos|tan|cot|sec|csc|arcsin|arccos|arctan)\b", r"\b(?:sine|cosine|trigonometr\w*)\b",
    ], "trigonometric functions"),
    _r("log_regex", "logarithms_exponentials", "regex", [
        r"\b(?:log|ln|lg)(?:\b|_)", r"\blogarithm", r"\bexponential\b",
        r"\b\d+\s*\^\s*\{?\s*\(?\s*[xyt]\b", r"\be\s*\^\s*\{?\s*\(?\s*-?\s*[xt]\b",
    ], "logarithms and exponential equations"),
    _r("poly_text", "polynomials", "keyword", [
        "polynomial", "vieta", "coefficient", "monic", "cubic", "quartic",
    ], "polynomials"),
    _r("poly_regex", "polynomials", "regex", [
        r"\b[pq]\s*\(\s*x\s*\)",
        r"\b(?:sum|product)\s+of\s+(?:the\s+|all\s+(?:the\s+)?)?(?:\w+\s+)?(?:roots|zeros|zeroes)\b",
        r"\bzeros\s+of\b",
    ], "P(x), sum/product of roots"),
    _r("seq_text", "sequences_series", "keyword", [
        "sequence", "series", "arithmetic progression", "geometric progression", "\\sum",
        "telescop", "fibonacci", "converge", "diverge", "partial sum", "sum of the first",
        "nth term", "n-th term", "n^{th} term",
    ], "sequences and series"),
    _r("seq_regex", "sequences_series", "regex", [
        r"\b[a-z]_\s*\{?\s*n\s*[+\-]\s*\d\s*\}?", r"\b[a-z]_\s*\{?\s*n\s*\}?\s*=",
        r"\+\s*(?:\\cdots|\\ldots|\.\.\.|…)\s*\+",
    ], "a_{n+1}, a_n =, 1 + 2 + ... + n"),

    # 12. equations
    _r("eq_sympy", "equations", "sympy", ["univariate_equation"],
       "an equation in one variable that SymPy parses"),
    _r("eq_text", "equations", "keyword", [
        "solve for", "solve the equation", "solve the system", "system of equations",
        "system of linear equations", "real solutions", "integer solutions", "quadratic",
        "equation", "the same number", "times a number", "find all pairs", "find all real",
    ], "equation wording"),
    _r("eq_regex", "equations", "regex", [
        r"^\s*solve\b",
        r"\b(?:larger|smaller|largest|smallest|positive|negative|real|distinct|two|integer|integral|rational)\s+roots?\b",
        r"\broots?\s+of\s+(?:the\s+)?(?:quadratic|equation)",
        r"\bfind\s+(?:all\s+)?(?:the\s+)?(?:values?\s+of\s+)?\$?[a-z]\$?\s+(?:such\s+that|if|satisfying|for\s+which)\b",
    ], "solve ..., roots of an equation, find x such that"),

    # 13. plain arithmetic
    _r("arith_sympy", "arithmetic", "sympy", ["numeric_expression"],
       "a numeric expression after Evaluate/Compute/What is"),
    _r("arith_regex", "arithmetic", "regex", [
        r"\b\d+(?:\.\d+)?\s*(?:%|\\%|percent)\s+of\s+\$?\d",
        r"\bsquare\s+root\s+of\s+\$?\d+\$?\s*[?.]?\s*$",
        r"^\s*(?:what\s+is|compute|evaluate|calculate)\s+(?:the\s+value\s+of\s+)?\$?[\d\s+\-*/^().,×÷·]+\$?\s*[?.]?\s*$",
    ], "percentages, plain numeric expressions"),

    # 14. last resort on the answer
    _r("ineq_interval_answer", "inequality_amgm", "answer_type", ["interval"],
       "the final answer is an interval (an inequality was solved)", field="answer"),
)


# --------------------------------------------------------------------------------------------
# Answer types.

_ANS_FUNCTION = re.compile(r"^[fgh]\s*\(\s*[a-z]\s*\)\s*=")
_ANS_INTERVAL_MARK = re.compile(r"\\infty|∞|\\cup|∪")
_ANS_INTERVAL = re.compile(r"^(?:\\left)?[\[(]\s*[^,\[\]()]+,\s*[^,\[\]()]+(?:\\right)?[\])]$")
_ANS_SET = re.compile(r"^\\\{.*\\\}$|^\{.*\}$", re.S)
_ANS_INTEGER = re.compile(r"^[+-]?(?:\d+|\d{1,3}(?:,\d{3})+)$")
_ANS_FRACTION = re.compile(r"\\[dt]?frac|\\sqrt|√|^[+-]?\d+\s*/\s*\d+$")
_ANS_LATEX_CMD = re.compile(r"\\[a-zA-Z]+")


def classify_answer(answer: Any) -> str | None:
    """The answer type (one of ``ANSWER_TYPES``) of a final answer; ``None`` if none applies."""
    if answer is None:
        return None
    s = str(answer).strip()
    if len(s) > 500:
        return None
    s = s.strip("$").strip()
    if s.startswith("\\boxed") and s.count("\\boxed") == 1:  # one box: its content (the one box parser)
        end, inner = last_box(s)
        if end == len(s) and inner is not None:
            s = inner
    if s.startswith("\\(") and s.endswith("\\)"):
        s = s[2:-2].strip()
    if not s:
        return None
    if _ANS_FUNCTION.match(s):
        return "function"
    if _ANS_INTERVAL_MARK.search(s) or (_ANS_INTERVAL.match(s) and (s[0] == "[" or s[-1] == "]" or s.startswith("\\left["))):
        return "interval"
    if _ANS_SET.match(s):
        return "set"
    if _ANS_INTEGER.match(s):
        return "integer"
    if _ANS_FRACTION.search(s):
        return "fraction_or_radical"
    if re.search(r"[a-zA-Z]", _ANS_LATEX_CMD.sub(" ", s)):
        return "expression"
    return None


# --------------------------------------------------------------------------------------------
# SymPy candidates: cut, normalise, check the character set, and only then parse.

MAX_SYMPY_CHARS = 120
_MAX_RAW_CHARS = 300
_NUMERIC_LEAD = re.compile(
    r"\b(?:evaluate(?:\s+the\s+(?:expression|sum|product))?|compute|calculate|simplify|"
    r"what\s+is(?:\s+the\s+value\s+of)?|find(?:\s+the\s+value\s+of)?)\b\s*:?\s*", re.I)
_EQUATION_LEAD = re.compile(
    r"\b(?:solve(?:\s+for\s+[a-z])?|such\s+that|if|satisf(?:y|ies|ying)|given(?:\s+that)?)\b\s*:?\s*", re.I)
_SENTENCE = re.compile(r"[^?!]*?(?=[?!]|\.(?:\s|$)|$)", re.S)
_MATH_SPAN = re.compile(r"\$\$?([^$]{1,%d})\$\$?" % _MAX_RAW_CHARS)
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_SQRT = re.compile(r"\\sqrt\s*(?:\[([^\[\]{}]*)\])?\s*\{([^{}]*)\}")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+)")
_WORDS = (
    (re.compile(r",?\s*\bmultiplied\s+by\b"), " * "), (re.compile(r",?\s*\btimes\b"), " * "),
    (re.compile(r",?\s*\bdivided\s+by\b"), " / "), (re.compile(r",?\s*\bplus\b"), " + "),
    (re.compile(r",?\s*\bminus\b"), " - "), (re.compile(r"\s*\bsquared\b"), "^2"),
    (re.compile(r"\s*\bcubed\b"), "^3"), (re.compile(r"\s*\b(?:raised\s+)?to\s+the\s+power\s+(?:of\s+)?"), "^"),
)
_LATEX_SUBS = (
    ("\\left", ""), ("\\right", ""), ("\\displaystyle", ""), ("\\times", "*"), ("\\cdot", "*"),
    ("\\ast", "*"), ("\\div", "/"), ("×", "*"), ("·", "*"), ("÷", "/"), ("−", "-"), ("\\,", " "),
    ("\\;", " "), ("\\!", ""), ("\\ ", " "), ("~", " "), ("{", "("), ("}", ")"),
)
_SAFE_NUMERIC = re.compile(r"^[0-9+\-*/^().\s]+$")
_SAFE_EQUATION = re.compile(r"^[0-9a-z+\-*/^().=\s]+$")
_IMPLICIT_MUL = re.compile(r"(?<=[0-9a-z)])\s*(?=[a-z(])|(?<=\))\s*(?=[0-9])")
# Cheap pre-check before any rewriting: every word in a candidate must be one the rewriting removes.
_WORD = re.compile(r"\\?[a-z]+")
_KNOWN_WORDS = frozenset((
    "times", "plus", "minus", "divided", "by", "multiplied", "squared", "cubed", "raised", "to", "the",
    "power", "of", "\\frac", "\\dfrac", "\\tfrac", "\\left", "\\right", "\\cdot", "\\times", "\\div",
    "\\ast", "\\displaystyle", "\\sqrt",
))


def _quick_reject(low: str, equation: bool) -> bool:
    if not any(c.isdigit() for c in low) or (equation and "=" not in low):
        return True
    for w in _WORD.findall(low):
        if w not in _KNOWN_WORDS and not (equation and len(w) == 1):
            return True
    return False


def _normalize_candidate(text: str, equation: bool) -> str | None:
    """The candidate rewritten for SymPy, or ``None`` when it is not short and safe."""
    s = text.strip()
    if not s or len(s) > _MAX_RAW_CHARS:
        return None
    if s.startswith("\\(") and s.endswith("\\)") or s.startswith("\\[") and s.endswith("\\]"):
        s = s[2:-2]
    s = s.strip().strip("$").strip().lower()
    if _quick_reject(s, equation):
        return None
    if "\\" in s:
        for _ in range(3):
            s = _FRAC.sub(r"((\1)/(\2))", s)
            s = _SQRT.sub(lambda m: f"(({m.group(2)})^(1/({m.group(1) or 2})))", s)
        s = _FRAC_SHORT.sub(r"((\1)/(\2))", s)
        s = _SQRT_SHORT.sub(r"((\1)^(1/2))", s)
    for old, new in _LATEX_SUBS:
        s = s.replace(old, new)
    for pat, new in _WORDS:
        s = pat.sub(new, s)
    s = s.strip().rstrip(".?!").strip()
    if not s or len(s) > MAX_SYMPY_CHARS or not any(c.isdigit() for c in s):
        return None
    if not equation:
        return _IMPLICIT_MUL.sub("*", s) if _SAFE_NUMERIC.match(s) else None
    if not _SAFE_EQUATION.match(s) or s.count("=") != 1 or re.search(r"[a-z]{2}", s):
        return None
    if len(set(re.findall(r"[a-z]", s))) != 1:
        return None
    return _IMPLICIT_MUL.sub("*", s)


@functools.lru_cache(maxsize=1)
def _grammar() -> Any:
    from squigglray.symbolic import Grammar  # SymPy is imported on the first candidate only

    # any name is a Symbol, nothing is computed (but a//b, as SymPy's parse_expr left it)
    return Grammar(free_names=True, evaluate=False, floor_div=True)


def _parse_expr(s: str) -> Any:
    """Parse a *vetted* string with the symbolic core's parser, unevaluated (nothing is computed)."""
    from squigglray.symbolic import parse

    return parse(s, _grammar())


_DIGITS = re.compile(r"\d+")


@functools.lru_cache(maxsize=65536)
def _sympy_match(candidate: str, pattern: str) -> bool:
    try:
        if pattern == "numeric_expression":
            expr = _parse_expr(candidate)
            return bool(getattr(expr, "is_number", False)) and not expr.free_symbols
        lhs_s, rhs_s = candidate.split("=")
        if not lhs_s.strip() or not rhs_s.strip():
            return False
        lhs, rhs = _parse_expr(lhs_s), _parse_expr(rhs_s)
        syms = lhs.free_symbols | rhs.free_symbols
        if len(syms) != 1:
            return False
        (sym,) = syms
        number = re.compile(r"\s*-?[\d.]+\s*")
        if (lhs == sym and number.fullmatch(rhs_s)) or (rhs == sym and number.fullmatch(lhs_s)):
            return False   # "x = 5" is an assignment, not an equation
        return True
    except Exception:  # noqa: BLE001 - any parse failure is a no-match
        return False


def _sentence_after(text: str, pos: int) -> str:
    rest = text[pos:pos + _MAX_RAW_CHARS + 1]
    if rest.startswith("$"):
        m = _MATH_SPAN.match(rest)
        return m.group(1) if m else ""
    m = _SENTENCE.match(rest)
    return m.group(0) if m else ""


def _sympy_candidates(text: str, pattern: str) -> list[str]:
    equation = pattern == "univariate_equation"
    raw: list[str] = []
    lead = _EQUATION_LEAD if equation else _NUMERIC_LEAD
    for m in lead.finditer(text):
        raw.append(_sentence_after(text, m.end()))
    if equation:
        raw.extend(m.group(1) for m in _MATH_SPAN.finditer(text) if "=" in m.group(1))
    out: list[str] = []
    for r in raw:
        c = _normalize_candidate(r, equation)
        if c is not None and c not in out:
            out.append(c)
    return out


def sympy_matches(text: str, pattern: str) -> bool:
    """Whether ``text`` holds a candidate of SymPy pattern ``pattern`` (see the module docstring)."""
    if pattern not in SYMPY_PATTERNS:
        raise ValueError(f"unknown sympy pattern {pattern!r}; known: {', '.join(SYMPY_PATTERNS)}")
    # Whether a vetted candidate parses does not depend on its digits, so the (cached) SymPy call
    # sees its shape: "3*17-4" and "8*21-9" are one parse, which makes the rule cheap on millions of rows.
    return any(_sympy_match(_DIGITS.sub("1", c), pattern) for c in _sympy_candidates(text, pattern))


# --------------------------------------------------------------------------------------------
# Validation and the mapper.

def _check_rule(rule: Any) -> None:
    """Raise ValueError (naming the rule) unless ``rule`` is a well-formed Rule."""
    if not isinstance(rule, Rule):
        raise ValueError(f"not a Rule: {rule!r}")
    name = f"rule {rule.rule_id!r}"
    if not isinstance(rule.rule_id, str) or not rule.rule_id.strip():
        raise ValueError(f"{name}: rule_id must be a non-empty string")
    if rule.rule_id == UNASSIGNED:
        raise ValueError(f"{name}: rule_id {UNASSIGNED!r} is reserved")
    if rule.family_id not in FAMILIES:
        raise ValueError(f"{name}: unknown family {rule.family_id!r}; known: {', '.join(FAMILIES)}")
    if rule.kind not in KINDS:
        raise ValueError(f"{name}: unknown kind {rule.kind!r}; known: {', '.join(KINDS)}")
    if rule.field not in FIELDS:
        raise ValueError(f"{name}: unknown field {rule.field!r}; known: {', '.join(FIELDS)}")
    if not isinstance(rule.patterns, tuple) or not rule.patterns:
        raise ValueError(f"{name}: patterns must be a non-empty list of strings")
    for p in rule.patterns:
        if not isinstance(p, str) or not p:
            raise ValueError(f"{name}: pattern {p!r} must be a non-empty string")
    if not isinstance(rule.doc, str):
        raise ValueError(f"{name}: doc must be a string")
    if rule.kind == "regex":
        for p in rule.patterns:
            try:
                re.compile(p, re.IGNORECASE)
            except re.error as e:
                raise ValueError(f"{name}: bad regex {p!r}: {e}") from None
    elif rule.kind == "answer_type":
        if rule.field != "answer":
            raise ValueError(f"{name}: answer_type rules must have field 'answer'")
        for p in rule.patterns:
            if p not in ANSWER_TYPES:
                raise ValueError(f"{name}: unknown answer type {p!r}; known: {', '.join(ANSWER_TYPES)}")
    elif rule.kind == "sympy":
        for p in rule.patterns:
            if p not in SYMPY_PATTERNS:
                raise ValueError(f"{name}: unknown sympy pattern {p!r}; known: {', '.join(SYMPY_PATTERNS)}")


def validate_rules(rules: Sequence[Rule]) -> None:
    """Raise ValueError naming the first bad rule (duplicate id, unknown family/kind/field, bad regex)."""
    seen: set[str] = set()
    for rule in rules:
        _check_rule(rule)
        if rule.rule_id in seen:
            raise ValueError(f"rule {rule.rule_id!r}: duplicate rule_id")
        seen.add(rule.rule_id)


def _required_literals(items: Any) -> frozenset[str] | None:
    """Lower-case strings one of which every match of the parsed regex ``items`` contains, or None.

    Walks the ``re`` parse tree: runs of literal characters, alternations whose every branch has
    such strings, and groups / repeats with min >= 1. Anything unknown contributes nothing, so the
    answer is always a necessary condition (a pre-filter), never a change of meaning.
    """
    cands: list[frozenset[str]] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            cands.append(frozenset(["".join(run)]))
            run.clear()

    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            c = chr(av)
            if c.isascii() or c.lower() == c == c.upper():   # no exotic case folding (e.g. U+017F)
                run.append(c.lower())
                continue
        flush()
        sub = None
        if name == "BRANCH":
            alts = [_required_literals(b) for b in av[1]]
            if all(a is not None for a in alts):
                sub = frozenset().union(*alts)  # type: ignore[arg-type]
        elif name == "SUBPATTERN":
            sub = _required_literals(av[-1])
        elif name in ("MAX_REPEAT", "MIN_REPEAT") and av[0] >= 1:
            sub = _required_literals(av[2])
        if sub:
            cands.append(sub)
    flush()
    if not cands:
        return None
    return max(cands, key=lambda c: (min(map(len, c)), -len(c)))


def _literal_gate(pattern: str) -> frozenset[str] | None:
    try:
        from re import _parser  # type: ignore[attr-defined]

        gate = _required_literals(_parser.parse(pattern, re.IGNORECASE))
    except Exception:  # noqa: BLE001 - no gate is always correct, only slower
        return None
    return gate if gate and all(gate) else None


def _any_of(literals: Any) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(x) for x in sorted(literals, key=lambda x: (-len(x), x))))


def _compile_regexes(patterns: tuple[str, ...]) -> tuple[re.Pattern[str] | None, list[tuple[Any, re.Pattern[str]]]]:
    """(rule pre-filter, [(pattern pre-filter, pattern compiled with IGNORECASE)]).

    A pre-filter (see ``_required_literals``) is a plain string or a literal alternation that is
    searched in the lower-cased text; when it is absent the pattern cannot match and is skipped.
    """
    gates = [_literal_gate(p) for p in patterns]
    compiled = [re.compile(p, re.IGNORECASE) for p in patterns]
    per = [(None if g is None else (next(iter(g)) if len(g) == 1 else _any_of(g)), rx) for g, rx in zip(gates, compiled)]
    rule_gate = None if any(g is None for g in gates) else _any_of(frozenset().union(*gates))
    return rule_gate, per


class FamilyMapper:
    """Assigns ``(family_id, rule_id)`` to a problem with an ordered rule list; first match wins.

    Built once per rule list (validated and precompiled), then ``assign`` is cheap: the text is
    lower-cased once, each keyword rule is one regex over it, and each regex pattern is skipped
    unless a literal it requires occurs in the lower-cased text (ASCII texts only; the result is
    exactly that of ``re.search(p, text, re.IGNORECASE)``). SymPy results are memoised.
    """

    def __init__(self, rules: Sequence[Rule] = DEFAULT_RULES):
        rules = tuple(rules)
        validate_rules(rules)
        self.rules: tuple[Rule, ...] = rules
        self.rule_ids: tuple[str, ...] = tuple(r.rule_id for r in rules) + (UNASSIGNED,)
        self._checks: list[tuple[Rule, Any]] = []
        for r in rules:
            if r.kind == "keyword":
                check: Any = re.compile("|".join(re.escape(p.lower()) for p in r.patterns))
            elif r.kind == "regex":
                check = _compile_regexes(r.patterns)
            else:
                check = frozenset(r.patterns)
            self._checks.append((r, check))

    @staticmethod
    def target_type(family_id: str) -> str | None:
        return target_type(family_id)

    def assign(self, problem: str, answer: str | None) -> tuple[str, str]:
        """``(family_id, rule_id)`` of the first matching rule, or ``(UNASSIGNED, "unassigned")``."""
        texts = {"problem": problem if isinstance(problem, str) else ("" if problem is None else str(problem)),
                 "answer": None if answer is None else str(answer)}
        lowered: dict[str, str] = {}
        ascii_ok: dict[str, bool] = {}
        ans_type: list[str | None] = []   # computed at most once
        for rule, check in self._checks:
            text = texts[rule.field]
            if text is None:
                continue
            kind = rule.kind
            if kind == "keyword":
                low = lowered.get(rule.field)
                if low is None:
                    low = lowered[rule.field] = text.lower()
                hit = check.search(low) is not None
            elif kind == "regex":
                low = lowered.get(rule.field)
                if low is None:
                    low = lowered[rule.field] = text.lower()
                if rule.field not in ascii_ok:
                    ascii_ok[rule.field] = text.isascii()   # gates assume str.lower() == re's case folding
                rule_gate, per = check
                is_ascii = ascii_ok[rule.field]
                if is_ascii and rule_gate is not None and rule_gate.search(low) is None:
                    continue
                hit = False
                for gate, rx in per:
                    if gate is not None and is_ascii:
                        if (gate not in low) if gate.__class__ is str else (gate.search(low) is None):
                            continue
                    if rx.search(text) is not None:
                        hit = True
                        break
            elif kind == "answer_type":
                if not ans_type:
                    ans_type.append(classify_answer(text))
                hit = ans_type[0] in check
            else:
                hit = any(sympy_matches(text, p) for p in rule.patterns)
            if hit:
                return rule.family_id, rule.rule_id
        return UNASSIGNED, UNASSIGNED


# --------------------------------------------------------------------------------------------
# JSON / YAML.

def rules_to_json(rules: Sequence[Rule]) -> list[dict]:
    """Plain dicts (all six keys), in order; ``rules_from_json`` inverts it."""
    return [{"rule_id": r.rule_id, "family_id": r.family_id, "kind": r.kind, "patterns": list(r.patterns),
             "field": r.field, "doc": r.doc} for r in rules]


def _rule_from_mapping(i: int, d: Any) -> Rule:
    if not isinstance(d, dict):
        raise ValueError(f"entry #{i}: expected a mapping with keys {', '.join(_RULE_KEYS)}, got {type(d).__name__}")
    label = f"entry #{i} ({d.get('rule_id')!r})"
    unknown = sorted(set(map(str, d)) - set(_RULE_KEYS))
    if unknown:
        raise ValueError(f"{label}: unknown keys {unknown}; allowed: {', '.join(_RULE_KEYS)}")
    missing = [k for k in ("rule_id", "family_id", "kind", "patterns") if k not in d]
    if missing:
        raise ValueError(f"{label}: missing keys {missing}")
    patterns = d["patterns"]
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, (list, tuple)):
        raise ValueError(f"{label}: patterns must be a list of strings")
    field = d.get("field", "answer" if d["kind"] == "answer_type" else "problem")
    rule = Rule(rule_id=d["rule_id"], family_id=d["family_id"], kind=d["kind"], patterns=tuple(patterns),
                field=field, doc=d.get("doc", "") or "")
    try:
        _check_rule(rule)
    except ValueError as e:
        raise ValueError(f"entry #{i}: {e}") from None
    return rule


def rules_from_json(data: Sequence[dict]) -> tuple[Rule, ...]:
    """Rules from a list of mappings (as written by ``rules_to_json``); ValueError names the bad entry."""
    if not isinstance(data, (list, tuple)):
        raise ValueError(f"rules must be a list of mappings, got {type(data).__name__}")
    rules = tuple(_rule_from_mapping(i, d) for i, d in enumerate(data))
    validate_rules(rules)
    return rules


def load_rules(path: str | Path) -> tuple[Rule, ...]:
    """Rules from a YAML or JSON file holding a list of rule mappings (or ``{rules: [...]}``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{p}: cannot read rules file: {e}") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - json/yaml syntax errors
        raise ValueError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {e}") from None
    if isinstance(data, dict) and set(data) == {"rules"}:
        data = data["rules"]
    try:
        return rules_from_json(data)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None


def rules_hash(rules: Sequence[Rule]) -> str:
    """sha256 hex of the canonical JSON of ``rules_to_json(rules)`` (order matters)."""
    blob = json.dumps(rules_to_json(rules), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
