"""The main job: the dynamics experiment (3 seeds of the base model as Ray Tune trials, with
geometry capture, probes, events, seed invariance and the reports), then seed 0's checkpoint is
evaluated held-out per family and by the solver.

    python -m squigglray.jobs.quickstart            # tiny model, 3 seeds, under 20 min on 2 CPU cores
    python -m squigglray.jobs.quickstart --smoke    # nano model, about 75 s
    ray job submit --working-dir . -- python -m squigglray.jobs.quickstart

Writes what `jobs/dynamics.py` writes (runs/<run_id>/... per seed, geometry_state/, events_candidates/,
experiments/<EXP_ID>/report.md) and, for the first seed, reports/heldout_eval.parquet and the
per-family held-out accuracy table. Then a small solver evaluation (jobs/eval_solver.py: best-of-N
with and without code execution, pass@1 / maj@N / weighted@N on one held-out medium problem per
family) prints its table and joins that run's report.md; its settings live in `solver_eval_config`,
outside the training config, so they never change the run id.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import ray
from pydantic import BaseModel, ConfigDict, Field

from squigglray import __version__
from squigglray.config import Seeds, build_config, config_hash, load_config, packaged_config
from squigglray.entry import TrainJobArgs, make_parser as make_parser_for, parse_args, run_module
from squigglray.eval.heldout import heldout_instances, summarize
from squigglray.jobs.dynamics import DynamicsOptions, run_dynamics, seed_config, with_checkpoints
from squigglray.jobs.eval_solver import SolverEvalConfig
from squigglray.paths import ArtifactStore
from squigglray.probes.config import ProbeConfig
from squigglray.report.plots import loss_curve_png
from squigglray.schemas import EvalRow, RunRecord
from squigglray.training import BaseTrainConfig, find_reusable
from squigglray.training.data import Pool, build_pool


class QuickstartOptions(BaseModel):
    """What the quickstart runs besides training; never part of a run's config hash."""

    model_config = ConfigDict(extra="forbid", title="quickstart options")
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2],
                         description="comma-separated distinct seeds of the dynamics experiment; the first "
                                     "serves the solver")
    no_solver_eval: bool = Field(False, description="skip the small best-of-N solver evaluation")
    no_probes: bool = Field(False, description="skip the probe sweep (DIS ranking)")
    probe_families: list[str] = Field(default_factory=list,
                                      description="comma-separated families of the probe sweep (default: the "
                                                  "packaged probe config's)")


def evaluate(cfg: BaseTrainConfig, store: ArtifactStore, run_id: str, pool: Pool) -> list[dict[str, Any]]:
    """Held-out instances (eval seed, training problems excluded), sharded over Ray tasks."""
    from actors.base_model import eval_shard_task
    from squigglray.jobs.ray_runtime import cluster_cpus

    items = heldout_instances(cfg.data.resolved_families(), cfg.eval.levels, cfg.eval.n_per_family,
                              cfg.eval.seed, pool.problems())
    payload = [{"level": lv, "instance": x.model_dump(mode="json", by_alias=True)} for lv, x in items]
    shards = max(1, min(cluster_cpus(), len(payload)))
    ckpt = str(store.download_dir(f"{store.run_checkpoints(run_id)}/final"))
    refs = [
        eval_shard_task.remote(ckpt, payload[i::shards], cfg.eval.max_new_tokens, cfg.eval.code_timeout_s,
                               cfg.eval.batch_size)
        for i in range(shards)
    ]
    return [row for shard in ray.get(refs) for row in shard]


EVAL_PROVENANCE = ("run_id", "seed", "config_hash", "dataset_slice_hash", "package_version")


def stored_eval(store: ArtifactStore, rec: RunRecord) -> list[dict[str, Any]] | None:
    """The held-out rows an earlier quickstart wrote for this run (same config hash and package
    version): decoding is greedy and the checkpoint is the same, so evaluating again gives them again.
    None when there are none, or the file cannot be read."""
    path = f"{store.run_dir(rec.provenance.run_id)}/reports/heldout_eval.parquet"
    if not store.exists(path):
        return None
    try:
        t = store.read_parquet(path)
    except Exception:  # noqa: BLE001 - unreadable: evaluate again and overwrite it
        return None
    if (t.num_rows == 0 or not set(EVAL_PROVENANCE) <= set(t.column_names)
            or set(t.column("config_hash").to_pylist()) != {rec.provenance.config_hash}
            or set(t.column("package_version").to_pylist()) != {__version__}):
        return None
    return t.drop_columns(list(EVAL_PROVENANCE)).to_pylist()


