"""Evaluate the AIMO-style solver on held-out family instances: pass@1, maj@N and weighted-vote
accuracy for several N, with and without code execution.

    squigglray eval-solver                                        # the data dir's `tiny` model, N in 1,4,16,64
    squigglray eval-solver --per-family 1 --ns 1,4,16 --local     # smaller, sandboxes in-process (no Ray)
    python -m squigglray.jobs.eval_solver --run-id <run_id>       # the same as a job entry point
    ray job submit --working-dir . -- python -m squigglray.jobs.eval_solver --model tiny

The method and the metrics: squigglray/eval/solver.py (the domain half: the problems, sampling,
scoring). Here: the sandboxes (a `SandboxPool` of Ray actors, or a `LocalExecutor` with --local),
the engine (an HFEngine on the checkpoint, or any `EngineConfig`) and the outputs.

Outputs, under the run's reports folder (`runs/<run_id>/reports/`; `solver_evals/<model>/` for a
model that is not a run of this data dir): `solver_eval.json` (the table, per-family tables,
settings, provenance), `solver_eval.parquet` (one row per candidate), `solver_eval.md` (the
markdown table) and `plots/solver_accuracy.png`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from squigglray import __version__
from squigglray.config import build_config, config_hash
from squigglray.entry import make_parser as make_parser_for, parse_args, run_module
from squigglray.eval.solver import (
    SOLVER_EVAL_SCHEMA, ProblemResult, SolverEvalConfig, candidate_rows, eval_instances, markdown_table,
    metric_rows, per_family_rows, resolve_target, sample_problems, slice_hash, summary_line,
)
from squigglray.paths import ArtifactStore


class EvalSolverArgs(BaseModel):
    """Which model, where its artifacts are, where the sandboxes run, how to print."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field("tiny", description="preset trained under the data dir (tiny, nano, ...), checkpoint folder "
                                           "or hub id", json_schema_extra={"short": "-m"})
    run_id: str | None = Field(None, description="evaluate this run's final checkpoint instead")
    data_dir: str | None = Field(None, description="artifact root (default $SQUIGGLRAY_DATA or ./data)")
    local: bool = Field(False, description="sandboxes in this process instead of Ray actors (no Ray)")
    as_json: bool = Field(False, description="print the result as JSON instead of the table",
                          json_schema_extra={"flag": "--json"})


