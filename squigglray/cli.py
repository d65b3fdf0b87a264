"""The `squigglray` command.

    squigglray families list
    squigglray families sample mod_power -n 3 --difficulty hard --knob mod_max=97
    squigglray slice build --config squigglray/configs/slice.yaml
    squigglray slice rebuild data/slices/<slice_id>/manifest.json --out /tmp/rebuilt
    squigglray dcm run --config squigglray/configs/dcm_smoke.yaml --set k=32
    squigglray dcm sweep --config squigglray/configs/dcm_smoke.yaml --ks 4,8,16,32 --seeds 0,1
    squigglray train-base --set model.preset=nano --set train.steps=50
    squigglray quickstart [--smoke]
    squigglray dynamics --seeds 0,1,2 [--smoke] [--gpus-per-trial 1]
    squigglray probe --exp first-probe --base tiny --families mod_power,crt,stars_bars,gcd_lcm --seeds 0,1
    squigglray probe-confirm --exp first-probe --seeds 0,1,2
    squigglray solve "What is 17 * 23?" --n 8
    squigglray solve --file problems.csv --out submission.csv
    squigglray eval-solver --per-family 1 --ns 1,4,16
    squigglray serve --port 8000
    squigglray serve-verifiers --port 8000
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from squigglray import __version__
from squigglray.entry import user_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Ray-native math-reasoning LLM research.")
families_app = typer.Typer(no_args_is_help=True, help="Synthetic problem families.")
app.add_typer(families_app, name="families")
slice_app = typer.Typer(no_args_is_help=True, help="Dataset slices: candidate pools on Ray Data, manifests, holdouts.")
app.add_typer(slice_app, name="slice")
dcm_app = typer.Typer(no_args_is_help=True, help="DCM phase 1a: per-example soft-prompt optimization of a frozen LM.")
app.add_typer(dcm_app, name="dcm")
ineq_app = typer.Typer(no_args_is_help=True, help="Olympiad inequalities: generate, verify, split, baseline, SFT, eval.")
app.add_typer(ineq_app, name="ineq")
clmodel_app = typer.Typer(no_args_is_help=True, help="CLModel: encoder -> RVQ -> conditioning -> reasoner -> decoder.")
app.add_typer(clmodel_app, name="clmodel")
console = Console()
err = Console(stderr=True)


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
    raise typer.Exit(2)


def _run(fn, *args, **kwargs):
    """Call fn; user errors (bad config, unknown family, bad knob...) print one clear line, exit 2."""
    try:
        return fn(*args, **kwargs)
    except user_errors() as e:
        _fail(e)


@app.command()
def version() -> None:
    """Print the package version."""
    console.print(__version__)


@families_app.command("list")
def families_list() -> None:
    """List the registered families with their target types and knobs."""
    from squigglray.families import describe, list_families

    t = Table(title="problem families")
    for col in ("family_id", "target type", "knobs (easy/medium/hard)", "title"):
        t.add_column(col)
    for fid in list_families():
        d = describe(fid)
        knobs = ", ".join(f"{k}={v['easy']}/{v['medium']}/{v['hard']}" for k, v in d["knobs"].items())
        t.add_row(fid, d["target_type"], knobs, d["title"])
    console.print(t)


@families_app.command("describe")
def families_describe(family: str) -> None:
    """Show a family's knobs, ranges and solution strategy as JSON."""
    from squigglray.families import describe

    console.print_json(json.dumps(_run(describe, family)))


def _parse_knobs(pairs: list[str]) -> dict[str, int]:
    from squigglray.families import BadKnob

    out = {}
    for p in pairs:
        name, sep, value = p.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name] = int(value)
        except ValueError:
            _fail(BadKnob(f"--knob {p!r} must look like name=<integer>"))
    return out


