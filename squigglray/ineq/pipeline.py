"""Pipeline steps that run inside Ray tasks (the job places them): evaluation with both judges,
SFT into the artifact store, the learning curve; and the feasibility check the job runs before any
step. No ray import here."""

from __future__ import annotations

import io
import tempfile

import pyarrow.parquet as pq

from squigglray.config import ConfigError
from squigglray.engines.base import EngineConfig
from squigglray.ineq.config import IneqConfig
from squigglray.ineq.sft import SftConfig
from squigglray.paths import ArtifactStore


_ROW_ONLY = ("completion", "target_source")  # train-row fields that are not the Problem's


def _problem(row: dict):
    from squigglray.ineq.problems import Problem

    return Problem.from_dict({k: v for k, v in row.items() if k not in _ROW_ONLY})


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
    res = evaluate(engine, [Problem.from_dict(d) for d in test], mode, [_problem(d) for d in train], judges,
                   SamplingParams(temperature=0.0, max_tokens=cfg.eval.max_new_tokens, stop=list(STOP)), cfg.seed,
                   cfg.eval.max_new_tokens, cfg.eval.k_shots, cfg.eval.max_prompt_chars)
    buf = io.BytesIO()
    pq.write_table(res.to_table(), buf)
    return buf.getvalue(), {**res.summary(), "model": model, "mode": mode}


def run_sft_to_store(sft_json: dict, train: list[dict], store_uri: str, rel: str) -> dict:
    """SFT inside a Ray task: train into a local folder, then place it in the store."""
    from squigglray.ineq.prompts import sft_example
    from squigglray.ineq.sft import run_sft

    store = ArtifactStore(store_uri)
    examples = [{"prompt": sft_example(_problem(d))["prompt"], "completion": d["completion"]} for d in train]
    with tempfile.TemporaryDirectory(prefix="ineq-sft-") as tmp:
        summary = run_sft(SftConfig.model_validate(sft_json), examples, None, tmp, store=store)
        store.upload_dir(tmp, rel)
    summary["out_dir"] = store.full(rel)
    return summary


def run_curve(cfg_json: dict, train: list[dict], test: list[dict], store_uri: str, rel: str) -> list[dict]:
    """Fine-tune on a subset of n train problems for each size, stratified by family, seeded and nested
    (`split.stratified_subset`: the n=1000 subset is inside the n=4000 one, and each family's share is
    its share of train); score each model zero-shot on test."""
    from squigglray.ineq.split import stratified_order

    cfg = IneqConfig.model_validate(cfg_json)
    order = stratified_order(train, cfg.seed)
    rows = []
    for n in sorted(set(cfg.learning_curve)):
        if n > len(train):
            raise ConfigError(f"learning_curve size {n} exceeds the {len(train)} training problems")
        sft_cfg = cfg.sft.model_copy(update={"model": cfg.base_model, "seed": cfg.seed})
        summary = run_sft_to_store(sft_cfg.model_dump(mode="json"), order[:n], store_uri, f"{rel}/n{n}")
        _, ev = run_eval(cfg_json, summary["out_dir"], store_uri, "zero_shot", test, train)
        rows.append({"n": n, "train_loss": summary["train_loss"], "steps": summary["steps"],
                     "score": ev["scores"]["mechanical"]["mean"]})
    return rows


def check_feasible(cfg: IneqConfig, problems: list | None = None) -> tuple[list, dict, object]:
    """Every config value that depends on the data, checked before any step runs: generate the
    problems (or take `problems`, the cached problems step's) and split them (CPU work, no LLM: about
    2 minutes at n_per_family=2500 over every family on 2 cores), then compare. Returns (problems,
    sizes, split); raises ConfigError naming the first infeasible value. The split step reuses `split`
    when every problem passes the gate (the split depends only on the set of problems).

    The split is computed as if every problem passes the gate. Every problem has a reference proof
    and reference proofs pass the gate by construction, so these are the sizes the split step gets
    (a reference proof the gate times out on would lower train by one; the curve step re-checks)."""
    from squigglray.ineq.generator import FAMILIES, generate
    from squigglray.ineq.split import split_problems

    d = cfg.data
    if problems is None:
        try:
            problems = generate(d.families, d.n_per_family, cfg.seed, d.variants)
        except ValueError as e:
            raise ConfigError(f"data: {e}") from None
    s = split_problems(problems, d.test_fraction, cfg.seed, d.near_dup_threshold)
    n_train, n_test = len(s.train), len(s.test)
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.family] = counts.get(p.family, 0) + 1
    saturated = {f: counts.get(f, 0) for f in (d.families or list(FAMILIES)) if counts.get(f, 0) < d.n_per_family}
    sizes = {"problems": len(problems), "train": n_train, "test": n_test, "removed": len(s.removed),
             "saturated_families": saturated}
    where = (f"(data: n_per_family={d.n_per_family}, {len(d.families or FAMILIES)} families, "
             f"test_fraction={d.test_fraction}, near_dup_threshold={d.near_dup_threshold}: {len(problems)} problems, "
             f"{n_train} train, {n_test} test after near-duplicate removal)")
    if n_train == 0 or n_test == 0:
        raise ConfigError(f"data: the split has {n_train} train and {n_test} test problems {where}")
    bad = [n for n in cfg.learning_curve if n < 1 or n > n_train]
    if bad:
        raise ConfigError(f"learning_curve size(s) {bad} not in [1, {n_train}]: the split holds {n_train} training "
                          f"problems {where}; lower the sizes or raise data.n_per_family")
    if cfg.eval.k_shots > n_train:
        raise ConfigError(f"eval.k_shots={cfg.eval.k_shots} exceeds the {n_train} training problems (the shot pool) "
                          f"{where}")
    gen, ver = cfg.generation, cfg.verification
    if gen.engine is not None:
        if gen.shots > len(problems) - 1:
            raise ConfigError(f"generation.shots={gen.shots} needs {gen.shots + 1} problems, there are "
                              f"{len(problems)} {where}")
    if ver.engine is not None and ver.shots > len(problems):
        raise ConfigError(f"verification.shots={ver.shots} exceeds the {len(problems)} generated problems {where}")
    if cfg.sft.eval_fraction:
        checks = [("the training split", n_train)] + [(f"learning_curve size {k}", k) for k in cfg.learning_curve]
        for what, n in checks:
            if max(1, round(n * cfg.sft.eval_fraction)) >= n:
                raise ConfigError(f"sft.eval_fraction={cfg.sft.eval_fraction} leaves no training examples out of "
                                  f"the {n} of {what}")
    return problems, sizes, s
