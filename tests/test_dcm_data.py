"""DCM Q-A pair loaders: fixture files in the official layouts, generators, errors."""

from __future__ import annotations

import ast
import json
import operator
import random
import subprocess
import sys
import time

import pytest

from squigglray.dcm.data import (
    WORDS, DatasetError, QAPair, arithmetic_pairs, family_pairs, generate_sudoku, length_pairs, load_arc,
    load_pairs, load_paraphrases, load_squad, solve_sudoku, sudoku_pairs,
)


def test_no_ray_import():
    code = "import sys, squigglray.dcm.data; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_qapair_validation():
    with pytest.raises(ValueError, match="'p1'.*question"):
        QAPair("p1", "  ", "a", "x")
    with pytest.raises(ValueError, match="'p2'.*answer"):
        QAPair("p2", "q", "", "x")
    assert QAPair("p3", "q", "a", "x", q_variants=["q2"]).q_variants == ("q2",)


# ---------------------------------------------------------------- SQuAD

def _qa(qid, q, answers, impossible=False, plausible=None):
    d = {"id": qid, "question": q, "answers": [{"text": t, "answer_start": 0} for t in answers],
         "is_impossible": impossible}
    if plausible is not None:
        d["plausible_answers"] = [{"text": plausible, "answer_start": 0}]
    return d


def _squad_doc():
    return {"version": "v2.0", "data": [
        {"title": "Normans", "paragraphs": [
            {"context": "The Normans were in Normandy.", "qas": [
                _qa("a1", "In what country is Normandy located?", ["France", "France"]),
                _qa("a2", "Who gave their name to Normandy?", [], True, plausible="Normans"),
                _qa("a3", "When were the Normans in Normandy?", [" 10th century "])]},
            {"context": "Rollo was a leader.", "qas": [_qa("a4", "Who was Rollo?", ["a leader"])]}]},
        {"title": "Physics", "paragraphs": [
            {"context": "Force is mass times acceleration.", "qas": [
                _qa("b1", "What is force?", ["mass times acceleration"]),
                _qa("b2", "What is nothing?", [], True),
                _qa("b3", "What is mass times acceleration?", ["Force"])]}]}]}


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_squad_answerable(tmp_path):
    p = _write(tmp_path, "dev-v2.0.json", _squad_doc())
    pairs = load_squad(p)
    assert [x.pair_id for x in pairs] == ["a1", "a3", "a4", "b1", "b3"]
    by = {x.pair_id: x for x in pairs}
    assert by["a1"].answer == "France" and by["a1"].question == "In what country is Normandy located?"
    assert by["a3"].answer == "10th century" and by["b3"].source == "squad2"
    kept = load_squad(p, answerable_only=False)
    assert {x.pair_id: x.answer for x in kept}["a2"] == "Normans" and "b2" not in {x.pair_id for x in kept}


def test_squad_subsample(tmp_path):
    p = _write(tmp_path, "s.json", _squad_doc())
    a, b = load_squad(p, n=3, seed=0), load_squad(p, n=3, seed=0)
    assert a == b and len(a) == 3
    orders = {tuple(x.pair_id for x in load_squad(p, n=5, seed=s)) for s in range(6)}
    assert len(orders) > 1  # seed-dependent
    assert {x.pair_id for x in load_squad(p, n=5, seed=3)} == {"a1", "a3", "a4", "b1", "b3"}
    with pytest.raises(DatasetError, match="n=9"):
        load_squad(p, n=9)


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d["data"][1]["paragraphs"][0].pop("qas"), r"data\[1\]\.paragraphs\[0\]: missing key 'qas'"),
    (lambda d: d["data"][0]["paragraphs"][1]["qas"][0].update(answers="x"),
     r"data\[0\]\.paragraphs\[1\]\.qas\[0\]\.answers: expected list"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][2].pop("id"), r"qas\[2\]: missing key 'id'"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0]["answers"][0].pop("text"),
     r"qas\[0\]\.answers\[0\]: missing key 'text'"),
    (lambda d: d.update(data={}), r"<root>\.data: expected list"),
])
def test_squad_malformed(tmp_path, mutate, where):
    doc = _squad_doc()
    mutate(doc)
    p = _write(tmp_path, "bad.json", doc)
    with pytest.raises(DatasetError, match=where) as e:
        load_squad(p)
    assert "bad.json" in str(e.value)


