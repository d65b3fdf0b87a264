"""Pipeline steps that run inside Ray tasks (the job places them): evaluation with both judges,
SFT into the artifact store, the learning curve. No ray import here."""

from __future__ import annotations

import io
import tempfile

import pyarrow.parquet as pq

from squigglray.config import ConfigError
from squigglray.engines.base import EngineConfig
from squigglray.ineq.config import IneqConfig
from squigglray.ineq.sft import SftConfig
from squigglray.paths import ArtifactStore


def run_eval(cfg_json: dict, model: str, store_uri: str, mode: str, test: list[dict], train: list[dict]):
    """One eval (runs inside a Ray task): the harness with the mechanical and the LLM judge."""
    from squigglray.engines import make_engine
    from squigglray.engines.base import SamplingParams
    from squigglray.ineq.harness import evaluate
    from squigglray.ineq.judges import LLMJudge
    from squigglray.ineq.problems import Problem
    from squigglray.ineq.prompts import STOP
    from squigglray.ineq.verifier import judge_completion

    cfg = IneqConfig.model_validate(cfg_json)
    store = ArtifactStore(store_uri)
    engine = make_engine(EngineConfig(backend="hf", model=model), store)
    judge_cfg = cfg.eval.llm_judge or EngineConfig(backend="hf", model=cfg.base_model)
    judge_engine = engine if judge_cfg.model == model else make_engine(judge_cfg, store)
    judges = {"mechanical": lambda p, t: judge_completion(p, t, cfg.eval.timeout_s),
              "llm": LLMJudge(judge_engine, max_new_tokens=cfg.eval.judge_max_tokens, seed=cfg.seed)}
    res = evaluate(engine, [Problem.from_dict(d) for d in test], mode,
                   [Problem.from_dict({k: v for k, v in d.items() if k != "completion"}) for d in train],
                   judges, SamplingParams(temperature=0.0, max_tokens=cfg.eval.max_new_tokens, stop=list(STOP)),
                   cfg.seed, cfg.eval.max_new_tokens, cfg.eval.k_shots, cfg.eval.max_prompt_chars)
    buf = io.BytesIO()
    pq.write_table(res.to_table(), buf)
    return buf.getvalue(), {**res.summary(), "model": model, "mode": mode}


def run_sft_to_store(sft_json: dict, train: list[dict], store_uri: str, rel: str) -> dict:
    """SFT inside a Ray task: train into a local folder, then place it in the store."""
    from squigglray.ineq.problems import Problem
    from squigglray.ineq.prompts import sft_example
    from squigglray.ineq.sft import run_sft

    store = ArtifactStore(store_uri)
    examples = [{"prompt": sft_example(Problem.from_dict({k: v for k, v in d.items() if k != "completion"}))["prompt"],
                 "completion": d["completion"]} for d in train]
    with tempfile.TemporaryDirectory(prefix="ineq-sft-") as tmp:
        summary = run_sft(SftConfig.model_validate(sft_json), examples, None, tmp, store=store)
        store.upload_dir(tmp, rel)
    summary["out_dir"] = store.full(rel)
    return summary


def run_curve(cfg_json: dict, train: list[dict], test: list[dict], store_uri: str, rel: str) -> list[dict]:
    """Fine-tune on the first n train problems for each size; score each model zero-shot on test."""
    cfg = IneqConfig.model_validate(cfg_json)
    rows = []
    for n in sorted(set(cfg.learning_curve)):
        if n > len(train):
            raise ConfigError(f"learning_curve size {n} exceeds the {len(train)} training problems")
        sft_cfg = cfg.sft.model_copy(update={"model": cfg.base_model, "seed": cfg.seed})
        summary = run_sft_to_store(sft_cfg.model_dump(mode="json"), train[:n], store_uri, f"{rel}/n{n}")
        _, ev = run_eval(cfg_json, summary["out_dir"], store_uri, "zero_shot", test, train)
        rows.append({"n": n, "train_loss": summary["train_loss"], "steps": summary["steps"],
                     "score": ev["scores"]["mechanical"]["mean"]})
    return rows