@families_app.command("sample")
def families_sample(
    family: str,
    n: int = typer.Option(3, "-n", help="number of instances"),
    seed: int = typer.Option(0, help="sampling seed"),
    difficulty: str = typer.Option("easy", help="easy | medium | hard"),
    knob: list[str] = typer.Option([], help="override a knob: name=value (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """Sample instances of a family (the same arguments give the same instances, anywhere)."""
    from squigglray.families import sample

    items = _run(sample, family, n, seed, difficulty, _parse_knobs(knob))
    for x in items:
        if as_json:
            print(x.model_dump_json(by_alias=True))
        else:
            console.rule(f"{x.instance_id}  answer={x.answer}")
            console.print(x.problem, markup=False, highlight=False)
            console.print(x.trace, markup=False, highlight=False)


def _load_train_config(config: Optional[str], overrides: list[str], default: str):
    from squigglray.config import load_config
    from squigglray.config import packaged_config
    from squigglray.training import BaseTrainConfig

    return _run(load_config, BaseTrainConfig, config or packaged_config(default), overrides)


ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file")
SetOpt = typer.Option([], "--set", help="dotted override, e.g. train.steps=100 (repeatable)")
DataDirOpt = typer.Option(None, "--data-dir", help="artifact root (default $SQUIGGLRAY_DATA or ./data)")
MemoryClassOpt = typer.Option(None, "--memory-class", help="minimum GPU memory per trial: 16g, 32g, 40g or 80g")
AcceleratorOpt = typer.Option(None, "--accelerator-type", help="e.g. A100: trials only on those GPUs")


@app.command("train-base")
def train_base_cmd(
    config: Optional[str] = ConfigOpt,
    overrides: list[str] = SetOpt,
    data_dir: Optional[str] = DataDirOpt,
    no_reuse: bool = typer.Option(False, "--no-reuse", help="train even if this config already ran"),
) -> None:
    """Train the base model from scratch on the family mixture (a Ray task on the local or given cluster)."""
    from squigglray.jobs.quickstart import train_or_reuse
    from squigglray.jobs.ray_runtime import ensure_ray
    from squigglray.paths import ArtifactStore

    cfg = _load_train_config(config, overrides, "quickstart")
    ensure_ray()
    rec, _ = _run(train_or_reuse, cfg, ArtifactStore(data_dir), not no_reuse)
    console.print_json(rec.to_json())


@app.command()
def quickstart(
    smoke: bool = typer.Option(False, "--smoke", help="nano model, a few steps: about a minute"),
    config: Optional[str] = ConfigOpt,
    overrides: list[str] = SetOpt,
    data_dir: Optional[str] = DataDirOpt,
    no_reuse: bool = typer.Option(False, "--no-reuse", help="train even if this config already ran"),
    no_solver_eval: bool = typer.Option(False, "--no-solver-eval", help="skip the small best-of-N solver evaluation"),
    no_probes: bool = typer.Option(False, "--no-probes", help="skip the probe sweep (DIS ranking)"),
) -> None:
    """The main job: the 3-seed dynamics experiment, per-family held-out accuracy and a small solver
    evaluation of seed 0, then a probe sweep of its checkpoint ranked by DIS."""
    from squigglray.jobs.quickstart import quickstart as run

    cfg = _load_train_config(config, overrides, "smoke" if smoke else "quickstart")
    _run(run, cfg, data_dir, not no_reuse, solver_eval=False if no_solver_eval else None,
         probes=False if no_probes else None)


def forward(name: str, module: str, help: str) -> None:
    """Register `squigglray <name>` as the job module's own parser (entry.make_parser): every
    argument, --help included, goes to `<module>.main`, so the two paths are one."""

    @app.command(name, help=help, add_help_option=False,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _command(ctx: typer.Context) -> None:
        import importlib

        from squigglray.entry import run_main

        main = importlib.import_module(module).main
        run_main(lambda: main(list(ctx.args)))


forward("dynamics", "squigglray.jobs.dynamics",
        "Multi-seed training with geometry capture and probes (Ray Tune), then events, seed invariance, "
        "the probe/loss correlation tests and the reports. Run it again to continue an interrupted experiment.")


@app.command()
def probe(
    exp: str = typer.Option(..., "--exp", help="experiment id: experiments/<EXP_ID>/ under the data dir"),
    base: str = typer.Option("tiny", "--base", help="checkpoint folder, trained preset name, or hub id"),
    families: Optional[str] = typer.Option(None, "--families", help="comma-separated; default: every family"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated; default 0,1"),
    config: Optional[str] = typer.Option(None, "--config", help="ProbeConfig YAML (e.g. squigglray/configs/probe.yaml)"),
    overrides: list[str] = SetOpt,
    data_dir: Optional[str] = DataDirOpt,
    cpus_per_trial: float = typer.Option(0.0, "--cpus-per-trial", help="0 = one CPU per probe"),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="e.g. 0.25: four probes share a GPU"),
    memory_class: Optional[str] = MemoryClassOpt,
    accelerator_type: Optional[str] = AcceleratorOpt,
    max_failures: int = typer.Option(2, "--max-failures", help="times a failed probe is run again"),
) -> None:
    """LoRA micro-finetune probes, family x seed on Ray Tune, scored by DIS and aggregated to Parquet.
    Run it again to add families or seeds: probes with a summary of the same config hash are skipped."""
    from squigglray.config import build_config
    from squigglray.jobs.probe import SweepOptions, run_probe_sweep, sweep_config

    cfg = _run(sweep_config, config, overrides, families, seeds)
    opts = _run(lambda: build_config(SweepOptions, {"cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial,
                                                    "memory_class": memory_class, "accelerator_type": accelerator_type,
                                                    "max_failures": max_failures}))
    out = _run(run_probe_sweep, cfg, exp, base, data_dir, opts)
    from squigglray.jobs.quickstart import print_probe_table

    print_probe_table(out["family_table"], f"DIS ranking: {exp} ({out['probes']} probes, {out['ran']} run now)")


@app.command("probe-confirm")
def probe_confirm(
    exp: str = typer.Option(..., "--exp", help="a scored probe experiment"),
    seeds: str = typer.Option("0,1,2", "--seeds", help="fine-tune seeds per arm"),
    top: int = typer.Option(2, "--top", help="families with the highest DIS that make the curated corpus"),
    steps: Optional[int] = typer.Option(None, "--steps", help="fine-tune steps (default: the probes')"),
    data_dir: Optional[str] = DataDirOpt,
) -> None:
    """Roadmap step 5: fine-tune on a DIS-curated corpus and on a random corpus of the same token
    budget, several seeds each, and compare them on the holdout."""
    from squigglray.jobs.dynamics import parse_seeds
    from squigglray.jobs.probe_confirm import run_confirmation

    out = _run(run_confirmation, data_dir, exp, parse_seeds(seeds), top, steps)
    console.print(out.get("verdict", ""))


def _print_slice(m) -> None:
    t = Table(title=f"slice {m.slice_id}: {m.slice['items']} items, {m.slice['tokens']} tokens")
    for col in ("family", "target type", "train", "probe_a", "holdout"):
        t.add_column(col, justify="left" if col in ("family", "target type") else "right")
    for fam, per in m.slice["families"].items():
        t.add_row(fam, per["target_type"] or "-", *(str(per[s]) for s in ("train", "probe_a", "holdout")))
    console.print(t)
    console.print(f"styles {m.slice['styles']}  synthetic fill {m.slice['synthetic_fill']}  "
                  f"removed for overlap {m.contamination['by_reason']}", highlight=False)
    if m.slice["short_families"]:
        console.print(f"short of their quota (got, wanted): {m.slice['short_families']}", highlight=False)
    print(f"manifest: {m.slice_id}/manifest.json  items sha256 {m.hashes['items_sha256']}")


@slice_app.command("build")
def slice_build(
    config: Optional[str] = typer.Option(None, "--config", "-c", help="SliceConfig YAML (default: squigglray/configs/slice.yaml)"),
    overrides: list[str] = SetOpt,
    data_dir: Optional[str] = DataDirOpt,
) -> None:
    """Build slices/<slice_id>/ (items.parquet, removed.parquet, manifest.json) on Ray Data."""
    from squigglray.config import load_config
    from squigglray.data.config import SliceConfig
    from squigglray.config import packaged_config
    from squigglray.jobs.slice import build_slice

    cfg = _run(load_config, SliceConfig, config or packaged_config("slice"), overrides)
    _print_slice(_run(build_slice, cfg, data_dir, log=lambda msg: console.print(msg, highlight=False)))


@slice_app.command("rebuild")
def slice_rebuild(
    manifest: str = typer.Argument(..., help="a slice's manifest.json"),
    out: Optional[str] = typer.Option(None, "--out", help="folder for the rebuilt slice (default: slices/<id> under the data dir)"),
    data_dir: Optional[str] = DataDirOpt,
) -> None:
    """Rebuild a slice from its manifest alone and check items.parquet is byte-identical."""
    from squigglray.jobs.slice import rebuild_slice

    try:
        _run(rebuild_slice, manifest, data_dir, out, log=lambda msg: console.print(msg, highlight=False))
    except RuntimeError as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
        raise typer.Exit(1)


@slice_app.command("show")
def slice_show(
    slice_id: str = typer.Argument(..., help="slice id under the data dir, or a slice folder"),
    data_dir: Optional[str] = DataDirOpt,
) -> None:
    """Per-family counts, styles, fill and removals of a built slice."""
    from squigglray.data.slice import read_manifest
    from squigglray.paths import ArtifactStore

    _print_slice(_run(read_manifest, slice_id, ArtifactStore(data_dir)))


def _dcm_config(config: Optional[str], overrides: list[str]):
    from squigglray.config import load_config
    from squigglray.dcm.config import DcmConfig
    from squigglray.config import packaged_config

    return _run(load_config, DcmConfig, config or packaged_config("dcm_smoke"), overrides)


@dcm_app.command("run")
def dcm_run(config: Optional[str] = ConfigOpt, overrides: list[str] = SetOpt, data_dir: Optional[str] = DataDirOpt) -> None:
    """Seed 001's stages on one config: Q/A diagnostics, joint Q-A, greedy spot check, with gates."""
    from squigglray.jobs.dcm import run_one

    out = _run(run_one, _dcm_config(config, overrides), data_dir, log=lambda m: console.print(m, highlight=False))
    print(f"report: {out['experiment_id']}/report.md")


@dcm_app.command("sweep")
def dcm_sweep(
    config: Optional[str] = ConfigOpt, overrides: list[str] = SetOpt, data_dir: Optional[str] = DataDirOpt,
    ks: str = typer.Option("4,8,16,32,64,128", "--ks", help="comma-separated K values"),
    seeds: str = typer.Option("0", "--seeds", help="comma-separated seeds"),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial"),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="e.g. 1: each trial declares a GPU"),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="YAML list of dataset specs, e.g. "
                                           "'[{kind: arithmetic, n: 32}, {kind: sudoku, n: 32, holes: 8}]'"),
) -> None:
    """K x seed x dataset trials on Ray Tune (joint stage): convergence, exact match, losses, steps per K."""
    from squigglray.jobs.dcm import parse_datasets, parse_ints, run_sweep

    cfg = _dcm_config(config, overrides)
    out = _run(run_sweep, cfg, _run(parse_ints, ks, "ks"), _run(parse_ints, seeds, "seeds"),
               _run(parse_datasets, datasets), data_dir, cpus_per_trial, gpus_per_trial,
               log=lambda m: console.print(m, highlight=False))
    t = Table(title=f"DCM sweep {out['sweep_id']}")
    for col in ("dataset", "K", "converged", "greedy exact", "seed rule", "steps"):
        t.add_column(col, justify="left" if col == "dataset" else "right")
    for r in out["table"]:
        t.add_row(r["dataset"], str(r["k"]), f"{r['convergence_rate']:.0%}", f"{r['exact_match_rate']:.0%}",
                  f"{r['seed_rule_rate']:.0%}", "-" if r["steps_to_converge"] is None else f"{r['steps_to_converge']:.0f}")
    console.print(t)


# ----------------------------------------------------------------------------------------------
# the solver: solve, eval-solver, serve
# ----------------------------------------------------------------------------------------------
ModelOpt = typer.Option("tiny", "--model", "-m",
                        help="preset trained under the data dir (tiny, nano, ...), checkpoint folder or hub id")


def _print_solve_result(result, traces: bool) -> None:
    from rich.markup import escape

    if traces:
        for c in result.candidates:
            console.rule(f"candidate {c.index}: answer={escape(str(c.answer))}  code_ok={c.code_ok}  weight={c.weight:g}",
                         characters="-", style="dim")
            console.print(c.text or "", markup=False, highlight=False)
    ans = "none (no candidate gave a valid answer)" if result.answer is None else result.answer
    console.print(f"[bold]answer:[/] {escape(str(ans))}")
    if result.votes:
        t = Table(title="votes")
        for col in ("answer", "weight", "candidates"):
            t.add_column(col, justify="left" if col == "answer" else "right")
        for k, w in list(result.votes.items())[:10]:
            t.add_row(escape(k), f"{w:g}", str(result.counts.get(k, 0)))
        console.print(t)
    tm = result.timings
    early = " (stopped early: the vote was decided)" if result.stopped_early else ""
    console.print(f"{result.n_candidates}/{result.n_requested} candidates{early}, {result.tokens:,} tokens; "
                  f"generate {tm.get('generate_s', 0):.1f} s, execute {tm.get('execute_s', 0):.1f} s, "
                  f"total {tm.get('total_s', 0):.1f} s", highlight=False)


@app.command()
def solve(
    problem: Optional[str] = typer.Argument(None, help="the problem text (or --file)"),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="AIMO-style CSV with columns id,problem[,answer]"),
    out: Path = typer.Option(Path("submission.csv"), "--out", "-o", help="with --file: the submission CSV (id,answer)"),
    model: str = ModelOpt,
    data_dir: Optional[str] = DataDirOpt,
    n: int = typer.Option(16, "--n", "-n", help="candidates per problem (best-of-N)"),
    rounds: int = typer.Option(4, help="code rounds per candidate (generate, run, feed the output back)"),
    mode: str = typer.Option("aimo", help="vote: aimo (integers 0..99999, x2 with working code) | majority | general"),
    seed: int = typer.Option(0, help="sampling seed (same seed, same answer)"),
    timeout: float = typer.Option(5.0, help="seconds per code run"),
    temperature: float = typer.Option(0.8, help="sampling temperature"),
    no_code: bool = typer.Option(False, "--no-code", help="do not execute the model's code (no tool)"),
    traces: bool = typer.Option(False, "--traces", help="print every candidate's text (with --file: <out>.traces.jsonl)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output (with --file: one line per problem)"),
    workers: int = typer.Option(2, help="sandbox processes running the candidates' code"),
    overwrite: bool = typer.Option(False, "--overwrite", help="with --file: start the submission over instead of resuming"),
    default_answer: str = typer.Option("0", help="with --file: written when no candidate gives a valid answer"),
) -> None:
    """Solve a problem (or every row of a CSV) with tool-integrated best-of-N sampling and a weighted vote."""
    from squigglray.config import build_config
    from squigglray.jobs import solve_cli
    from squigglray.schemas.solve import SolveOptions
    from squigglray.solve.answers import is_correct

    if (problem is None) == (file is None):
        _fail(ValueError("give either a problem (as text) or --file problems.csv, not " + ("both" if file else "neither")))
    if workers < 1:
        _fail(ValueError(f"--workers must be >= 1, got {workers}"))
    opts = _run(build_config, SolveOptions, {
        "n": n, "rounds": rounds, "mode": mode, "seed": seed, "code_timeout_s": timeout,
        "temperature": temperature, "execute_code": not no_code,
    })
    if file is None:
        if not problem.strip():
            _fail(ValueError("the problem is empty"))
        engine, ex = _run(solve_cli.load_solver, model, data_dir, workers, not no_code)
        try:
            with err.status("solving ..."):
                result = solve_cli.solve_one(problem, engine, ex, opts, traces)
        finally:
            if ex is not None:
                ex.close()
        if as_json:
            print(result.model_dump_json(indent=2, exclude={"candidates"} if not traces else None))
        else:
            _print_solve_result(result, traces)
        return

    rows, has_answers = _run(solve_cli.read_problems, file)
    if not overwrite:
        _run(solve_cli.check_resume, rows, out)
    engine, ex = _run(solve_cli.load_solver, model, data_dir, workers, not no_code)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("solving"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[last]}"), console=err)
    task = bar.add_task("solve", total=len(rows), last="")

    def on_row(r, answer, result) -> None:
        bar.update(task, advance=1, last=f"{r.id}: {answer}")
        if as_json:
            rec = {"id": r.id, "answer": answer, "resumed": result is None}
            if r.answer is not None:
                rec.update(gold=r.answer, correct=is_correct(answer, r.answer))
            if result is not None:
                rec.update(votes=result.votes, n_candidates=result.n_candidates, stopped_early=result.stopped_early,
                           tokens=result.tokens, timings=result.timings)
            print(json.dumps(rec), flush=True)

    try:
        with bar:
            s = _run(solve_cli.solve_file, rows, out, engine, ex, opts, overwrite=overwrite,
                     default_answer=default_answer, on_row=on_row,
                     traces_path=out.with_name(out.stem + ".traces.jsonl") if traces else None)
    finally:
        if ex is not None:
            ex.close()
    if as_json:
        print(json.dumps({"summary": {"out": s.out, "solved": s.solved, "resumed": s.resumed, "graded": s.graded,
                                      "correct": s.correct, "accuracy": s.accuracy, "seconds": round(s.seconds, 2)}}))
        return
    resumed = f" ({s.resumed} already there, resumed)" if s.resumed else ""
    console.print(f"wrote {s.out}: {s.solved} problems solved in {s.seconds:.1f} s{resumed}", highlight=False)
    if s.no_answer:
        console.print(f"{s.no_answer} problem(s) had no valid answer; wrote {default_answer!r} for them", highlight=False)
    if has_answers and s.graded:
        console.print(f"[bold]accuracy:[/] {s.correct}/{s.graded} = {s.accuracy:.3f}", highlight=False)