def test_squad_not_json(tmp_path):
    p = _write(tmp_path, "broken.json", '{"data": [')
    with pytest.raises(DatasetError, match="broken.json.*not valid JSON"):
        load_squad(p)
    with pytest.raises(DatasetError, match="cannot read"):
        load_squad(tmp_path / "missing.json")


def test_squad_duplicate_id(tmp_path):
    doc = _squad_doc()
    doc["data"][1]["paragraphs"][0]["qas"][0]["id"] = "a1"
    with pytest.raises(DatasetError, match="duplicate id 'a1'"):
        load_squad(_write(tmp_path, "d.json", doc))


# ---------------------------------------------------------------- arithmetic

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _safe_eval(expr: str) -> int:
    node = ast.parse(expr, mode="eval").body
    assert isinstance(node, ast.BinOp) and type(node.op) in _BIN
    assert isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant)
    return _BIN[type(node.op)](node.left.value, node.right.value)


def test_arithmetic():
    pairs = arithmetic_pairs(200, seed=5, max_operand=20)
    assert len(pairs) == 200 and len({p.question for p in pairs}) == 200
    for p in pairs:
        assert p.question.endswith("=?")
        assert str(_safe_eval(p.question[:-2])) == p.answer
    assert pairs == arithmetic_pairs(200, seed=5, max_operand=20)
    assert pairs != arithmetic_pairs(200, seed=6, max_operand=20)
    assert all("*" not in p.question and "-" not in p.question[1:] for p in arithmetic_pairs(20, ops="+"))
    assert len(arithmetic_pairs(8, max_operand=1, ops="+-")) == 8  # all 2*2*2 questions
    with pytest.raises(ValueError, match="distinct"):
        arithmetic_pairs(9, max_operand=1, ops="+-")
    with pytest.raises(ValueError, match="ops"):
        arithmetic_pairs(3, ops="+/")


# ---------------------------------------------------------------- sudoku

def _valid_solution(sol, puzzle):
    digits = set(range(1, 10))
    rows_ok = all(set(r) == digits for r in sol)
    cols_ok = all({sol[r][c] for r in range(9)} == digits for c in range(9))
    boxes_ok = all({sol[br + i][bc + j] for i in range(3) for j in range(3)} == digits
                   for br in (0, 3, 6) for bc in (0, 3, 6))
    givens_ok = all(puzzle[r][c] in (0, sol[r][c]) for r in range(9) for c in range(9))
    return rows_ok and cols_ok and boxes_ok and givens_ok