def print_table(rows: list[dict[str, Any]], title: str, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("code", "N", "problems", "pass@1", "maj@N", "weighted@N", "any@N"):
        t.add_column(col, justify="left" if col == "code" else "right")
    for r in rows:
        t.add_row("yes" if r["code"] else "no", str(r["n"]), str(r["problems"]), f"{r['pass1']:.3f}",
                  f"{r['maj']:.3f}", f"{r['weighted']:.3f}", f"{r['any']:.3f}")
    (console or Console()).print(t)



def _make_executor(kind, cfg: SolverEvalConfig):
    """(executor, close) for 'ray' (SandboxPool actors), 'local' (LocalExecutor) or a given executor."""
    from squigglray.solve.sandbox import Limits

    limits = Limits(timeout_s=max(10.0, cfg.code_timeout_s))
    if kind == "ray":
        from actors.sandbox_pool import SandboxPool
        from squigglray.jobs.ray_runtime import ensure_ray

        ensure_ray()
        pool = SandboxPool(size=cfg.sandbox_workers, limits=limits, num_cpus=cfg.sandbox_cpus,
                           sandbox_nodes=cfg.sandbox_nodes, allow_weak_isolation=cfg.sandbox_allow_weak_isolation)
        return pool, pool.shutdown
    if kind == "local":
        from squigglray.solve.executor import LocalExecutor

        ex = LocalExecutor(cfg.sandbox_workers, limits, allow_weak_isolation=cfg.sandbox_allow_weak_isolation)
        return ex, ex.close
    return kind, (lambda: None)


def eval_solver(
    store: ArtifactStore | str | None = None,
    model: str | None = "tiny",
    *,
    run_id: str | None = None,
    config: SolverEvalConfig | None = None,
    exclude_problems: set[str] | None = None,
    engine=None,
    executor="ray",
    out_dir: str | None = None,
    write: bool = True,
    progress: bool = True,
    log=print,
    **settings: Any,
) -> dict[str, Any]:
    """Sample, score, write. `settings` override fields of `config` (families=, per_family=, ns=, seed=,
    code_timeout_s=, ...). `engine`: an Engine or EngineConfig (default: an HFEngine on the model);
    `executor`: 'ray' (SandboxPool actors), 'local' (LocalExecutor) or a CodeExecutor.
    Returns {table, per_family, markdown, provenance, settings, seconds, paths, problems}."""
    import pyarrow as pa

    from squigglray.engines import Engine, EngineConfig

    store = store if isinstance(store, ArtifactStore) else ArtifactStore(store)
    base = (config or SolverEvalConfig()).model_dump()
    if "ns" in settings and settings["ns"] is not None:
        settings["ns"] = list(settings["ns"])
    cfg = build_config(SolverEvalConfig, {**base, **{k: v for k, v in settings.items() if v is not None}})
    seconds: dict[str, float] = {}
    t_start = time.perf_counter()
    target = resolve_target(store, model, run_id)
    items, eval_seed = eval_instances(cfg, target, exclude_problems)
    if not items:
        raise ValueError("no held-out instances (every sampled problem was a training problem?)")
    problems = [ProblemResult(x, lv) for lv, x in items]
    seconds["prepare"] = time.perf_counter() - t_start
    modes = " and ".join("with code" if c else "without code" for c in cfg.code_modes)
    run_note = f" (run {target.run_id})" if target.run_id and target.run_id != target.label else ""
    log(f"solver eval: {target.label}{run_note}, {len(problems)} held-out problems, N up to {max(cfg.ns)}, {modes}")

    # the sandboxes first: a placement no node can hold fails before the model loads
    ex, close = _make_executor(executor, cfg) if True in cfg.code_modes else (None, lambda: None)
    t0 = time.perf_counter()
    own_engine = not isinstance(engine, Engine)
    try:
        if engine is None:
            from squigglray.engines.hf import HFEngine

            engine = HFEngine.from_pretrained(target.spec, store)
        elif isinstance(engine, EngineConfig):
            from squigglray.engines import make_engine

            engine = make_engine(engine, store)
    except BaseException:
        close()
        raise
    seconds["load"] = time.perf_counter() - t0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(problems) * len(cfg.code_modes), desc="solver eval", unit="problem")

    async def run() -> None:
        try:
            await sample_problems(problems, engine, ex, cfg, bar, seconds)
        finally:
            if own_engine:
                await engine.aclose()

    try:
        asyncio.run(run())
    finally:
        if bar is not None:
            bar.close()
        close()

    table = metric_rows(problems, cfg.ns, cfg.code_modes)
    families = per_family_rows(problems, cfg.ns, cfg.code_modes)
    md = markdown_table(table)
    eval_hash = slice_hash(items)
    prov = (target.run.provenance.model_dump() if target.run is not None else
            {"run_id": None, "seed": None, "config_hash": None, "dataset_slice_id": None,
             "dataset_slice_hash": None, "curriculum": "", "package_version": None})
    cands = candidate_rows(problems)
    evaluation = {
        "model": target.label, "engine": getattr(engine, "model_name", str(engine)),
        "config_hash": config_hash(cfg), "instance_seed": eval_seed, "sample_seed": cfg.sample_seed,
        "slice_id": f"solver-eval-{eval_hash[:12]}", "slice_hash": eval_hash, "package_version": __version__,
        "problems": len(problems), "candidates": len(cands),
        "tokens": {("code" if c else "nocode"): sum(r["tokens"] for r in cands if r["code"] == c)
                   for c in cfg.code_modes},
    }
    seconds["total"] = time.perf_counter() - t_start
    families_used = sorted({p.instance.family_id for p in problems})
    result: dict[str, Any] = {
        "schema": SOLVER_EVAL_SCHEMA, "table": table, "per_family": families, "markdown": md,
        "provenance": prov, "evaluation": evaluation, "settings": cfg.model_dump(), "ns": cfg.ns,
        "families": families_used, "levels": cfg.levels, "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "metrics": {
            "pass1": "mean correctness of all max(ns) candidates",
            "maj": "plain majority vote (mode 'majority') over N candidates is correct",
            "weighted": "seed 004 weighted vote (mode 'aimo': AIMO integers only, x2 when code ran cleanly)",
            "any": "at least one of N candidates is correct",
            "groups": "N < max(ns): mean over disjoint consecutive groups of N candidates",
        },
    }
    paths: dict[str, str] = {}
    if write:
        d = out_dir or target.out_dir(store)
        t = pa.Table.from_pylist(cands)
        for col, val in (("run_id", prov["run_id"]), ("seed", prov["seed"]), ("config_hash", prov["config_hash"]),
                         ("dataset_slice_hash", prov["dataset_slice_hash"]), ("package_version", __version__),
                         ("eval_config_hash", evaluation["config_hash"]), ("eval_slice_hash", eval_hash),
                         ("sample_seed", cfg.sample_seed)):
            t = t.append_column(col, pa.array([val] * len(t), type=pa.int64() if col in ("seed", "sample_seed")
                                              else pa.string()))
        from squigglray.report.solver_plots import solver_accuracy_png

        title = f"solver: {target.run_id or target.label} ({len(problems)} problems)"
        paths = {
            "json": store.write_json(f"{d}/solver_eval.json", result),
            "parquet": store.write_parquet(f"{d}/solver_eval.parquet", t),
            "markdown": store.write_text(f"{d}/solver_eval.md", f"# Solver evaluation: {title}\n\n{md}"),
            "plot": store.write_bytes(f"{d}/plots/solver_accuracy.png", solver_accuracy_png(table, title)),
        }
    result["paths"] = paths
    result["problems"] = problems
    return result


def make_parser():
    """The parser of `python -m squigglray.jobs.eval_solver` and of `squigglray eval-solver`."""
    return make_parser_for("squigglray eval-solver", __doc__, EvalSolverArgs, SolverEvalConfig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from rich.console import Console

    a, cfg = parse_args(make_parser(), argv)
    out = eval_solver(a.data_dir, a.model, run_id=a.run_id, executor="local" if a.local else "ray",
                      log=functools.partial(print, file=sys.stderr, flush=True), **cfg.model_dump())
    if a.as_json:
        print(json.dumps({k: v for k, v in out.items() if k != "problems"}, indent=2, default=str))
        return out
    console = Console()
    ev = out["evaluation"]
    print_table(out["table"], f"solver accuracy: {ev['model']}, {ev['problems']} held-out problems", console)
    console.print(summary_line(out), highlight=False)
    for k, v in out["paths"].items():
        print(f"{k}: {v}")  # plain: a long path must stay on one line
    return out


if __name__ == "__main__":
    run_module(__spec__.name)
