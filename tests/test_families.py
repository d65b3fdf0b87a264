"""Synthetic problem families: registry, contract, solve == brute, determinism, errors, known answers."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest

from squigglray.families import LEVELS, BadKnob, UnknownFamily, get_family, list_families, sample
from squigglray.families.base import AIMO_MAX, stable_seed
from squigglray.families.trace import extract_code
from squigglray.solve.answers import extract_boxed
from squigglray.schemas.problems import STEP_TYPES, TARGET_TYPES

FAMILIES = list_families()
REPO = Path(__file__).resolve().parents[1]


def run_code(code: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(code, {"__name__": "__main__"})
    return buf.getvalue()


def family_level_params():
    for fid in FAMILIES:
        for level in LEVELS:
            yield pytest.param(fid, level, id=f"{fid}-{level}")


# ----- registry -----


def test_registry_size_and_target_coverage():
    assert len(FAMILIES) >= 12
    covered = {get_family(f).target_type for f in FAMILIES}
    assert set(TARGET_TYPES) <= covered, f"uncovered target types: {set(TARGET_TYPES) - covered}"


@pytest.mark.parametrize("fid", FAMILIES)
def test_class_contract(fid):
    fam = get_family(fid)
    assert fam.family_id == fid and fam.target_type in TARGET_TYPES and fam.title and fam.reasoning
    assert 2 <= len(fam.templates) <= 3
    assert "\n" not in fam.reasoning
    grows = False
    for name, kn in fam.knobs.items():
        assert kn.lo <= kn.easy <= kn.medium <= kn.hard <= kn.hi, f"{fid}.{name}: {kn}"
        grows |= kn.easy < kn.hard
    assert grows, f"{fid}: no knob gets harder from easy to hard"
    if fam.answer_modulus is not None:
        assert 1 < fam.answer_modulus <= AIMO_MAX + 1
        for t in fam.templates:
            assert str(fam.answer_modulus) in t, f"{fid}: template does not state the modulus: {t!r}"


# ----- every family at every level -----


@pytest.mark.parametrize("fid,level", list(family_level_params()))
def test_sampled_instances(fid, level):
    fam = get_family(fid)
    insts = sample(fid, 30, 123, level)
    assert len(insts) == 30
    for inst in insts:
        p = inst.params
        assert isinstance(inst.answer, int) and 0 <= inst.answer <= AIMO_MAX
        assert inst.family_id == fid and inst.target_type == fam.target_type
        # params: JSON-able scalars or lists of ints
        json.dumps(p)
        for v in p.values():
            assert isinstance(v, (int, str)) or (isinstance(v, list) and all(isinstance(x, int) for x in v)), p
        # every placeholder of every template is a param
        for t in fam.templates:
            fields = {f for _, f, _, _ in string.Formatter().parse(t) if f}
            assert fields <= set(p), f"{fid}: template fields {fields - set(p)} missing from params"
        # outline
        steps = [s.step_type for s in inst.outline]
        assert 3 <= len(steps) <= 6 and all(s in STEP_TYPES for s in steps), steps
        # code: short, numbers first, only math/itertools imports, prints exactly the answer
        lines = inst.code.splitlines()
        assert 1 <= len(lines) <= 8, inst.code
        for node in ast.walk(ast.parse(inst.code)):
            if isinstance(node, ast.Import):
                assert {a.name for a in node.names} <= {"math", "itertools"}, inst.code
            assert not isinstance(node, ast.ImportFrom), inst.code
        assert run_code(inst.code) == f"{inst.answer}\n", (inst.code, inst.answer)
        assert inst.code_output == str(inst.answer)
        # trace
        assert inst.code in inst.trace and extract_code(inst.trace) == inst.code
        assert inst.trace.startswith(fam.reasoning)
        assert inst.trace.endswith(f"\\boxed{{{inst.answer}}}.")
        assert extract_boxed(inst.trace) == str(inst.answer)
        if fam.answer_modulus is not None:
            assert inst.answer < fam.answer_modulus
            assert str(fam.answer_modulus) in inst.problem


@pytest.mark.parametrize("fid", FAMILIES)
def test_code_puts_numbers_on_first_line(fid):
    inst = sample(fid, 1, 5, "medium")[0]
    ints = [v for v in inst.params.values() if isinstance(v, int)]
    first = inst.code.splitlines()[0]
    assert any(str(v) in first for v in ints), inst.code


@pytest.mark.parametrize("fid", FAMILIES)
def test_solve_is_fast_at_hard(fid):
    import random

    fam = get_family(fid)
    k = fam.resolve_knobs("hard")
    params = [fam.draw(random.Random(stable_seed("speed", fid, i)), k) for i in range(30)]
    t0 = time.perf_counter()
    for p in params:
        fam.solve(p)
    assert (time.perf_counter() - t0) / len(params) < 0.05


# ----- solve == brute -----


@pytest.mark.parametrize("fid", FAMILIES)
def test_solve_matches_brute_at_easy(fid):
    fam = get_family(fid)
    for inst in sample(fid, 50, 2024, "easy"):
        assert get_family(fid).brute(inst.params) == inst.answer == fam.solve(inst.params), inst.params


# ----- determinism -----

DIGEST_SRC = """
import hashlib, json
from squigglray.families import list_families, sample
blob = json.dumps(
    [x.model_dump(mode="json") for f in list_families() for lvl in ("easy", "medium") for x in sample(f, 3, 11, lvl)],
    sort_keys=True,
)
print(hashlib.sha256(blob.encode()).hexdigest())
"""


@pytest.mark.parametrize("fid", FAMILIES)
def test_determinism_in_process(fid):
    a, b = sample(fid, 5, 7), sample(fid, 5, 7)
    assert [x.model_dump() for x in a] == [x.model_dump() for x in b]
    tail = sample(fid, 2, 7, start=3)
    assert [x.model_dump() for x in tail] == [x.model_dump() for x in a[3:]]
    other = sample(fid, 5, 8)
    assert [x.problem for x in a] != [x.problem for x in other]


def test_determinism_across_processes():
    here = run_code(DIGEST_SRC).strip()
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run(
        [sys.executable, "-c", DIGEST_SRC], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == here


# ----- errors -----


def test_unknown_family_names_known_ones():
    with pytest.raises(UnknownFamily) as err:
        get_family("nope")
    msg = str(err.value)
    assert "nope" in msg and all(f in msg for f in FAMILIES)
    with pytest.raises(UnknownFamily):
        sample("nope", 1, 0)


@pytest.mark.parametrize("fid", FAMILIES)
def test_bad_knobs(fid):
    fam = get_family(fid)
    with pytest.raises(BadKnob) as err:
        sample(fid, 1, 0, knobs={"bogus": 1})
    assert "bogus" in str(err.value) and all(name in str(err.value) for name in fam.knobs)
    name, kn = next(iter(fam.knobs.items()))
    for bad in (kn.hi + 1, kn.lo - 1):
        with pytest.raises(BadKnob, match="out of range"):
            sample(fid, 1, 0, knobs={name: bad})
    for bad in (2.5, "3", True, None):
        with pytest.raises(BadKnob, match="integer"):
            sample(fid, 1, 0, knobs={name: bad})
    with pytest.raises(BadKnob, match="difficulty"):
        sample(fid, 1, 0, difficulty="impossible")


@pytest.mark.parametrize("fid", FAMILIES)
def test_knob_extremes_stay_in_range(fid):
    """All knobs at lo, all at hi, and each knob alone at lo or hi (others at hard) give valid instances."""
    fam = get_family(fid)
    settings = [{n: kn.lo for n, kn in fam.knobs.items()}, {n: kn.hi for n, kn in fam.knobs.items()}]
    settings += [{n: getattr(kn, end)} for n, kn in fam.knobs.items() for end in ("lo", "hi")]
    for knobs in settings:
        for inst in sample(fid, 10, 99, "hard", knobs=knobs):  # instance() asserts 0 <= answer <= 99999
            assert run_code(inst.code) == f"{inst.answer}\n"


# ----- hand-checked answers -----

KNOWN = [
    ("mod_power", {"a": 3, "e": 4, "m": 5}, 1),  # 81 = 16*5 + 1
    ("mod_power", {"a": 2, "e": 10, "m": 1000}, 24),  # 1024
    ("arithmetic", {"a": 2, "b": 3, "c": 4, "d": 5, "e": 6}, 20),
    ("crt", {"r1": 2, "m1": 3, "r2": 3, "m2": 5}, 8),
    ("crt", {"r1": 1, "m1": 4, "r2": 2, "m2": 9}, 29),  # 2, 11, 20, 29: only 29 = 1 (mod 4)
    ("linear_equation", {"a": 3, "b": 5, "c": 1, "d": 15}, 5),  # 2x = 10
    ("linear_equation", {"a": 2, "b": 40, "c": 7, "d": 5}, 7),  # 35 = 5x
    ("quadratic_roots", {"s": 7, "q": 12}, 4),  # roots 3, 4
    ("quadratic_roots", {"s": 20, "q": 91}, 13),  # roots 7, 13
    ("gcd_lcm", {"a": 48, "b": 180}, 12),
    ("gcd_lcm", {"a": 1071, "b": 462}, 21),  # Euclid's classic example
    ("divisor_count", {"n": 720}, 30),  # 2^4 * 3^2 * 5
    ("divisor_count", {"n": 1000}, 16),  # 2^3 * 5^3
    ("amgm_min", {"a": 2, "b": 8}, 8),  # x = 2
    ("amgm_min", {"a": 4, "b": 9}, 12),  # x = 3/2
    ("discrete_log", {"p": 23, "g": 5, "h": 8}, 6),  # 5, 2, 10, 4, 20, 8
    ("discrete_log", {"p": 11, "g": 2, "h": 1}, 10),  # 2 is a primitive root mod 11
    ("mult_order", {"a": 2, "n": 7}, 3),
    ("mult_order", {"a": 10, "n": 7}, 6),  # 10 = 3, a primitive root mod 7
    ("mult_order", {"a": 3, "n": 8}, 2),  # lambda(8) = 2 < phi(8) = 4
    ("cyclic_elements", {"n": 12, "d": 6}, 2),  # 2 and 10
    ("cyclic_elements", {"n": 36, "d": 12}, 4),  # phi(12)
    ("stars_bars", {"n": 10, "k": 3}, 66),  # C(12, 2)
    ("stars_bars", {"n": 5, "k": 5}, 126),  # C(9, 4)
    ("stair_climb", {"n": 4, "steps": [1, 2]}, 5),
    ("stair_climb", {"n": 7, "steps": [1, 3]}, 9),  # 1,1,1,2,3,4,6,9
    ("stair_climb", {"n": 30, "steps": [1, 2]}, 46386),  # F(31) = 1346269 = 13*99991 + 46386
    ("grid_paths", {"w": 2, "h": 2, "a": 1, "b": 1}, 2),
    ("grid_paths", {"w": 3, "h": 3, "a": 1, "b": 1}, 8),  # 20 - 2*6
    ("functional_equation", {"a": 1, "c": 2, "n": 3}, 9),  # f(2) = 4, f(3) = 4 + 1 + 4
    ("functional_equation", {"a": -5, "c": 2, "n": 10}, 40),  # -50 + 2*45
    ("board_invariant", {"n": 3}, 23),  # 1,2 -> 5; 5,3 -> 23
    ("board_invariant", {"n": 4}, 119),  # 5! - 1
    ("board_invariant", {"n": 99989}, 99989),  # Wilson: 99990! = -1 (mod 99991), so 99990! - 1 = -2
]
SLOW_BRUTE = {("board_invariant", 99989), ("stair_climb", 30)}


@pytest.mark.parametrize("fid,params,answer", KNOWN, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(KNOWN)])
def test_known_answers(fid, params, answer):
    fam = get_family(fid)
    assert fam.solve(params) == answer
    if (fid, params.get("n")) not in SLOW_BRUTE:
        assert fam.brute(params) == answer
    assert run_code(fam.code(params)) == f"{answer}\n"


def test_known_table_covers_every_family():
    assert {f for f, _, _ in KNOWN} == set(FAMILIES)