@app.command("eval-solver")
def eval_solver_cmd(
    model: str = ModelOpt,
    run_id: Optional[str] = typer.Option(None, "--run-id", help="evaluate this run's final checkpoint instead"),
    data_dir: Optional[str] = DataDirOpt,
    families: Optional[str] = typer.Option(None, help="comma-separated families (default: the run's families)"),
    levels: str = typer.Option("medium", help="comma-separated difficulty levels"),
    per_family: int = typer.Option(2, help="held-out problems per family and level"),
    ns: str = typer.Option("1,4,16,64", help="numbers of candidates N, comma-separated"),
    seed: Optional[int] = typer.Option(None, help="instance seed (default: the run's eval.seed)"),
    sample_seed: int = typer.Option(0, help="seed of the sampled candidates"),
    rounds: int = typer.Option(2, help="code rounds per candidate"),
    timeout: float = typer.Option(5.0, help="seconds per code run"),
    workers: int = typer.Option(2, help="sandbox workers"),
    local: bool = typer.Option(False, "--local", help="sandboxes in this process (no Ray)"),
    sandbox_nodes: bool = typer.Option(False, "--sandbox-nodes", help="sandbox actors only on CPU sandbox nodes"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON instead of the table"),
) -> None:
    """pass@1, maj@N and weighted-vote accuracy for several N, with and without code execution, on
    held-out family instances; writes solver_eval.{json,parquet,md} and plots/solver_accuracy.png."""
    from squigglray.jobs.eval_solver import eval_solver, parse_ns, print_table, summary_line

    try:
        ns_list = parse_ns(ns)
    except ValueError as e:
        _fail(e)
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()]  # noqa: E731
    out = _run(eval_solver, data_dir, model, run_id=run_id, executor="local" if local else "ray",
               families=split(families) if families else None, levels=split(levels), per_family=per_family,
               ns=ns_list, seed=seed, sample_seed=sample_seed, rounds=rounds, code_timeout_s=timeout,
               sandbox_workers=workers, sandbox_nodes=sandbox_nodes,
               log=lambda msg: err.print(msg, markup=False, highlight=False))
    if as_json:
        print(json.dumps({k: v for k, v in out.items() if k != "problems"}, indent=2, default=str))
        return
    ev = out["evaluation"]
    print_table(out["table"], f"solver accuracy: {ev['model']}, {ev['problems']} held-out problems", console)
    console.print(summary_line(out), highlight=False)
    for k, v in out["paths"].items():
        print(f"{k}: {v}")  # plain: a long path must stay on one line