def stored_solver_eval(store: ArtifactStore, run_id: str, cfg: SolverEvalConfig) -> dict[str, Any] | None:
    """The solver evaluation an earlier quickstart wrote for this run with the same settings and
    package version (its candidates are seeded: sampling again gives them again). None otherwise."""
    path = f"{store.run_dir(run_id)}/reports/solver_eval.json"
    if not store.exists(path):
        return None
    try:
        out = store.read_json(path)
        ev = out["evaluation"]
        same = (out["provenance"]["run_id"] == run_id and ev["config_hash"] == config_hash(cfg)
                and ev["package_version"] == __version__)
    except Exception:  # noqa: BLE001 - unreadable or another schema: evaluate again and overwrite it
        return None
    return out if same else None


def report_markdown(rec: RunRecord, table: list[EvalRow], seconds: dict[str, float], reused: bool) -> str:
    p = rec.provenance
    lines = [
        "## Quickstart: this run serves the solver", "",
        f"- model: `{rec.model_preset}`, {rec.n_params:,} parameters (Llama-style: RMSNorm, RoPE, SwiGLU, tied embeddings)",
        f"- training: {rec.steps} steps, {rec.tokens_seen:,} trace tokens, {rec.train_seconds:.0f} s"
        + (" (reused from an earlier run)" if reused else ""),
        f"- final training loss: {rec.final_loss:.4f}",
        f"- seed {p.seed}, config hash `{p.config_hash[:16]}`, slice `{p.dataset_slice_id}`, squigglray {p.package_version}",
        f"- curriculum: {p.curriculum}",
        "- wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()), "",
        "### Held-out accuracy per family (greedy, one code round, exact match)", "",
        "| family | n | code exact | boxed exact | well-formed |", "|---|---:|---:|---:|---:|",
    ]
    for r in table:
        name = f"**{r.family_id}**" if r.family_id == "ALL" else r.family_id
        lines.append(f"| {name} | {r.n} | {r.code_acc:.2f} | {r.boxed_acc:.2f} | {r.format_acc:.2f} |")
    lines += ["", "`code exact`: the generated ```python block, run in a subprocess, prints the answer. "
              "`boxed exact`: the final \\boxed{} equals the answer."]
    return "\n".join(lines) + "\n"


def write_eval(store: ArtifactStore, rec: RunRecord, rows: list[dict[str, Any]], table: list[EvalRow], md: str,
               research_log: str = "") -> None:
    rid, p = rec.provenance.run_id, rec.provenance
    t = pa.Table.from_pylist(rows)
    for col, val in zip(EVAL_PROVENANCE, (rid, p.seed, p.config_hash, p.dataset_slice_hash, __version__)):
        t = t.append_column(col, pa.array([val] * len(t)))
    store.write_parquet(f"{store.run_dir(rid)}/reports/heldout_eval.parquet", t)
    store.write_json(f"{store.run_dir(rid)}/reports/heldout_summary.json", {
        "provenance": p.model_dump(), "table": [r.model_dump() for r in table],
    })
    scalars = store.read_parquet(store.run_scalars(rid)).to_pydict()
    png = loss_curve_png(scalars["step"], scalars["loss"], scalars["phase"], f"{rid}: training loss")
    store.write_bytes(f"{store.run_dir(rid)}/reports/plots/loss.png", png)
    write_report(store, rid, md, research_log)


def write_report(store: ArtifactStore, run_id: str, md: str, research_log: str = "") -> None:
    """The run's report: its research log (from the dynamics analysis) and the quickstart's sections."""
    body = "\n".join(x for x in (research_log.rstrip(), md) if x)
    store.write_text(store.run_report(run_id), body + "\n![training loss](plots/loss.png)\n")


SMOKE_SOLVER_FAMILIES = ["arithmetic", "gcd_lcm", "linear_equation", "mod_power"]


