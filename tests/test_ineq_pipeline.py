"""The inequality pipeline end to end on nano models, under the session's local Ray: every step
writes its artifacts, a rerun resumes from the cache, and a bad config fails before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from squigglray.config import ConfigError, build_config
from squigglray.ineq.config import IneqConfig


@pytest.fixture(scope="module")
def verifier_model(tmp_path_factory, nano_tokenizer) -> str:
    """A second model for the verifier (seed 002: never the generator's): a random-init nano."""
    from squigglray.models import build_model

    path = tmp_path_factory.mktemp("verifier") / "nano-verifier"
    build_model("nano", nano_tokenizer, 256, seed=1).save_pretrained(path)
    nano_tokenizer.save_pretrained(path)
    return str(path)


def small(verifier: str, **kw) -> IneqConfig:
    cfg = {
        "name": "t", "base_model": "nano",
        "data": {"families": ["reciprocal", "sos", "constrained"], "n_per_family": 6},
        "generation": {"engine": {"backend": "hf", "model": "nano"}, "shots": 1, "max_problems": 4, "max_tokens": 40},
        "verification": {"engine": {"backend": "hf", "model": verifier}, "shots": 2, "max_tokens": 4,
                         "timeout_s": 20},  # a loaded CI machine must not turn a reference proof "unknown"
        "sft": {"max_steps": 4, "batch_size": 4, "max_length": 256, "threads": 1, "eval_before": False,
                "logging_steps": 1},
        "eval": {"max_problems": 3, "k_shots": 1, "max_new_tokens": 32, "judge_max_tokens": 8, "timeout_s": 20},
        "learning_curve": [4, 8],
    }
    cfg.update(kw)
    return build_config(IneqConfig, cfg)


def test_pipeline_runs_every_step_and_resumes(solver_store, ray_session, verifier_model):
    from squigglray.jobs.ineq import run

    logs: list[str] = []
    out = run(small(verifier_model), solver_store.base, log=logs.append)
    exp = Path(solver_store.base) / "experiments" / out["experiment_id"]
    for rel in ("problems/problems.jsonl", "candidates/candidates.parquet", "split/train.jsonl", "split/test.jsonl",
                "baseline/eval.parquet", "final/eval.parquet", "sft/model/config.json", "learning_curve/curve.json",
                "report.md", "plots/sft_loss.png", "plots/learning_curve.png", "result.json"):
        assert (exp / rel).exists(), rel
    cands = pq.read_table(exp / "candidates/candidates.parquet").to_pylist()
    by = {r["generated_by"] for r in cands}
    assert by == {"reference", "nano"} and all(r["verified_by"] == verifier_model for r in cands)
    assert all(r["mech_score"] == 1 for r in cands if r["generated_by"] == "reference")
    ref = [r for r in cands if r["generated_by"] == "reference"]
    assert all(r["mech_claim_verified"] is True and json.loads(r["mech_justification"]) for r in ref)
    assert all(j["justified"] and j["rule"] for r in ref for j in json.loads(r["mech_justification"]))
    assert out["candidates"]["by_source"]["reference"]["claim_verified"] == len(ref)
    assert out["split"]["train"] >= 8 and out["split"]["test"] >= 3

    train = [json.loads(line) for line in (exp / "split/train.jsonl").read_text().splitlines()]
    mix = out["split"]["target_source"]
    assert {r["target_source"] for r in train} <= {"llm", "reference"} and sum(mix.values()) == len(train)
    passed_llm = {r["problem_id"] for r in cands if r["generated_by"] == "nano" and r["mech_score"] == 1}
    assert mix["llm"] == sum(r["problem_id"] in passed_llm for r in train)  # a passing LLM proof is preferred
    assert "SFT targets (train rows)" in (exp / "report.md").read_text()
    base = pq.read_table(exp / "baseline/eval.parquet").to_pylist()
    final = pq.read_table(exp / "final/eval.parquet").to_pylist()
    assert {r["mode"] for r in base} == {"few_shot"} and {r["mode"] for r in final} == {"zero_shot"}
    assert all(r["shots_used"] >= 1 for r in base) and all(r["shots_used"] == 0 for r in final)
    assert {"score_mechanical", "score_llm"} <= set(base[0])
    assert [r["n"] for r in out["learning_curve"]["curve"]] == [4, 8]
    assert "| **all** |" in (exp / "report.md").read_text()
    assert out["sft"]["steps"] == 4

    logs.clear()
    (exp / "final/_done.json").unlink()
    again = run(small(verifier_model), solver_store.base, log=logs.append)
    assert _ran(logs) == ["final"] and again["final"]["n"] == out["final"]["n"], logs

    logs.clear()  # a changed eval section reruns the evaluations only; SFT and the data are reused
    changed = run(small(verifier_model, eval={**small(verifier_model).eval.model_dump(), "max_new_tokens": 24}),
                  solver_store.base, log=logs.append)
    assert changed["experiment_id"] == out["experiment_id"]
    assert _ran(logs) == ["baseline", "final", "learning_curve"], logs


def _ran(logs: list[str]) -> list[str]:
    return [m.split()[1].rstrip(":") for m in logs if m.startswith("step ") and m.endswith(": running")]


def test_bad_configs_fail_before_work(verifier_model):
    with pytest.raises(ConfigError, match="different verifier"):
        small(verifier_model, verification={"engine": {"backend": "hf", "model": "nano"}})
    with pytest.raises(ConfigError, match="test_fraction"):
        small(verifier_model, data={"test_fraction": 1.5})
    with pytest.raises(ConfigError, match="nope"):
        small(verifier_model, nope=1)


# ---- issue 21: feasibility before any step, SFT target preference ----------------------------------

def _cheap(**kw) -> IneqConfig:
    cfg = {"name": "f", "base_model": "nano", "data": {"families": ["reciprocal", "sos", "constrained"],
                                                       "n_per_family": 6},
           "eval": {"max_problems": 2, "k_shots": 1}, "learning_curve": [4]}
    cfg.update(kw)
    return build_config(IneqConfig, cfg)


def test_check_feasible_names_the_infeasible_value():
    from squigglray.ineq.pipeline import check_feasible

    problems, sizes, _ = check_feasible(_cheap())
    assert sizes["problems"] == len(problems) and sizes["train"] >= 4 and sizes["test"] >= 2
    with pytest.raises(ConfigError, match=r"learning_curve size\(s\) \[16000\]"):
        check_feasible(_cheap(learning_curve=[4, 16000]))
    check_feasible(_cheap(eval={"max_problems": 500}))  # a cap: the eval takes the whole test split
    with pytest.raises(ConfigError, match="eval.k_shots=900"):
        check_feasible(_cheap(eval={"max_problems": 2, "k_shots": 900}))
    with pytest.raises(ConfigError, match="sft.eval_fraction"):
        check_feasible(_cheap(learning_curve=[1], sft={"eval_fraction": 0.5}))


def test_cli_fails_fast_on_an_infeasible_curve(tmp_path):
    """`squigglray ineq run` on a config whose curve the split cannot hold exits with the value named,
    before any step (no experiment folder, no Ray, no LLM)."""
    import yaml
    from typer.testing import CliRunner

    from squigglray.cli import app

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "f", "base_model": "nano",
                                   "data": {"families": ["reciprocal", "sos"], "n_per_family": 6},
                                   "generation": {"engine": {"backend": "hf", "model": "nano"}},
                                   "eval": {"max_problems": 1}, "learning_curve": [1000, 16000]}))
    r = CliRunner().invoke(app, ["ineq", "run", "--config", str(cfg), "--data-dir", str(tmp_path / "data")])
    assert r.exit_code == 2, r.output
    assert "learning_curve" in r.output and "16000" in r.output
    assert not (tmp_path / "data" / "experiments").exists()