def _deploy(serve_fn, config: Optional[str], ov: dict, overrides: list[str], no_block: bool) -> None:
    """A serve command: --set overrides on top of `ov`, then deploy; a failed deployment exits 1."""
    from squigglray.config import parse_override

    for text in overrides:
        parts, value = _run(parse_override, text)
        ov[".".join(parts)] = value
    try:
        _run(serve_fn, config, blocking=not no_block, overrides=ov)
    except (RuntimeError, TimeoutError) as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
        raise typer.Exit(1)


@app.command()
def serve(
    config: Optional[str] = typer.Option(None, "--config", "-c", help="Serve config YAML (default serve_apps/solver.yaml)"),
    port: Optional[int] = typer.Option(None, help="HTTP port (default: the config's, 8000)"),
    host: Optional[str] = typer.Option(None, help="HTTP host (default: the config's, 127.0.0.1)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="override the served model (preset, folder, hub id)"),
    data_dir: Optional[str] = DataDirOpt,
    overrides: list[str] = typer.Option([], "--set", help="application arg, e.g. defaults.n=8 (repeatable)"),
    no_block: bool = typer.Option(False, "--no-block", help="deploy and return (the app stays up on a cluster)"),
) -> None:
    """Serve the solver over HTTP with Ray Serve: POST /solve, GET /healthz, OpenAI-compatible /v1."""
    from squigglray.jobs.serve_solver import serve_solver

    _deploy(serve_solver, config, {"host": host, "port": port, "model": model, "data_dir": data_dir}, overrides, no_block)


@app.command("serve-verifiers")
def serve_verifiers_cmd(
    config: Optional[str] = typer.Option(None, "--config", "-c", help="Serve config YAML (default serve_apps/verifiers.yaml)"),
    port: Optional[int] = typer.Option(None, help="HTTP port (default: the config's, 8000)"),
    host: Optional[str] = typer.Option(None, help="HTTP host (default: the config's, 127.0.0.1)"),
    overrides: list[str] = typer.Option([], "--set", help="application arg, e.g. workers=2 (repeatable)"),
    no_block: bool = typer.Option(False, "--no-block", help="deploy and return (the app stays up on a cluster)"),
) -> None:
    """Serve the SymPy/Z3/math-verify tool verifiers over HTTP with Ray Serve: POST /verify/equivalence,
    /verify/z3, /tools/<op>; GET /tools, /healthz."""
    from squigglray.jobs.serve_verifiers import serve_verifiers

    _deploy(serve_verifiers, config, {"host": host, "port": port}, overrides, no_block)


@ineq_app.command("run")
def ineq_run(config: Optional[str] = ConfigOpt, overrides: list[str] = SetOpt, data_dir: Optional[str] = DataDirOpt) -> None:
    """Every step, each cached by its config hash (a rerun resumes): generate -> verify -> split ->
    few-shot baseline -> SFT -> zero-shot eval -> report."""
    from squigglray.config import load_config
    from squigglray.ineq.config import IneqConfig
    from squigglray.jobs.ineq import run
    from squigglray.config import packaged_config

    cfg = _run(load_config, IneqConfig, config or packaged_config("ineq"), overrides)
    out = _run(run, cfg, data_dir, log=lambda m: console.print(m, highlight=False))
    print(f"report: {out['experiment_id']}/report.md")


@clmodel_app.command("train")
def clmodel_train(config: Optional[str] = ConfigOpt, overrides: list[str] = SetOpt, data_dir: Optional[str] = DataDirOpt,
                  local: bool = typer.Option(False, help="train in this process instead of a Ray task"),
                  num_cpus: int = typer.Option(2, help="CPUs of the Ray task"),
                  num_gpus: float = typer.Option(0, help="GPUs of the Ray task")) -> None:
    """Staged training on the project's families (op traces from step_type labels), then the
    milestones: accuracy, quantizer health, routing, tool-call rate, latency."""
    from squigglray.clmodel.run import ClmodelRunConfig
    from squigglray.config import load_config
    from squigglray.jobs.clmodel import train_job
    from squigglray.config import packaged_config

    cfg = _run(load_config, ClmodelRunConfig, config or packaged_config("clmodel"), overrides)
    _run(train_job, cfg, data_dir, local, num_cpus, num_gpus, log=lambda m: console.print(m, highlight=False))


if __name__ == "__main__":
    app()