def solver_eval_config(cfg: BaseTrainConfig) -> SolverEvalConfig:
    """The quickstart's small solver evaluation: for the tiny model, N in 1,4,16 on one held-out medium
    problem per family (about 40 s on 2 idle CPU cores); for the nano smoke model, N in 1,4 on one easy
    problem of 4 families (seconds). A laptop job: weak process isolation is allowed where no namespaces
    exist (macOS), with a warning."""
    if cfg.model.preset == "nano":
        fams = cfg.data.resolved_families()
        pick = [f for f in SMOKE_SOLVER_FAMILIES if f in fams] or fams[:4]
        return SolverEvalConfig(families=pick, levels=["easy"], per_family=1, ns=[1, 4], rounds=1,
                                max_tokens_per_round=96, code_timeout_s=min(cfg.eval.code_timeout_s, 120),
                                sandbox_workers=1, sandbox_allow_weak_isolation=True)
    return SolverEvalConfig(levels=["medium"], per_family=1, ns=[1, 4, 16], rounds=2, max_tokens_per_round=192,
                            code_timeout_s=min(cfg.eval.code_timeout_s, 120), sandbox_allow_weak_isolation=True)


def solver_markdown(result: dict[str, Any]) -> str:
    ev, ns = result["evaluation"], result["ns"]
    return "\n".join([
        "", f"## Solver: best-of-N with tool use and voting (N = {', '.join(map(str, ns))}; "
        f"{ev['problems']} held-out {'/'.join(result['levels'])} problems, {', '.join(map(str, result['families'][:4]))}"
        f"{', ...' if len(result['families']) > 4 else ''})", "",
        result["markdown"].rstrip(),
        "", "`pass@1`: mean correctness of single candidates. `maj@N`: plain majority vote over N candidates. "
        "`weighted@N`: seed 004's vote (integers in [0, 99999], counted twice when the candidate's code ran). "
        "`any@N`: some candidate of N is correct. N < max: averaged over disjoint groups of N candidates. "
        "`code no`: the model writes its own ```output (no tool). "
        f"Files: solver_eval.json / .parquet / .md; {ev['candidates']} candidates in "
        f"{result['seconds'].get('total', 0):.0f} s.", "",
        "![solver accuracy](plots/solver_accuracy.png)", "",
    ])


def probe_config(cfg: BaseTrainConfig, families: list[str] | None = None) -> ProbeConfig:
    """The quickstart's probe sweep: configs/probe.yaml, or probe_smoke.yaml for the nano model;
    `families` replaces the file's (checked like the file's: an unknown one fails before any work)."""
    overrides = [f"families=[{','.join(families)}]"] if families else []
    return load_config(ProbeConfig, packaged_config("probe_smoke" if cfg.model.preset == "nano" else "probe"),
                       overrides)


def probe_markdown(sweep: dict[str, Any]) -> str:
    from squigglray.report.probe_report import ranking_markdown, stability_line

    exp = sweep["experiment_id"]
    return "\n".join([
        "", f"## Probe sweep: DIS ranking ({sweep['probes']} LoRA micro-finetunes of this checkpoint, "
        f"experiment `{exp}`)", "",
        "DIS = Magnitude x Coherence x Novelty of each family's micro-finetune against control probes "
        "(shuffled solutions, a random family mixture); *controls* are references. Full report: "
        f"`experiments/{exp}/probe_report.md`; table: `experiments/{exp}/aggregated/probe_summaries.parquet`.", "",
        ranking_markdown(sweep["family_table"]), "", stability_line(sweep["stability"]), "",
    ])


