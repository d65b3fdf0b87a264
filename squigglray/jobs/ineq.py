"""Olympiad inequalities (seed 002): generate -> verify -> split -> few-shot baseline -> SFT ->
zero-shot eval -> report, each step cached by the hash of what it depends on, so a rerun resumes.

    squigglray ineq run                                   # the packaged config, squigglray/configs/ineq.yaml
    ray job submit --working-dir . -- python -m squigglray.jobs.ineq run --config examples/ineq_cluster.yaml

Artifacts under experiments/ineq-<name>-<hash of data, seed and base model>/:
  problems/problems.jsonl                       every generated problem with its reference proof
  candidates/candidates.parquet                 every candidate proof: who generated it, the mechanical
                                                verdict (the gate: score, status, per-step justification;
                                                claim verified apart) and the LLM verifier's verdict
  split/{train,test}.jsonl, removed.json        the leak-free split of the problems that passed; each train
                                                row's completion is a passing LLM proof where there is one
                                                (`target_source` "llm"), else the reference ("reference")
  baseline/eval.parquet, summary.json           base model, few-shot
  sft/model/, sft/sft_summary.json              the fine-tuned model (save_pretrained)
  final/eval.parquet, summary.json              fine-tuned model, zero-shot
  learning_curve/curve.json (optional)          eval loss and score per training-set size (subsets stratified
                                                by family, seeded and nested: split.stratified_subset)
  report.md, plots/*.png
Before any step, every config value that depends on the data (learning-curve sizes, eval.max_problems,
k_shots, shots) is checked against the split computed up front (`pipeline.check_feasible`), so an
infeasible config fails in seconds, not after SFT.
Each step folder has _done.json (its key: its config and its upstream keys); a step whose key
matches is not run again, so a changed SFT section reruns SFT and what follows, nothing before.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any, Callable

import pyarrow as pa

from squigglray import __version__
from squigglray.config import config_hash, load_config, packaged_config
from squigglray.entry import JobArgs, make_command_parser, parse_command, run_module
from squigglray.ineq.config import IneqConfig
from squigglray.paths import ArtifactStore

PACKAGED_CONFIG = "ineq"


def experiment_id(cfg: IneqConfig) -> str:
    """Named by what every step depends on (data, seed, base model), so changing a later section
    (SFT steps, eval, a learning curve) reuses the earlier steps and reruns only what changed."""
    root = {"data": cfg.data.model_dump(mode="json"), "seed": cfg.seed, "base_model": cfg.base_model}
    return f"ineq-{cfg.name}-{config_hash(root)[:10]}"


class Steps:
    """Step bookkeeping: keys, the done marker, and the artifact paths of one experiment."""

    def __init__(self, store: ArtifactStore, exp: str, log: Callable[[str], Any]):
        self.store, self.exp, self.log = store, exp, log
        self.keys: dict[str, str] = {}

    def path(self, step: str, name: str = "") -> str:
        return f"{self.store.experiment_dir(self.exp)}/{step}" + (f"/{name}" if name else "")

    def key(self, step: str, deps: Any, after: tuple[str, ...] = ()) -> str:
        return config_hash({"step": step, "deps": deps, "upstream": {s: self.keys[s] for s in after}})[:16]

    def cached(self, step: str, deps: Any, after: tuple[str, ...] = ()) -> bool:
        """Would `run` skip this step?"""
        marker = self.path(step, "_done.json")
        return self.store.exists(marker) and self.store.read_json(marker).get("key") == self.key(step, deps, after)

    def run(self, step: str, deps: Any, fn: Callable[[], dict], after: tuple[str, ...] = ()) -> dict:
        """Run `fn` unless the step's key (its deps and the keys of the steps it comes `after`) matches
        the one recorded when it last finished."""
        key = self.key(step, deps, after)
        marker = self.path(step, "_done.json")
        if self.store.exists(marker) and self.store.read_json(marker).get("key") == key:
            self.log(f"step {step}: cached ({key})")
            self.keys[step] = key
            return self.store.read_json(marker)["result"]
        t0 = time.perf_counter()
        self.log(f"step {step}: running")
        result = fn()
        self.store.write_json(marker, {"key": key, "seconds": round(time.perf_counter() - t0, 2), "result": result,
                                       "package_version": __version__})
        self.keys[step] = key
        self.log(f"step {step}: done in {time.perf_counter() - t0:.1f}s")
        return result

    def write_jsonl(self, step: str, name: str, rows: list[dict]) -> None:
        self.store.write_text(self.path(step, name), "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def read_jsonl(self, step: str, name: str) -> list[dict]:
        return [json.loads(line) for line in self.store.read_text(self.path(step, name)).splitlines() if line]

    def write_table(self, step: str, name: str, table: pa.Table) -> None:
        self.store.write_parquet(self.path(step, name), table)


# ---- steps -------------------------------------------------------------------------------------


def step_problems(cfg: IneqConfig, st: Steps, problems: list | None = None) -> dict:
    """`problems`: the ones `check_feasible` already generated from the same config (else generated here)."""
    from squigglray.ineq.generator import generate

    if problems is None:
        problems = generate(cfg.data.families, cfg.data.n_per_family, cfg.seed, cfg.data.variants)
    st.write_jsonl("problems", "problems.jsonl", [p.to_dict() for p in problems])
    return {"problems": len(problems)}


def _problems(st: Steps, step: str, name: str):
    from squigglray.ineq.problems import Problem

    return [Problem.from_dict(d) for d in st.read_jsonl(step, name)]


def step_candidates(cfg: IneqConfig, st: Steps) -> dict:
    """Reference proofs plus the generator model's proofs, all checked mechanically (the gate) and
    by the verifier model, as one Ray Data pipeline."""
    import ray

    from actors.ineq_llm import engine_stage, mechanical_stage, vllm_stage
    from squigglray.ineq.llm_steps import generation_prompt, parse_verdict, verification_shots
    from squigglray.ineq.proof_text import reference_text
    from squigglray.ineq.verifier import judge_completion

    problems = _problems(st, "problems", "problems.jsonl")
    rows = [{"problem_id": p.problem_id, "family": p.family, "variant": p.variant,
             "problem_json": json.dumps(p.to_dict()), "text": reference_text(p), "generated_by": "reference",
             "seed": i} for i, p in enumerate(problems)]
    gen = cfg.generation
    if gen.engine is not None:
        chosen = problems[: gen.max_problems] if gen.max_problems else problems
        ds = ray.data.from_items([{**rows[i], "prompt": generation_prompt(p, problems, gen.shots, cfg.seed)}
                                  for i, p in enumerate(chosen)])
        sampling = {"temperature": gen.temperature, "max_tokens": gen.max_tokens, "stop": ["\nProblem:", "QED"]}
        ds = (vllm_stage(ds, gen.engine.model, sampling, "prompt", "llm_text", gen.concurrency, gen.batch_size,
                         gen.accelerator_type, gen.engine.vllm_args, gen.memory_class) if gen.use_vllm else
              engine_stage(ds, gen.engine.model_dump(), st.store.location, sampling, "prompt", "llm_text",
                           gen.concurrency, gen.num_gpus, gen.batch_size, gen.accelerator_type,
                           memory_class=gen.memory_class))
        generated = ds.take_all()
        rows += [{k: r[k] for k in ("problem_id", "family", "variant", "problem_json", "seed")}
                 | {"text": str(r["llm_text"]).strip() + "\nQED", "generated_by": gen.engine.model}
                 for r in sorted(generated, key=lambda r: r["seed"])]
    ver = cfg.verification
    ds = ray.data.from_items(rows).map_batches(mechanical_stage, fn_kwargs={"text_col": "text",
                                                                             "timeout_s": ver.timeout_s},
                                              batch_size=32, num_cpus=1)
    if ver.engine is not None:
        shots = verification_shots(problems, ver.shots, cfg.seed, lambda p, t: judge_completion(p, t, ver.timeout_s))
        ds = ds.map_batches(_verification_prompts, fn_kwargs={"shots": [(p.to_dict(), t, ok) for p, t, ok in shots]},
                            batch_size=64)
        sampling = {"temperature": ver.temperature, "max_tokens": ver.max_tokens, "stop": ["\n"]}
        ds = (vllm_stage(ds, ver.engine.model, sampling, "verify_prompt", "verify_text", ver.concurrency,
                         ver.batch_size, ver.accelerator_type, ver.engine.vllm_args, ver.memory_class)
              if ver.use_vllm else
              engine_stage(ds, ver.engine.model_dump(), st.store.location, sampling, "verify_prompt", "verify_text",
                           ver.concurrency, ver.num_gpus, ver.batch_size, ver.accelerator_type,
                           memory_class=ver.memory_class))
    out = sorted(ds.take_all(), key=lambda r: (r["seed"], r["generated_by"] != "reference"))
    table_rows = []
    for r in out:
        verdict = parse_verdict(str(r.get("verify_text", ""))) if ver.engine is not None else None
        table_rows.append({"problem_id": r["problem_id"], "family": r["family"], "variant": r["variant"],
                           "seed": int(r["seed"]), "text": r["text"], "generated_by": r["generated_by"],
                           "mech_score": int(r["mech_score"]),
                           "mech_status": r["mech_status"], "mech_reasons": r["mech_reasons"],
                           "mech_claim_verified": r["mech_claim_verified"],
                           "mech_justification": r["mech_justification"],
                           "verified_by": ver.engine.model if ver.engine else None, "llm_verdict": verdict})
    st.write_table("candidates", "candidates.parquet", pa.Table.from_pylist(table_rows))
    by_source: dict[str, dict[str, int]] = {}
    for r in table_rows:
        s = by_source.setdefault(r["generated_by"], {"candidates": 0, "passed": 0, "claim_verified": 0,
                                                     "llm_says_correct": 0})
        s["candidates"] += 1
        s["passed"] += r["mech_score"]
        s["claim_verified"] += int(r["mech_claim_verified"] is True)
        s["llm_says_correct"] += int(r["llm_verdict"] is True)
    return {"candidates": len(table_rows), "by_source": by_source}


def _verification_prompts(batch: dict[str, Any], shots: list) -> dict[str, Any]:
    from squigglray.ineq.llm_steps import verification_prompt
    from squigglray.ineq.problems import Problem

    worked = [(Problem.from_dict(p), t, ok) for p, t, ok in shots]
    batch["verify_prompt"] = [verification_prompt(Problem.from_dict(json.loads(pj)), str(t), worked)
                              for pj, t in zip(batch["problem_json"], batch["text"])]
    return batch


def choose_targets(cands: list[dict]) -> dict[str, tuple[str, str]]:
    """problem_id -> (completion, target_source) over the candidates that passed the gate.

    An LLM-written proof that passed is preferred ("llm"): it is what the model could write and the
    checker accepts, in the model's own style; the reference proof is the fallback ("reference"),
    so every problem with a passing reference still has a target. Among several passing LLM proofs
    the choice is deterministic: the lowest (seed, text)."""
    out: dict[str, tuple[str, str]] = {}
    llm = sorted((r for r in cands if r["mech_score"] == 1 and r["generated_by"] != "reference"),
                 key=lambda r: (int(r.get("seed") or 0), str(r["text"])))
    for r in llm:
        out.setdefault(r["problem_id"], (r["text"], "llm"))
    for r in cands:
        if r["mech_score"] == 1 and r["generated_by"] == "reference":
            out.setdefault(r["problem_id"], (r["text"], "reference"))
    return out


def target_mix(train_rows: list[dict]) -> dict[str, int]:
    return {src: sum(r.get("target_source") == src for r in train_rows) for src in ("llm", "reference")}


def step_split(cfg: IneqConfig, st: Steps, feasibility_split=None) -> dict:
    """The split of the problems that passed the gate; `feasibility_split` (`check_feasible`'s, of all
    problems) is reused when all passed, as the split depends only on the set of problems."""
    from squigglray.ineq.split import split_problems

    problems = {p.problem_id: p for p in _problems(st, "problems", "problems.jsonl")}
    cands = st.store.read_parquet(st.path("candidates", "candidates.parquet")).to_pylist()
    passed = choose_targets(cands)
    s = feasibility_split if feasibility_split is not None and set(passed) == set(problems) else \
        split_problems([problems[k] for k in passed], cfg.data.test_fraction, cfg.seed, cfg.data.near_dup_threshold)
    train = [{**p.to_dict(), "completion": passed[p.problem_id][0], "target_source": passed[p.problem_id][1]}
             for p in s.train]
    st.write_jsonl("split", "train.jsonl", train)
    st.write_jsonl("split", "test.jsonl", [p.to_dict() for p in s.test])
    st.store.write_json(st.path("split", "removed.json"), s.removed)
    return {**s.summary(), "failed_gate": len(problems) - len(passed), "target_source": target_mix(train)}


def _eval(cfg: IneqConfig, st: Steps, step: str, model: str, mode: str) -> dict:
    import ray

    from actors.ineq_llm import eval_task
    from actors.placement import options

    test = st.read_jsonl("split", "test.jsonl")[: cfg.eval.max_problems]
    train = st.read_jsonl("split", "train.jsonl")
    task = eval_task.options(**options(cfg.eval.placement(), f"the {step} eval task"))
    table_bytes, summary = ray.get(task.remote(cfg.model_dump(mode="json"), model, st.store.location, mode, test,
                                               train))
    st.store.write_bytes(st.path(step, "eval.parquet"), table_bytes)
    st.store.write_json(st.path(step, "summary.json"), summary)
    return summary


def step_sft(cfg: IneqConfig, st: Steps) -> dict:
    import ray

    from actors.ineq_llm import sft_task
    from actors.placement import options

    train = st.read_jsonl("split", "train.jsonl")
    task = sft_task.options(**options(cfg.sft_placement(), "the SFT task"))
    sft_cfg = cfg.sft.model_copy(update={"model": cfg.base_model, "seed": cfg.seed,
                                         "report_to": "wandb" if cfg.wandb else cfg.sft.report_to})
    return ray.get(task.remote(sft_cfg.model_dump(mode="json"), train, st.store.location, st.path("sft", "model")))


def run(cfg: IneqConfig, data_dir: str | None = None, log=print) -> dict:
    from squigglray.ineq.generator import FAMILIES, GENERATOR_VERSION
    from squigglray.ineq.pipeline import check_feasible
    from squigglray.jobs.ray_runtime import ensure_ray
    from squigglray.report.ineq_report import write_report

    store = ArtifactStore(data_dir)
    exp = experiment_id(cfg)
    st = Steps(store, exp, log)
    d = cfg.model_dump(mode="json")
    problem_deps = d["data"] | {"seed": cfg.seed, "generator": GENERATOR_VERSION,
                                "families": d["data"]["families"] or list(FAMILIES)}
    cached = _problems(st, "problems", "problems.jsonl") if st.cached("problems", problem_deps) else None
    problems, sizes, split = check_feasible(cfg, cached)  # before any step: a config the data cannot hold fails here
    log(f"ineq {exp}: feasible: {sizes['problems']} problems, split {sizes['train']} train / {sizes['test']} test"
        + (f"; families below n_per_family: {sizes['saturated_families']}" if sizes["saturated_families"] else ""))
    ensure_ray()
    out = {"experiment_id": exp, "config": d, "config_hash": config_hash(cfg), "seed": cfg.seed,
           "package_version": __version__, "feasibility": sizes}
    out["problems"] = st.run("problems", problem_deps, lambda: step_problems(cfg, st, problems))
    out["candidates"] = st.run("candidates", {"generation": d["generation"], "verification": d["verification"]},
                               lambda: step_candidates(cfg, st), after=("problems",))
    out["split"] = st.run("split", {"data": d["data"], "targets": "llm-first"}, lambda: step_split(cfg, st, split),
                          after=("candidates",))
    out["baseline"] = st.run("baseline", {"model": cfg.base_model, "eval": d["eval"]},
                             lambda: _eval(cfg, st, "baseline", cfg.base_model, "few_shot"), after=("split",))
    out["sft"] = st.run("sft", {"model": cfg.base_model, "sft": d["sft"], "wandb": cfg.wandb},
                        lambda: step_sft(cfg, st), after=("split",))
    out["final"] = st.run("final", {"eval": d["eval"]},
                          lambda: _eval(cfg, st, "final", out["sft"]["out_dir"], "zero_shot"), after=("sft",))
    if cfg.learning_curve:
        out["learning_curve"] = st.run("learning_curve", {"sizes": cfg.learning_curve, "sft": d["sft"],
                                                          "eval": d["eval"], "subsets": "stratified"},
                                       lambda: step_learning_curve(cfg, st), after=("split",))
    out["dataset_hash"] = st.keys.get("split")
    store.write_json(f"{store.experiment_dir(exp)}/result.json", out)
    write_report(store, exp, out)
    mix = out["split"].get("target_source") or {}
    log(f"ineq {exp}: SFT targets {mix.get('llm', 0)} LLM-written, {mix.get('reference', 0)} reference; "
        f"baseline (few-shot) {_score(out['baseline'])} -> final (zero-shot) {_score(out['final'])}; "
        f"report {store.full(store.experiment_dir(exp))}/report.md")
    return out


def _score(summary: dict) -> str:
    s = summary.get("scores", {}).get("mechanical", {}).get("mean")
    return "n/a" if s is None else f"{s:.1%}"


def step_learning_curve(cfg: IneqConfig, st: Steps) -> dict:
    import ray

    from actors.ineq_llm import curve_task

    train = st.read_jsonl("split", "train.jsonl")
    test = st.read_jsonl("split", "test.jsonl")[: cfg.eval.max_problems]
    rows = ray.get(curve_task.remote(cfg.model_dump(mode="json"), train, test, st.store.location,
                                     st.path("learning_curve")))
    st.store.write_json(st.path("learning_curve", "curve.json"), rows)
    return {"curve": rows}


COMMANDS = {
    "run": ("Every step, each cached by its config hash (a rerun resumes): generate -> verify -> split -> "
            "few-shot baseline -> SFT -> zero-shot eval -> report.", [JobArgs]),
}


def make_parser():
    """The parser of `python -m squigglray.jobs.ineq` and of `squigglray ineq`."""
    return make_command_parser("squigglray ineq", __doc__, COMMANDS)


def main(argv: list[str] | None = None) -> dict:
    _, (job,) = parse_command(make_parser(), argv)
    cfg = load_config(IneqConfig, job.config or packaged_config(PACKAGED_CONFIG), job.overrides)
    out = run(cfg, job.data_dir, log=functools.partial(print, flush=True))
    print(f"report: {out['experiment_id']}/report.md")
    return out


if __name__ == "__main__":
    run_module(__spec__.name)