def test_llm_proofs_that_pass_are_preferred_targets():
    from squigglray.jobs.ineq import choose_targets, target_mix

    cands = [{"problem_id": "p1", "generated_by": "reference", "mech_score": 1, "text": "ref1", "seed": 0},
             {"problem_id": "p1", "generated_by": "m", "mech_score": 1, "text": "llm1-b", "seed": 0},
             {"problem_id": "p1", "generated_by": "m", "mech_score": 1, "text": "llm1-a", "seed": 0},
             {"problem_id": "p2", "generated_by": "reference", "mech_score": 1, "text": "ref2", "seed": 1},
             {"problem_id": "p2", "generated_by": "m", "mech_score": 0, "text": "bad", "seed": 1},
             {"problem_id": "p3", "generated_by": "reference", "mech_score": 0, "text": "ref3", "seed": 2}]
    got = choose_targets(cands)
    assert got == {"p1": ("llm1-a", "llm"), "p2": ("ref2", "reference")}
    assert choose_targets(list(reversed(cands))) == got  # deterministic whatever the row order
    assert target_mix([{"target_source": s} for _, s in got.values()]) == {"llm": 1, "reference": 1}
    from squigglray.ineq.generator import generate
    from squigglray.ineq.pipeline import _problem

    p = generate(["sos"], 1)[0]  # a train row (problem + completion + target_source) back to its Problem
    assert _problem({**p.to_dict(), "completion": "Proof: ...", "target_source": "llm"}) == p
