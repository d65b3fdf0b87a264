"""Squiggle dynamics experiment: N seeds of one training config as Ray Tune trials with geometry
capture and probes, then change-point events per run, seed invariance, the probe/loss correlation
tests and the reports (seed 000 §4-§6).

    python -m squigglray.jobs.dynamics --smoke --seeds 0,1,2        # nano model, a few minutes on a CPU
    squigglray dynamics --seeds 0,1,2 --set train.steps=700          # the tiny model
    ray job submit --working-dir . -- python -m squigglray.jobs.dynamics --seeds 0,1,2 --gpus-per-trial 1

Writes, under the data dir: runs/<run_id>/... per seed (scalars with probe columns, geometry,
checkpoints, reports/report.md), geometry_state/<run_id>.parquet, events_candidates/<run_id>.parquet,
experiments/<EXP_ID>/{tune/, event_families.parquet, correlation.json, report.md, plots/*.png}.
Run it again and the experiment continues where it stopped (Tuner.restore); finished trials are kept.
"""

from __future__ import annotations

import math
import shutil
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from squigglray.config import ConfigError, Seeds, config_hash
from squigglray.entry import TrainJobArgs, make_parser as make_parser_for, parse_args, run_module
from squigglray.paths import ArtifactStore
from squigglray.placement import MemoryClass, Placement, trial_placement
from squigglray.training import BaseTrainConfig, run_id_for
from squigglray.training.schedule import seed_config


DRIVER_CPUS = 0.01  # a seed trial that drives Ray Train workers (workers_per_trial > 1) asks only this
DATA_CPUS = 0.5  # left to a streamed experiment's Ray Data tasks when the seeds share the cluster's CPUs


class DynamicsOptions(BaseModel):
    """Experiment-level settings; they never change a run's config hash or run id, except
    schedule_jitter, which changes what each seed trains (seed_config)."""

    model_config = ConfigDict(extra="forbid", title="experiment options")
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2],
                         description="comma-separated distinct seeds, one Ray Tune trial each")
    cpus_per_trial: float = Field(0.0, ge=0, description="0 = the cluster's CPUs shared evenly by the seeds")
    gpus_per_trial: float = Field(0.0, ge=0, description="e.g. 1 on a GPU cluster")
    memory_class: MemoryClass | None = Field(None, description="minimum GPU memory of a trial's GPU: 16g, 32g, 40g or 80g")
    accelerator_type: str | None = Field(None, description="e.g. A100: trials run on those GPUs only")
    resources_per_trial: dict[str, float] = Field(default_factory=dict, description="custom resources, e.g. {'nvme': 1}")
    threads_per_trial: int = Field(0, ge=0, description="torch threads per trial; 0 = max(1, int(cpus_per_trial))")
    workers_per_trial: int = Field(1, ge=1, description="data-parallel Ray Train workers per seed (DDP; gloo on "
                                                        "CPU): each asks the trial placement and trains a shard of "
                                                        "every batch; the loss curve stays that of one worker")
    max_concurrent: int = Field(0, ge=0, description="0 = as many as resources allow")
    max_failures: int = Field(2, ge=0, description="times a killed trial is resumed from its checkpoint")
    checkpoint_every: int = Field(0, ge=0, description="0 = about 4 checkpoints per run")
    detector: str = Field("ruptures", pattern="^(ruptures|regression)$",
                          description="change-point method: events.ruptures_backend or events.changepoints")
    align: str = Field("log_step", pattern="^(log_step|step_frac|loss)$",
                       description="time axis on which seeds are matched: log_step, step_frac or loss")
    tolerance: float = Field(0.05, gt=0, lt=1, description="seed-matching tolerance in aligned time")
    n_perm: int = Field(500, ge=10, description="permutations of each null")
    schedule_jitter: float = Field(
        0.0, ge=0, lt=0.5,
        description="0 = all seeds share the schedule; f > 0 moves each seed's warmup end and curriculum switches "
                    "by a seeded factor in [1 - f, 1 + f], so events that follow the schedule move with it")

    @model_validator(mode="after")
    def _placement_is_valid(self) -> "DynamicsOptions":
        self.trial_placement()
        return self

    def trial_placement(self) -> Placement:
        """What one seed trial asks of a node (squigglray.placement): its CPUs, GPUs, memory class, GPU type."""
        # base: no CPUs, so an unset cpus_per_trial stays 0 until resolved() shares out the cluster's
        return trial_placement("the seed trial placement", Placement(cpus=0), self.cpus_per_trial,
                               self.gpus_per_trial, self.memory_class, self.accelerator_type, self.resources_per_trial)

    def resolved(self, cluster_cpus: int, streamed: bool = False) -> "DynamicsOptions":
        """cpus_per_trial 0 -> an even share of the cluster (2 cores, 3 seeds: all three at once,
        one thread each, which trains faster in total than one 2-thread trial after another), less
        DATA_CPUS for a streamed experiment's Ray Data tasks."""
        drivers = DRIVER_CPUS * len(self.seeds) if self.workers_per_trial > 1 or streamed else 0.0
        share = len(self.seeds) * self.workers_per_trial
        free = cluster_cpus - drivers - (DATA_CPUS if streamed else 0.0)
        cpus = self.cpus_per_trial or math.floor(1000 * free / share) / 1000  # 3 x 0.666 fits 2
        threads = self.threads_per_trial or max(1, int(cpus))
        return self.model_copy(update={"cpus_per_trial": cpus, "threads_per_trial": threads})


