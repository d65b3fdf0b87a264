"""Ray Data stages of the inequality pipeline: LLM generation and verification as actor pools with
declared resources, and the mechanical verifier as a CPU stage. The prompts, parsers and checks
live in squigglray.ineq; this module only places them.

On a vLLM cluster, `vllm_stage` builds the same step with `ray.data.llm.build_processor`. Where the
actors run is a `squigglray.placement.Placement` (GPUs, minimum GPU memory class, accelerator type),
checked against the cluster first (actors.placement), so a pool no node can hold fails at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from actors.placement import check_feasible, options
from squigglray.placement import MEMORY_CLASSES, Placement


class EngineStage:
    """map_batches callable: prompts in `prompt_col` -> completions in `out_col`, one engine per actor."""

    def __init__(self, engine: dict[str, Any], store_uri: str | None, sampling: dict[str, Any], prompt_col: str,
                 out_col: str, threads: int = 1):
        import torch

        from squigglray.engines import EngineConfig, SamplingParams, make_engine
        from squigglray.paths import ArtifactStore

        torch.set_num_threads(threads)
        self.engine = make_engine(EngineConfig.model_validate(engine), ArtifactStore(store_uri) if store_uri else None)
        self.params = SamplingParams(**sampling)
        self.prompt_col, self.out_col = prompt_col, out_col
        self.loop = asyncio.new_event_loop()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        prompts = [str(p) for p in batch[self.prompt_col]]
        seeds = [int(s) for s in batch["seed"]] if "seed" in batch else None
        outs = self.loop.run_until_complete(self.engine.generate(prompts, self.params, seeds))
        batch[self.out_col] = [o[0].text for o in outs]
        return batch


def mechanical_stage(batch: dict[str, Any], text_col: str, timeout_s: float) -> dict[str, Any]:
    """The gate: the mechanical judge on every candidate proof (a CPU task per batch). Adds the proof
    score, status and reasons, the solver's separate "claim verified" (None where it was not
    reached) and the per-step justification (JSON: rule or why none)."""
    import json

    from squigglray.ineq.problems import Problem
    from squigglray.ineq.verifier import judge_completion

    cols: dict[str, list] = {k: [] for k in ("mech_score", "mech_status", "mech_reasons", "mech_claim_verified",
                                             "mech_justification")}
    for pj, text in zip(batch["problem_json"], batch[text_col]):
        res = judge_completion(Problem.from_dict(json.loads(pj)), str(text), timeout_s=timeout_s)
        cols["mech_score"].append(int(res["score"]))
        cols["mech_status"].append(str(res["status"]))
        cols["mech_reasons"].append("; ".join(res["reasons"])[:500])
        cols["mech_claim_verified"].append(res["claim_verified"])
        cols["mech_justification"].append(json.dumps(res["justification"]))
    batch.update(cols)
    return batch


def claim_stage(batch: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The claim check ("claim verified", separate from the proof score): `verifier.check_claim` on each
    row's claim (problem_json: lhs, rel, rhs, variables, domain, constraint; the equality case focuses
    the sampling), as a CPU task per batch like the gate."""
    import json

    from squigglray.ineq.verifier import ExpressionError, check_claim

    statuses, methods, seconds = [], [], []
    for pj in batch["problem_json"]:
        p = json.loads(pj)
        try:
            v = check_claim(p["lhs"], p["rel"], p["rhs"], p["variables"], p["domain"], p.get("constraint"),
                            timeout_s=timeout_s, near=p.get("equality"))
            statuses.append(v.status)
            methods.append(v.method)
            seconds.append(v.seconds)
        except ExpressionError:
            statuses.append("unparsed")
            methods.append("")
            seconds.append(0.0)
    batch["claim_status"], batch["claim_method"], batch["claim_seconds"] = statuses, methods, seconds
    return batch


def engine_stage(ds: ray.data.Dataset, engine: dict[str, Any], store_uri: str | None, sampling: dict[str, Any],
                 prompt_col: str, out_col: str, concurrency: int, num_gpus: float, batch_size: int,
                 accelerator_type: str | None = None, threads: int = 1,
                 memory_class: str | None = None) -> ray.data.Dataset:
    """One engine per actor: `num_gpus` GPUs (of >= `memory_class`, of `accelerator_type`), or
    `threads` CPUs when num_gpus is 0."""
    p = Placement(cpus=0 if num_gpus else threads, gpus=num_gpus, memory_class=memory_class,
                  accelerator_type=accelerator_type)
    return ds.map_batches(EngineStage, fn_constructor_kwargs={
        "engine": engine, "store_uri": store_uri, "sampling": sampling, "prompt_col": prompt_col,
        "out_col": out_col, "threads": threads}, compute=ray.data.ActorPoolStrategy(size=concurrency),
        batch_size=batch_size, **options(p, f"an engine actor of the {out_col} step"))


def vllm_stage(ds: ray.data.Dataset, model: str, sampling: dict[str, Any], prompt_col: str, out_col: str,
               concurrency: int, batch_size: int, accelerator_type: str | None = None,
               engine_kwargs: dict[str, Any] | None = None, memory_class: str | None = None) -> ray.data.Dataset:
    """The same step through Ray's own batch LLM processor (GPU cluster with vLLM installed). Each
    engine worker's bundle is one GPU (of >= `memory_class`, of `accelerator_type`)."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    check_feasible(Placement(cpus=1, gpus=1, memory_class=memory_class, accelerator_type=accelerator_type),
                   what=f"a vLLM engine worker of the {out_col} step")  # = LLMStep.placement() with use_vllm
    extra: dict[str, Any] = {}
    if memory_class:  # vLLM's workers take one bundle each: {CPU, GPU} plus the memory class
        extra["placement_group_config"] = {"bundle_per_worker": {"CPU": 1, "GPU": 1, MEMORY_CLASSES[memory_class]: 1}}
    cfg = vLLMEngineProcessorConfig(model_source=model, engine_kwargs=engine_kwargs or {}, concurrency=concurrency,
                                    batch_size=batch_size, accelerator_type=accelerator_type,
                                    chat_template_stage=False, **extra)
    params = {"temperature": sampling.get("temperature", 0.0), "max_tokens": sampling.get("max_tokens", 256),
              "stop": sampling.get("stop") or None}
    processor = build_processor(
        cfg,
        preprocess=lambda row: {**row, "prompt": row[prompt_col], "sampling_params": params},
        postprocess=lambda row: {**{k: v for k, v in row.items() if k not in ("generated_text",)},
                                 out_col: row["generated_text"]},
    )
    return processor(ds)


@ray.remote(num_cpus=1)
def eval_task(cfg_json: dict, model: str, store_uri: str, mode: str, test: list[dict], train: list[dict]):
    from squigglray.ineq.pipeline import run_eval

    return run_eval(cfg_json, model, store_uri, mode, test, train)


@ray.remote(num_cpus=1)
def sft_task(sft_json: dict, train: list[dict], store_uri: str, rel: str) -> dict:
    from squigglray.ineq.pipeline import run_sft_to_store

    return run_sft_to_store(sft_json, train, store_uri, rel)


@ray.remote(num_cpus=1)
def curve_task(cfg_json: dict, train: list[dict], test: list[dict], store_uri: str, rel: str) -> list[dict]:
    from squigglray.ineq.pipeline import run_curve

    return run_curve(cfg_json, train, test, store_uri, rel)
