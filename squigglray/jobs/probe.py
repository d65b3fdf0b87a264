"""Probe sweep: LoRA micro-finetune probes of a base checkpoint, family x seed on Ray Tune, then
DIS scoring, aggregation to Parquet, impact clusters and the probe report (seed 000 Step 1, roadmap 3).

    squigglray probe --exp first-probe --base tiny --families mod_power,crt,stars_bars,gcd_lcm --seeds 0,1
    squigglray probe --exp hub-probe --base deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --gpus-per-trial 0.25 \\
        --set finetune.max_seq_len=1024 --set lora.r=16
    ray job submit --working-dir . -- python -m squigglray.jobs.probe --exp first-probe --base tiny
    ray job submit --working-dir . -- python -m squigglray.jobs.probe --exp hub-probe --base <hub id> \\
        --placement probe --accelerator-type A100      # 0.25 GPU of >= 16 GB per probe, A100 nodes only

A trial's placement (squigglray.placement) is checked against the cluster before Tune starts: a
request no node can hold fails at once with the node types there are, instead of pending forever.

Writes experiments/<EXP_ID>/{probe_plan.json, summaries/<probe_id>.json, aggregated/{probe_summaries,
probe_events_candidates}.parquet + _manifest.json, probe_report.md, plots/} and, per probe,
runs/<run_id>/{adapter/, scalars.parquet} and geometry_state/<run_id>.parquet. Run it again and only
the probes without a summary of the same config hash run; widen --families or --seeds freely.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from squigglray.config import ConfigError, Seeds, load_config
from squigglray.entry import JobArgs, make_parser as make_parser_for, parse_args, run_module
from squigglray.paths import ArtifactStore
from squigglray.placement import DEFAULTS, MemoryClass, NamedPlacement, Placement, trial_placement
from squigglray.probes.config import ProbeConfig
from squigglray.schemas.probes import CONTROL_PREFIX, probe_id_for


class ProbeArgs(JobArgs):
    """What to probe: the experiment, the base checkpoint, the families and seeds, the ProbeConfig."""

    config: str | None = Field(None, description="ProbeConfig YAML, e.g. squigglray/configs/probe.yaml "
                                                 "(default: ProbeConfig's own defaults)",
                               json_schema_extra={"short": "-c"})
    exp: str = Field(..., description="experiment id (required): experiments/<EXP_ID>/ under the data dir")
    base: str = Field("tiny", description="checkpoint folder, trained preset name, or hub id")
    families: list[str] | None = Field(None, description="comma-separated families (default: every family)")
    seeds: Seeds | None = Field(None, description="comma-separated distinct probe seeds (default: 0,1)")

    @field_validator("families")
    @classmethod
    def _some_family(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("name at least one family, e.g. mod_power,crt")
        return v


class SweepOptions(BaseModel):
    """How the sweep uses the cluster; never part of the config hash.

    A trial's placement is `placement` (default: one CPU), with each flat option that is set
    (cpus/gpus_per_trial > 0, memory_class, accelerator_type, resources_per_trial) laid over it."""

    model_config = ConfigDict(extra="forbid", title="trial placement and retries")
    cpus_per_trial: float = Field(0.0, ge=0, description="0 = the placement's (one CPU by default)")
    gpus_per_trial: float = Field(0.0, ge=0, description="e.g. 0.25: four probes share a GPU")
    memory_class: MemoryClass | None = Field(None, description="minimum GPU memory of a trial's GPU, e.g. 16g")
    accelerator_type: str | None = Field(None, description="e.g. A100: trials run on those GPUs only")
    resources_per_trial: dict[str, float] = Field(default_factory=dict, description="custom resources, e.g. {'nvme': 1}")
    placement: NamedPlacement = Field(
        None, description="start from this workload's cluster default (squigglray.placement.DEFAULTS: "
                          f"{', '.join(sorted(DEFAULTS))}), e.g. probe = 0.25 GPU of >= 16g; the flags above change it")
    threads_per_trial: int = Field(0, ge=0, description="torch threads per trial; 0 = max(1, int(cpus of a trial))")
    max_concurrent: int = Field(0, ge=0, description="0 = as many as resources allow")
    max_failures: int = Field(2, ge=0, description="times a failed probe is run again")

    @model_validator(mode="after")
    def _placement_is_valid(self) -> "SweepOptions":
        self.trial_placement()
        return self

    def trial_placement(self) -> Placement:
        return trial_placement("the probe trial placement", self.placement, self.cpus_per_trial, self.gpus_per_trial,
                               self.memory_class, self.accelerator_type, self.resources_per_trial)

    def resolved(self) -> "SweepOptions":
        cpus = self.trial_placement().cpus
        return self.model_copy(update={"cpus_per_trial": cpus, "threads_per_trial": self.threads_per_trial
                                       or max(1, int(cpus))})


def grid(cfg: ProbeConfig, targets: list[str] | None = None) -> list[dict[str, Any]]:
    """(target, seed) specs: the given targets (a plan's), or the config's families and controls."""
    targets = targets or cfg.resolved_families() + [CONTROL_PREFIX + c for c in cfg.controls]
    return [{"target": t, "seed": s} for t in targets for s in cfg.seeds]


def pending(store: ArtifactStore, exp_id: str, specs: list[dict[str, Any]], config_hash: str) -> list[dict[str, Any]]:
    """Specs without a summary of this config hash. Summaries of another config outside the grid
    would mix two configs in one experiment: that is an error, not something to overwrite silently."""
    have = _summary_hashes(store, exp_id)
    wanted = {probe_id_for(p["target"], p["seed"]) for p in specs}
    stale = sorted(pid for pid, h in have.items() if h != config_hash and pid not in wanted)
    if stale:
        raise ConfigError(f"experiment {exp_id} holds probes of another config ({', '.join(stale[:5])}"
                          f"{', ...' if len(stale) > 5 else ''}); use another --exp, or include them in this sweep")
    return _without_summary(specs, have, config_hash)


def _summary_hashes(store: ArtifactStore, exp_id: str) -> dict[str, str]:
    """probe_id -> config hash of each summary the experiment holds."""
    from squigglray.probes.aggregate import read_summaries

    return {s.probe_id: s.provenance.config_hash for s in read_summaries(store, exp_id)}


def _without_summary(specs: list[dict[str, Any]], have: dict[str, str], config_hash: str) -> list[dict[str, Any]]:
    return [p for p in specs if have.get(probe_id_for(p["target"], p["seed"])) != config_hash]


def run_trials(store: ArtifactStore, plan, todo: list[dict[str, Any]], opts: SweepOptions,
               hooks: Iterable | None = None):
    """The probes as Tune trials; raises PlacementError at once when no node can hold a trial.

    Tune retries a trial that fails while it runs (FailureConfig.max_failures), but not one whose
    actor or node dies before it starts running (Tune marks it ERROR at once): probes lost that way
    are run again in a new round, at most `max_failures` rounds. A probe counts as done when its
    summary (of this config) is in the store. `hooks`: extra callbacks for each trial
    (tune_spaces.trial_hooks). Returns the last round's ResultGrid."""
    from actors.placement import check_feasible
    from squigglray.placement import to_tune_resources

    exp = plan.experiment_id
    store_uri = store.location
    placement = opts.trial_placement()
    check_feasible(placement, what=f"a probe trial of {exp}")  # before the trials' imports (torch): at once
    from tune_spaces.probe_sweep import probe_space, run_probe_trials, trial_lost
    name = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    remaining, rnd = list(todo), 0
    while True:
        space = probe_space(remaining, exp, plan.config_hash, store_uri, opts.threads_per_trial, hooks)
        result = run_probe_trials(space, to_tune_resources(placement), store.full(f"{store.experiment_dir(exp)}/tune"),
                                  name + (f"-round{rnd + 1}" if rnd else ""), max_failures=opts.max_failures,
                                  max_concurrent=opts.max_concurrent,
                                  total_steps=len(remaining) * plan.config.finetune.steps)
        errors = {Path(r.path or "").name: r.error for r in result if r.error is not None}
        remaining = _without_summary(remaining, _summary_hashes(store, exp), plan.config_hash)
        lost = [p for p in remaining if trial_lost(errors.get(probe_id_for(p["target"], p["seed"])))]
        if not remaining or len(lost) < len(remaining) or rnd >= opts.max_failures:
            break
        rnd += 1
        print(f"{len(lost)} probe(s) lost with their actor or node before they ran; running them again "
              f"(round {rnd + 1})")
    if remaining:
        raise RuntimeError(f"{len(remaining)} probe(s) failed after {opts.max_failures} retries: "
                           + "; ".join(f"{p['target']} seed {p['seed']}: "
                                       f"{errors.get(probe_id_for(p['target'], p['seed']), 'no summary written')}"
                                       for p in remaining)
                           + ". Fix the cause and run the same command again: finished probes are kept.")
    return result


def read_direction_baseline(store: ArtifactStore, baseline_id: str) -> dict[str, Any]:
    """A `probe_directions` baseline (dis.build_direction_baseline) by id; dis.score_summaries checks its
    kind and sketch. Every analysis writes its own as `directions-<EXP_ID>` for the next round."""
    rel = store.scoring_baseline(baseline_id)
    if not store.exists(rel):
        raise ConfigError(f"no scoring baseline {baseline_id!r} at {store.full(rel)}; each probe analysis writes "
                          "its family directions as directions-<EXP_ID>")
    return store.read_json(rel)


EXPANSION = {"top": 3, "neighbours_per_family": 4, "instances_per_neighbour": 8, "seed": 5_000_011}


def analyze(store: ArtifactStore, exp_id: str, baseline_id: str | None = None, top_k: int = 10) -> dict[str, Any]:
    """Score every summary (DIS), write them back, aggregate to Parquet, cluster, expand the winning
    clusters through their families' knobs (experiments/<EXP_ID>/expansion/neighbours.parquet), save the
    families' directions as scoring baseline directions-<EXP_ID> (novelty of a later round), report."""
    from squigglray.probes.aggregate import aggregate_experiment, read_summaries, write_summary
    from squigglray.probes.clusters import expand_winners, rank_clusters
    from squigglray.probes.dis import build_direction_baseline, dis_rank_stability, family_table, score_summaries
    from squigglray.report.probe_report import write_probe_report

    summaries = read_summaries(store, exp_id)
    baseline = read_direction_baseline(store, baseline_id) if baseline_id else None
    scored = score_summaries(summaries, baseline)
    for s in scored:
        write_summary(store, s)
    directions_id = f"directions-{exp_id}"
    store.write_json(store.scoring_baseline(directions_id), build_direction_baseline(scored, directions_id))
    stability = dis_rank_stability(summaries)
    clusters = rank_clusters(scored, top_k=top_k)
    table = family_table(scored)
    neighbours = expand_winners(clusters, level=scored[0].finetune.level, **EXPANSION)
    store.write_parquet(f"{store.experiment_dir(exp_id)}/expansion/neighbours.parquet", neighbours)
    expansion = {**EXPANSION, "rows": neighbours.num_rows,
                 "neighbours": sorted(set(neighbours.column("neighbour").to_pylist()))}
    manifest = aggregate_experiment(store, exp_id, extra_manifest={
        "dis_stability": stability, "top_clusters": clusters, "baseline_id": baseline_id, "expansion": expansion,
        "direction_baseline": directions_id})
    report = write_probe_report(store, exp_id, scored, table, clusters, stability, manifest)
    return {"scored": scored, "family_table": table, "clusters": clusters, "stability": stability,
            "manifest": manifest, "report": report}


def run_probe_sweep(cfg: ProbeConfig, exp_id: str, base: str, data_dir: str | None = None,
                    opts: SweepOptions | None = None, hooks: Iterable | None = None) -> dict[str, Any]:
    """hooks: extra callbacks for each probe trial (tune_spaces.trial_hooks)."""
    from squigglray.jobs.ray_runtime import ensure_ray
    from squigglray.probes.plan import build_plan, write_plan

    store = ArtifactStore(data_dir)
    opts = (opts or SweepOptions()).resolved()
    t0 = time.perf_counter()
    plan = build_plan(cfg, base, store, exp_id)
    specs = grid(cfg, list(plan.targets))
    todo = pending(store, exp_id, specs, plan.config_hash)
    write_plan(store, plan)
    seconds: dict[str, float] = {"plan": time.perf_counter() - t0}
    print(f"probe sweep {exp_id}: {len(specs)} probes, {len(specs) - len(todo)} already done, {len(todo)} to run")
    if todo:
        ensure_ray()
        t1 = time.perf_counter()
        run_trials(store, plan, todo, opts, hooks)
        seconds["probes"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    out = analyze(store, exp_id, cfg.baseline_id)
    seconds["analysis"] = time.perf_counter() - t2
    print(f"probe report: {out['report']}")
    return {"experiment_id": exp_id, "plan": plan, "ran": len(todo), "probes": len(specs), "seconds": seconds, **out}


def sweep_config(path: str | None, overrides: list[str], families: list[str] | None = None,
                 seeds: list[int] | None = None) -> ProbeConfig:
    """The ProbeConfig: the file (or the defaults), the --set overrides, then --families and --seeds."""
    extra = list(overrides)
    if families:
        extra.append(f"families={list(families)}")
    if seeds:
        extra.append(f"seeds={list(seeds)}")
    return load_config(ProbeConfig, path, extra)


def print_probe_table(rows: list[dict[str, Any]], title: str) -> None:
    """The DIS ranking: one row per family (controls dimmed)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("family", "DIS", "magnitude", "coherence", "novelty"):
        t.add_column(col, justify="left" if col == "family" else "right")
    for r in rows:
        t.add_row(r["family_id"], *(f"{r[k]:.3f}" for k in ("dis_mean", "magnitude", "coherence", "novelty")),
                  style="dim" if r["role"] == "control" else None)
    Console().print(t)


def make_parser():
    """The parser of `python -m squigglray.jobs.probe` and of `squigglray probe`."""
    return make_parser_for("squigglray probe", __doc__, ProbeArgs, SweepOptions)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, opts = parse_args(make_parser(), argv)
    cfg = sweep_config(args.config, args.overrides, args.families, args.seeds)
    out = run_probe_sweep(cfg, args.exp, args.base, args.data_dir, opts)
    print_probe_table(out["family_table"], f"DIS ranking: {args.exp} ({out['probes']} probes, {out['ran']} run now)")
    return out


if __name__ == "__main__":
    run_module(__spec__.name)