def print_table(table: list[EvalRow], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("family", "n", "code exact", "boxed exact", "well-formed"):
        t.add_column(col, justify="left" if col == "family" else "right")
    for r in table:
        t.add_row(r.family_id, str(r.n), f"{r.code_acc:.2f}", f"{r.boxed_acc:.2f}", f"{r.format_acc:.2f}",
                  style="bold" if r.family_id == "ALL" else None)
    Console().print(t)


def quickstart(cfg: BaseTrainConfig, data_dir: str | None = None, reuse: bool = True,
               solver_eval: SolverEvalConfig | bool | None = None,
               dynamics: DynamicsOptions | None = None, probes: ProbeConfig | bool | None = None) -> dict[str, Any]:
    """solver_eval: None = the default small evaluation (solver_eval_config), False = skip it.
    dynamics: the experiment's seeds and resources (default: seeds 0,1,2 sharing the CPUs).
    probes: None = the packaged probe sweep (probe_config), False = skip it."""
    from squigglray.jobs.eval_solver import eval_solver
    from squigglray.jobs.eval_solver import print_table as print_solver_table
    from squigglray.jobs.probe import print_probe_table, run_probe_sweep
    from squigglray.jobs.ray_runtime import ensure_ray

    store = ArtifactStore(data_dir)
    ensure_ray()
    seconds: dict[str, float] = {}
    opts = dynamics or DynamicsOptions()
    pool = build_pool(cfg, store)  # once: its problems are kept out of evaluation
    cfg = with_checkpoints(cfg, opts)
    first = seed_config(cfg, opts.seeds[0], opts.schedule_jitter)
    reused = reuse and find_reusable(first, store, pool.slice_hash) is not None
    t0 = time.perf_counter()
    experiment = run_dynamics(cfg, opts, data_dir, reuse=reuse, slice_hash=pool.slice_hash)
    seconds["train"] = experiment["seconds"]["train"]
    seconds["analysis"] = experiment["seconds"]["analysis"]
    rid = experiment["runs"][opts.seeds[0]]
    rec = RunRecord.model_validate(store.read_json(f"{store.run_dir(rid)}/run.json"))
    research_log = store.read_text(store.run_research_log(rid))
    t1 = time.perf_counter()
    rows = (stored_eval(store, rec) if reused else None) or evaluate(first, store, rid, pool)
    seconds["eval"] = time.perf_counter() - t1
    table = summarize(rows)
    write_eval(store, rec, rows, table, report_markdown(rec, table, seconds, reused), research_log)
    print_table(table, f"held-out accuracy: {rid} ({rec.n_params:,} params)")
    solver, sweep, sections = None, None, []
    if solver_eval is not False:
        scfg = solver_eval if isinstance(solver_eval, SolverEvalConfig) else solver_eval_config(cfg)
        t2 = time.perf_counter()
        solver = (stored_solver_eval(store, rid, scfg) if reused else None) or eval_solver(
            store, run_id=rid, config=scfg, exclude_problems=pool.problems(), executor="ray")
        seconds["solver_eval"] = time.perf_counter() - t2
        ev = solver["evaluation"]
        print_solver_table(solver["table"], f"solver accuracy: {ev['problems']} held-out problems, "
                                            f"{ev['candidates']} candidates")
        sections.append(solver_markdown(solver))
        write_report(store, rid, report_markdown(rec, table, seconds, reused) + "".join(sections), research_log)
    if probes is not False:
        t3 = time.perf_counter()
        base = str(store.download_dir(f"{store.run_checkpoints(rid)}/final"))
        sweep = run_probe_sweep(probes if isinstance(probes, ProbeConfig) else probe_config(cfg), f"probe-{rid}",
                                base, data_dir)
        seconds["probes"] = time.perf_counter() - t3
        sections.append(probe_markdown(sweep))
        write_report(store, rid, report_markdown(rec, table, seconds, reused) + "".join(sections), research_log)
        print_probe_table(sweep["family_table"], f"DIS ranking: {sweep['probes']} probes of {rid}")
    seconds["total"] = time.perf_counter() - t0
    print(f"run report: {store.full(store.run_report(rid))}")
    print(f"experiment report: {store.full(store.experiment_dir(experiment['experiment_id']))}/report.md")
    return {"run": rec, "table": table, "rows": rows, "reused": reused, "seconds": seconds, "solver": solver,
            "experiment": experiment, "probe_sweep": sweep}


def make_parser():
    """The parser of `python -m squigglray.jobs.quickstart` and of `squigglray quickstart`."""
    return make_parser_for("squigglray quickstart", __doc__, TrainJobArgs, QuickstartOptions)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    job, opts = parse_args(make_parser(), argv)
    cfg = job.train_config()
    dynamics = build_config(DynamicsOptions, {"seeds": opts.seeds})
    probes = False if opts.no_probes else probe_config(cfg, opts.probe_families)  # so does a bad family
    return quickstart(cfg, job.data_dir, reuse=not job.no_reuse, solver_eval=False if opts.no_solver_eval else None,
                      dynamics=dynamics, probes=probes)


if __name__ == "__main__":
    run_module(__spec__.name)
