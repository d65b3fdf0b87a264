"""The inequality pipeline's configs: a bad one fails before any work, an infeasible one names its
value, SFT targets prefer LLM proofs that pass. The run end to end (every step's artifacts, resuming
from the cache) is the ineq job of tests/test_job_submission.py, at `small_dict`'s size."""

from __future__ import annotations

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


def small_dict(verifier: str) -> dict:
    """The pipeline at test size; tests/test_job_submission.py submits it as the ineq job and checks
    every step's artifacts and the resume rules on that job's data dir."""
    return {
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


def small(verifier: str, **kw) -> IneqConfig:
    return build_config(IneqConfig, {**small_dict(verifier), **kw})


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