def _count_solutions_naive(g, limit=2):
    """Independent check: plain backtracking in reading order, no candidate sets."""
    for r in range(9):
        for c in range(9):
            if g[r][c] == 0:
                n = 0
                for d in range(1, 10):
                    if (all(g[r][k] != d for k in range(9)) and all(g[k][c] != d for k in range(9))
                            and all(g[r // 3 * 3 + i][c // 3 * 3 + j] != d for i in range(3) for j in range(3))):
                        g[r][c] = d
                        n += _count_solutions_naive(g, limit - n)
                        g[r][c] = 0
                        if n >= limit:
                            break
                return n
    return 1


def test_generated_sudoku_unique():
    rng = random.Random(7)
    for _ in range(3):
        puzzle, sol = generate_sudoku(rng, 40)
        assert sum(v == 0 for row in puzzle for v in row) == 40
        assert _valid_solution(sol, puzzle)
        assert _count_solutions_naive([row[:] for row in puzzle]) == 1
        assert solve_sudoku(puzzle) == [sol]


def test_sudoku_solver_multiple_and_invalid():
    sols = solve_sudoku([[0] * 9 for _ in range(9)], limit=2)
    assert len(sols) == 2 and sols[0] != sols[1]
    assert all(_valid_solution(s, [[0] * 9] * 9) for s in sols)
    clash = [[0] * 9 for _ in range(9)]
    clash[0][0] = clash[0][5] = 3
    assert solve_sudoku(clash) == []
    with pytest.raises(ValueError):
        solve_sudoku([[0] * 8 for _ in range(9)])
    with pytest.raises(ValueError, match="holes"):
        generate_sudoku(random.Random(0), 70)


def test_sudoku_pairs_format_and_speed():
    t = time.perf_counter()
    pairs = sudoku_pairs(10, seed=1, holes=45)
    assert time.perf_counter() - t < 5.0
    assert pairs == sudoku_pairs(10, seed=1, holes=45)
    assert len({p.question for p in pairs}) == 10
    for p in pairs:
        head, grid = p.question.split("\n", 1)
        assert head == "Solve the sudoku:"
        q_rows, a_rows = grid.split("\n"), p.answer.split("\n")
        assert len(q_rows) == len(a_rows) == 9 and all(len(r) == 9 for r in q_rows + a_rows)
        assert sum(r.count(".") for r in q_rows) == 45 and all(r.isdigit() for r in a_rows)
        puzzle = [[0 if ch == "." else int(ch) for ch in r] for r in q_rows]
        assert _valid_solution([[int(ch) for ch in r] for r in a_rows], puzzle)


# ---------------------------------------------------------------- ARC

def _arc_tasks(tmp_path):
    d = tmp_path / "evaluation"
    d.mkdir()
    _write(d, "bbb22222.json", {"train": [{"input": [[0, 1], [2, 3]], "output": [[3, 2], [1, 0]]}],
                                "test": [{"input": [[4, 5], [6, 7]], "output": [[7, 6], [5, 4]]},
                                         {"input": [[1]], "output": [[1]]}]})
    _write(d, "aaa11111.json", {"train": [{"input": [[1, 1, 0]], "output": [[0, 1, 1]]},
                                          {"input": [[2, 0, 0]], "output": [[0, 0, 2]]}],
                                "test": [{"input": [[3, 0, 0]]}]})
    return d


def test_arc_load(tmp_path):
    d = _arc_tasks(tmp_path)
    pairs = load_arc(d)
    assert [p.pair_id for p in pairs] == ["bbb22222:0", "bbb22222:1"]
    assert pairs[0].question == "input:\n01\n23\noutput:\n32\n10\n\ninput:\n45\n67\noutput:"
    assert pairs[0].answer == "76\n54" and pairs[1].answer == "1" and pairs[0].source == "arc"
    assert load_arc(d, n=1) == pairs[:1]
    assert load_arc(d / "bbb22222.json") == pairs
    assert load_arc(d / "aaa11111.json") == []


@pytest.mark.parametrize("grid, msg", [
    ([[1, 2], [3]], "ragged grid"),
    ([[1, 10]], r"test\[0\]\.output\[0\]\[1\]: cell must be an int 0\.\.9, got 10"),
    ([], "non-empty"),
    ([[1, True]], "cell must be an int"),
])
def test_arc_bad_grid(tmp_path, grid, msg):
    p = _write(tmp_path, "t1.json", {"train": [{"input": [[0]], "output": [[1]]}],
                                     "test": [{"input": [[0]], "output": grid}]})
    with pytest.raises(DatasetError, match=msg) as e:
        load_arc(p)
    assert "t1.json" in str(e.value)


def test_arc_missing_keys(tmp_path):
    p = _write(tmp_path, "t2.json", {"train": [{"input": [[0]]}], "test": []})
    with pytest.raises(DatasetError, match=r"t2\.json: train\[0\]: missing key 'output'"):
        load_arc(p)
    with pytest.raises(DatasetError, match="no such file"):
        load_arc(tmp_path / "nope")


# ---------------------------------------------------------------- families, length, paraphrases

def test_family_pairs():
    from squigglray.families import sample

    pairs = family_pairs(["arithmetic", "gcd_lcm"], n_per_family=3, seed=2)
    assert len(pairs) == 6 and pairs == family_pairs(["arithmetic", "gcd_lcm"], n_per_family=3, seed=2)
    inst = sample("gcd_lcm", 3, seed=2, difficulty="easy")[1]
    p = pairs[4]
    assert (p.pair_id, p.question, p.answer, p.source) == (inst.instance_id, inst.problem, str(inst.answer),
                                                           "family:gcd_lcm")
    assert len(family_pairs(n_per_family=1)) >= 10  # all families


def test_length_pairs():
    pairs = length_pairs([5, 64], n_per_length=3, seed=1)
    assert [p.pair_id for p in pairs] == ["len5:0", "len5:1", "len5:2", "len64:0", "len64:1", "len64:2"]
    assert [len(p.answer.split()) for p in pairs] == [5, 5, 5, 64, 64, 64]
    assert pairs[1].question == "Recite text 1." and all(w in WORDS for p in pairs for w in p.answer.split())
    assert pairs == length_pairs([5, 64], 3, seed=1) and pairs != length_pairs([5, 64], 3, seed=2)
    assert length_pairs([64], 3, seed=1) == pairs[3:]  # a length's texts do not depend on the others
    assert set(length_pairs([10], 2, vocab="red blue")[0].answer.split()) <= {"red", "blue"}
    assert 150 <= len(set(WORDS))


def test_paraphrases(tmp_path):
    pairs = arithmetic_pairs(3)
    lines = [json.dumps({"pair_id": "arith:0:1", "q_variants": ["what is it?"], "a_variants": ["x"]}), "",
             json.dumps({"pair_id": "arith:0:2", "q_variants": ["again?"]})]
    out = load_paraphrases(_write(tmp_path, "para.jsonl", "\n".join(lines)), pairs)
    assert out[0] == pairs[0]
    assert out[1].q_variants == ("what is it?",) and out[1].a_variants == ("x",) and out[1].answer == pairs[1].answer
    assert out[2].q_variants == ("again?",) and out[2].a_variants == ()


@pytest.mark.parametrize("lines, msg", [
    (['{"pair_id": "arith:0:0"}', '{"pair_id": "nope"}'], "line 2: unknown pair_id 'nope'"),
    (['{"pair_id": "arith:0:0", "q_variants": "x"}'], r"line 1\.q_variants: expected list"),
    (['{"pair_id": "arith:0:0", "q_variants": [""]}'], "non-empty strings"),
    (["", "{not json"], "line 2: not valid JSON"),
    (['{"q_variants": []}'], "line 1: missing key 'pair_id'"),
    (['{"pair_id": "arith:0:0"}', '{"pair_id": "arith:0:0"}'], "line 2: duplicate"),
])
def test_paraphrases_errors(tmp_path, lines, msg):
    p = _write(tmp_path, "p.jsonl", "\n".join(lines))
    with pytest.raises(DatasetError, match=msg) as e:
        load_paraphrases(p, arithmetic_pairs(2))
    assert "p.jsonl" in str(e.value)


# ---------------------------------------------------------------- dispatch

def test_load_pairs(tmp_path):
    sq = _write(tmp_path, "s.json", _squad_doc())
    assert load_pairs({"kind": "squad", "path": str(sq), "n": 2, "seed": 1}) == load_squad(sq, n=2, seed=1)
    assert load_pairs({"kind": "arithmetic", "n": 4}) == arithmetic_pairs(4)
    assert load_pairs({"kind": "sudoku", "n": 1, "holes": 30}) == sudoku_pairs(1, holes=30)
    assert load_pairs({"kind": "arc", "path": _arc_tasks(tmp_path)})[0].pair_id == "bbb22222:0"
    assert len(load_pairs({"kind": "families", "families": ["crt"], "n_per_family": 2})) == 2
    assert load_pairs({"kind": "length", "lengths": [3], "n_per_length": 2}) == length_pairs([3], 2)
    para = _write(tmp_path, "p.jsonl", '{"pair_id": "arith:0:0", "q_variants": ["v"]}')
    assert load_pairs({"kind": "arithmetic", "n": 2, "paraphrases": para})[0].q_variants == ("v",)


def test_load_pairs_errors():
    with pytest.raises(DatasetError, match="unknown data kind 'trivia'.*arc, arithmetic, families, length, squad, sudoku"):
        load_pairs({"kind": "trivia"})
    with pytest.raises(DatasetError, match="unknown data kind None"):
        load_pairs({"n": 3})
    with pytest.raises(DatasetError, match="bad arguments for data kind 'arithmetic'"):
        load_pairs({"kind": "arithmetic", "n": 3, "bogus": 1})
