"""Solver evaluation: the metrics on handcrafted candidates, then the job end to end on the nano model."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from squigglray.eval.solver import (
    ProblemResult, SolverEvalConfig, disjoint_groups, markdown_table, metric_rows, parse_ns, score_problem,
)
from squigglray.jobs.eval_solver import eval_solver
from squigglray.schemas.solve import CandidateRecord
from squigglray.solve.answers import is_correct


def cand(i: int, answer: str | None, code_ok: bool = False) -> CandidateRecord:
    w = 0.0 if answer is None or not answer.isdigit() else (2.0 if code_ok else 1.0)
    return CandidateRecord(index=i, answer=answer, code_ok=code_ok, finished=True, rounds=1, tokens=10, weight=w)


@pytest.mark.parametrize("answer,gold,ok", [
    ("42", 42, True), ("042", "42", True), ("42.0", 42, True), ("\\boxed{42}", 42, True), ("41", 42, False),
    (None, 42, False), ("", 42, False), ("x=\\frac{1}{2}", "\\frac{1}{2}", True), ("-3", "-3", True),
    ("123456", 123456, True), ("12.5", 12, False),
])
def test_is_correct(answer, gold, ok):
    assert is_correct(answer, gold) is ok


def test_disjoint_groups_cover_consecutive_blocks_and_drop_the_remainder():
    assert [list(g) for g in disjoint_groups(10, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(disjoint_groups(8, 1)) == 8 and len(disjoint_groups(3, 4)) == 0


def test_pass1_and_majority_over_disjoint_groups():
    cands = [cand(0, "5"), cand(1, "5"), cand(2, "7"), cand(3, None)]
    s1, s2, s4 = (score_problem(cands, 5, n) for n in (1, 2, 4))
    assert s1["pass1"] == s2["pass1"] == s4["pass1"] == 0.5  # pass@1 uses every candidate
    assert s1["maj"] == 0.5 and s1["groups"] == 4  # N=1: each candidate is its own vote
    assert s2["maj"] == 0.5 and s2["groups"] == 2  # {5,5} right, {7,None} wrong
    assert s2["any"] == 0.5
    assert s4["maj"] == s4["weighted"] == s4["any"] == 1.0 and s4["groups"] == 1
    with pytest.raises(ValueError, match="only 4 candidates"):
        score_problem(cands, 5, 8)


def test_weighted_vote_and_majority_differ_when_code_ran():
    # three text-only candidates say 12; two whose code ran cleanly say 7 (weight 2 each: 4 > 3)
    cands = [cand(0, "12"), cand(1, "12"), cand(2, "12"), cand(3, "7", True), cand(4, "7", True)]
    s = score_problem(cands, 7, 5)
    assert s["maj"] == 0.0 and s["weighted"] == 1.0 and s["pass1"] == pytest.approx(0.4)
    # non-integer answers count for the majority but not for the AIMO vote
    frac = [cand(0, "1/2"), cand(1, "1/2"), cand(2, "1/2"), cand(3, "4"), cand(4, "4")]
    s = score_problem(frac, 4, 5)
    assert s["maj"] == 0.0 and s["weighted"] == 1.0


def test_metric_rows_average_problems_equally():
    from squigglray.families import sample

    a, b = sample("arithmetic", 2, seed=3)
    pa_ = ProblemResult(a, "easy", {True: [cand(i, str(a.answer), True) for i in range(4)],
                                    False: [cand(i, "0") for i in range(4)]})
    pb = ProblemResult(b, "easy", {True: [cand(0, str(b.answer), True)] + [cand(i, "1") for i in range(1, 4)],
                                   False: [cand(i, "0") for i in range(4)]})
    rows = {(r["code"], r["n"]): r for r in metric_rows([pa_, pb], [1, 4], [True, False])}
    assert rows[(True, 1)]["pass1"] == pytest.approx((1.0 + 0.25) / 2)
    assert rows[(True, 1)]["maj"] == pytest.approx((1.0 + 0.25) / 2)
    assert rows[(True, 4)]["weighted"] == pytest.approx(0.5) and rows[(True, 4)]["any"] == 1.0
    assert rows[(False, 4)]["pass1"] == 0.0 and rows[(True, 4)]["problems"] == 2
    md = markdown_table(list(rows.values()))
    assert md.startswith("| code | N |") and md.count("\n") == 6


def test_config_validation_and_ns_parsing():
    from squigglray.config import ConfigError, build_config

    assert SolverEvalConfig(ns=[16, 1, 4, 4]).ns == [1, 4, 16]
    assert parse_ns("1, 4,16") == [1, 4, 16]
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_ns("1,x")
    with pytest.raises(ConfigError, match="unknown families"):
        build_config(SolverEvalConfig, {"families": ["nope"]})
    with pytest.raises(ConfigError, match="ns"):
        build_config(SolverEvalConfig, {"ns": [0, 4]})
    opts = SolverEvalConfig(ns=[1, 8]).solve_options(False)
    assert opts.n == 8 and not opts.execute_code and not opts.early_stop


def test_eval_solver_end_to_end_on_nano(solver_store):
    from squigglray.training import BaseTrainConfig
    from squigglray.training.data import build_pool

    out = eval_solver(solver_store, "nano", executor="local", families=["arithmetic", "mod_power"], levels=["easy"],
                      per_family=1, ns=(1, 2, 4), rounds=1, max_tokens_per_round=96, sandbox_workers=1,
                      out_dir="evals/nano-test", progress=False)
    d = solver_store.local_path("evals/nano-test")
    for rel in ("solver_eval.json", "solver_eval.parquet", "solver_eval.md", "plots/solver_accuracy.png"):
        assert (d / rel).exists(), rel
    assert (d / "plots" / "solver_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    js = json.loads((d / "solver_eval.json").read_text())
    run = json.loads(solver_store.local_path(f"{solver_store.run_dir(js['provenance']['run_id'])}/run.json").read_text())
    prov = js["provenance"]
    assert prov["run_id"] == run["provenance"]["run_id"] and prov["config_hash"] == run["provenance"]["config_hash"]
    for key in ("seed", "dataset_slice_hash", "package_version"):
        assert prov[key] is not None
    ev = js["evaluation"]
    for key in ("config_hash", "slice_hash", "instance_seed", "sample_seed", "package_version"):
        assert ev[key] is not None, key
    assert js["ns"] == [1, 2, 4] and js["families"] == ["arithmetic", "mod_power"]
    assert {(r["code"], r["n"]) for r in js["table"]} == {(c, n) for c in (True, False) for n in (1, 2, 4)}
    assert set(js["per_family"]) == {"arithmetic", "mod_power"}
    for r in js["table"]:
        assert 0 <= r["pass1"] <= 1 and 0 <= r["maj"] <= 1 and r["maj"] <= r["any"] + 1e-9 and r["problems"] == 2
    assert "| code | N |" in out["markdown"]

    rows = pq.read_table(d / "solver_eval.parquet").to_pylist()
    assert len(rows) == 2 * 4 * 2  # problems x max N x code modes
    assert {"problem_id", "family_id", "level", "code", "index", "answer", "correct", "code_ok", "weight",
            "tokens", "run_id", "config_hash", "dataset_slice_hash", "package_version"} <= set(rows[0])
    assert all(r["run_id"] == prov["run_id"] for r in rows)
    assert not any(r["code_ok"] for r in rows if not r["code"])  # no code executed without the tool
    # the model writes well-formed traces: with the sandbox some candidates ran code
    assert any(r["code_ok"] for r in rows if r["code"])
    # held-out: no evaluated problem was in the run's training pool
    train = build_pool(BaseTrainConfig.model_validate(run["config"])).problems()
    probs = {p.instance.problem for p in out["problems"]}
    assert probs and not probs & train


def test_unknown_run_is_a_clear_error(solver_store):
    from squigglray.models import ModelNotFound

    with pytest.raises(ModelNotFound, match="no run 'nope'"):
        eval_solver(solver_store, run_id="nope", progress=False)