def experiment_id(cfg: BaseTrainConfig, seeds: list[int], slice_hash: str, schedule_jitter: float = 0.0) -> str:
    """Named for the config without its seed, the seed list and the training data: a change to a
    family's code changes the data but not the config, and must not find the old experiment. The
    schedule jitter is named only when set, so the ids of experiments without it stay the same."""
    key = {"train": cfg.model_dump(mode="json") | {"seed": None}, "seeds": sorted(seeds), "slice": slice_hash}
    h = config_hash(key | ({"schedule_jitter": schedule_jitter} if schedule_jitter else {}))
    return f"dyn-{cfg.name}-{cfg.model.preset}-{h[:10]}"


def with_checkpoints(cfg: BaseTrainConfig, opts: DynamicsOptions) -> BaseTrainConfig:
    every = opts.checkpoint_every or cfg.train.checkpoint_every or max(1, cfg.train.steps // 4)
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"checkpoint_every": every})})


def train_seeds(cfg: BaseTrainConfig, opts: DynamicsOptions, store: ArtifactStore, exp_id: str,
                reuse: bool = True, hooks=None) -> dict[int, str]:
    """Run (or continue) the Tune experiment; returns seed -> run_id. Raises if a trial failed for good.
    hooks: extra callbacks for each seed trial (tune_spaces.trial_hooks)."""
    from squigglray.placement import to_tune_resources
    from tune_spaces.dynamics import run_seed_trials, seed_space

    storage = store.full(f"{store.experiment_dir(exp_id)}/tune")
    if not reuse and store.is_local:  # the Tune experiment and its trials' Ray Train runs
        for name in (exp_id, f"{exp_id}-train"):
            shutil.rmtree(f"{storage}/{name}", ignore_errors=True)
    store_uri = store.location
    resources = to_tune_resources(opts.trial_placement())
    space = seed_space(cfg.model_dump(mode="json"), opts.seeds, store_uri, opts.threads_per_trial, hooks,
                       opts.schedule_jitter, opts.workers_per_trial, resources, f"{storage}/{exp_id}-train",
                       opts.max_failures)
    if opts.workers_per_trial > 1 or cfg.data.stream:  # the trial function only drives its Ray Train workers
        resources = {"cpu": DRIVER_CPUS}
    grid = run_seed_trials(space, resources, storage, exp_id,
                           max_failures=opts.max_failures, max_concurrent=opts.max_concurrent,
                           total_steps=cfg.train.steps * len(opts.seeds))
    failed = [(r.config.get("seed"), r.error) for r in grid if r.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} seed trial(s) failed after {opts.max_failures} retries: "
                           + "; ".join(f"seed {s}: {e}" for s, e in failed)
                           + ". Fix the cause and run the same command again to continue from the checkpoints.")
    return {s: run_id_for(seed_config(cfg, s, opts.schedule_jitter)) for s in opts.seeds}


def run_dynamics(cfg: BaseTrainConfig, opts: DynamicsOptions | None = None, data_dir: str | None = None,
                 reuse: bool = True, hooks=None, slice_hash: str | None = None) -> dict[str, Any]:
    """slice_hash: the training pool's hash when the caller has built the pool already.
    hooks: extra callbacks for each seed trial (tune_spaces.trial_hooks; the tests' fault drill)."""
    from actors.placement import check_feasible
    from squigglray.jobs.dynamics_analysis import analyze_experiment
    from squigglray.jobs.ray_runtime import cluster_cpus, ensure_ray
    from squigglray.training.base import publish
    from squigglray.training.data import build_pool
    from squigglray.training.stream import rows_per_step

    opts = opts or DynamicsOptions()
    if not (cfg.geometry.enabled and cfg.probes.enabled):
        raise ConfigError("the dynamics experiment needs geometry.enabled and probes.enabled")
    cfg = with_checkpoints(cfg, opts)
    store = ArtifactStore(data_dir)
    ensure_ray()
    opts = opts.resolved(cluster_cpus(), cfg.data.stream)
    if cfg.data.stream:
        rows_per_step(cfg, opts.workers_per_trial)
    check_feasible(opts.trial_placement(), what=f"a seed trial of the {cfg.name} experiment")  # before any work
    if cfg.data.slice:  # probes from its held-out splits: a slice without them fails here, not in a trial
        from squigglray.eval.probes import probe_instances

        probe_instances(cfg, set(), store)
    exp_id = experiment_id(cfg, opts.seeds, slice_hash or build_pool(cfg, store).slice_hash, opts.schedule_jitter)
    t0 = time.perf_counter()
    runs = train_seeds(cfg, opts, store, exp_id, reuse, hooks)
    seconds = {"train": time.perf_counter() - t0}
    t1 = time.perf_counter()
    analysis = analyze_experiment(store, exp_id, cfg, runs, opts, reuse=reuse)
    seconds["analysis"] = time.perf_counter() - t1
    publish(store, cfg.model.preset, runs[opts.seeds[0]])  # the first seed's checkpoint serves the solver
    print(f"experiment report: {store.full(store.experiment_dir(exp_id))}/report.md")
    return {"experiment_id": exp_id, "runs": runs, "config": cfg, "options": opts, "seconds": seconds, **analysis}


def make_parser():
    """The parser of `python -m squigglray.jobs.dynamics` and of `squigglray dynamics`."""
    return make_parser_for("squigglray dynamics", __doc__, TrainJobArgs, DynamicsOptions)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    job, opts = parse_args(make_parser(), argv)
    cfg = job.train_config()
    out = run_dynamics(cfg, opts, job.data_dir, reuse=not job.no_reuse)
    h1 = out["h1"]
    print(f"{len(out['runs'])} runs, {out['families'].num_rows} event families; H1: {h1['observed']} events "
          f"matched across seeds (null mean {h1['null_mean']:.1f}, p={h1['p_value']:.3f})")
    return out


if __name__ == "__main__":
    run_module(__spec__.name)
