"""Probe sweeps as Ray Tune trials: one trial per (target, seed) of the family x seed grid.

A trial reads the sweep's plan from the artifact store, runs `squigglray.probes.adapter.LoraProbeAdapter`,
reports every training step to Tune and writes its summary atomically to
`experiments/<EXP_ID>/summaries/<probe_id>.json`. Probes are short, so a failed trial is simply run
again (`FailureConfig.max_failures`); actors are reused between trials, so torch, transformers and
peft load once per worker, not once per probe.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from ray import tune
from tune_spaces.metrics import SweepMetrics

from squigglray.schemas.probes import probe_id_for
from squigglray.training.callbacks import TrainerCallback
from tune_spaces.progress import callbacks_for, tune_verbosity
from tune_spaces.trial_hooks import Trial, TrialHook, trial_callbacks, with_hooks

_PLANS: dict[tuple[str, str], Any] = {}  # (store, experiment) -> plan, per worker process


class StepReporter(TrainerCallback):
    def __init__(self, probe_id: str):
        self.probe_id = probe_id

    def on_log(self, state, row):
        tune.report({"step": state.step, "loss": row["loss"], "probe_id": self.probe_id})


def _plan(store, experiment_id: str, plan_hash: str):
    from squigglray.probes.plan import read_plan

    key = (store.uri, experiment_id)
    plan = _PLANS.get(key)
    if plan is None or plan.config_hash != plan_hash:  # a new sweep of the experiment rewrote its plan
        plan = _PLANS[key] = read_plan(store, experiment_id)
    return plan


def probe_trial(config: dict[str, Any]) -> None:
    """Tune function trainable. config: probe {target, seed}, experiment, plan_hash, store (URI), threads,
    and the caller's trial hooks when it gave some."""
    import torch
    from transformers.utils import logging as hf_logging

    from squigglray.paths import ArtifactStore
    from squigglray.probes.adapter import LoraProbeAdapter, ProbeJob
    from squigglray.probes.aggregate import write_summary

    torch.set_num_threads(int(config.get("threads", 1)))
    hf_logging.disable_progress_bar()
    store = ArtifactStore(config["store"])
    plan = _plan(store, config["experiment"], config["plan_hash"])
    if plan.config_hash != config["plan_hash"]:
        raise RuntimeError(f"the plan of {config['experiment']} changed under the sweep "
                           f"({plan.config_hash[:10]} != {config['plan_hash'][:10]})")
    job = ProbeJob(plan, config["probe"]["target"], int(config["probe"]["seed"]))
    trial = Trial("probe", store, experiment=config["experiment"], probe_id=job.probe_id)
    job.callbacks = (StepReporter(job.probe_id), *trial_callbacks(config, trial))
    t0 = time.perf_counter()
    summary = LoraProbeAdapter().run(job, store)
    write_summary(store, summary)
    tune.report({"probe_id": job.probe_id, "done": 1, "param_change": summary.geometry.param_change,
                 "repr_change": summary.geometry.repr_change, "step_coherence": summary.geometry.step_coherence,
                 "train_loss_last": summary.metrics.train_loss_last, "probe_seconds": time.perf_counter() - t0})


def trial_lost(error: BaseException | None) -> bool:
    """A trial error that says nothing about the trial's work: its actor or its node died. Tune retries
    those while the trial runs, but marks a trial ERROR at once when it dies before it starts running
    (e.g. its node is removed while the trial's actor starts), so the jobs run such trials again."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(error, RayTaskError):
        error = error.as_instanceof_cause()
    return isinstance(error, RayActorError)


def probe_space(specs: list[dict[str, Any]], experiment_id: str, plan_hash: str, store_uri: str, threads: int,
                hooks: Iterable[TrialHook] | None = None) -> dict[str, Any]:
    """hooks: extra callbacks for each trial (tune_spaces.trial_hooks)."""
    return with_hooks({"probe": tune.grid_search(specs), "experiment": experiment_id, "plan_hash": plan_hash,
                       "store": store_uri, "threads": threads}, hooks)


def run_probe_trials(space: dict[str, Any], resources: dict[str, float], storage_path: str, name: str,
                     max_failures: int = 2, max_concurrent: int = 0, total_steps: int = 0) -> tune.ResultGrid:
    """Quiet unless SQUIGGLRAY_VERBOSE: one progress bar over `total_steps` (tune_spaces.progress)."""
    def dirname(trial) -> str:  # = the probe id, the name of its summary: squigglray.jobs.probe reads errors by it
        p = trial.config["probe"]
        return probe_id_for(p["target"], p["seed"])

    tuner = tune.Tuner(
        tune.with_resources(probe_trial, resources), param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or None, reuse_actors=True,
                                    trial_dirname_creator=dirname),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=tune_verbosity(),
                                  failure_config=tune.FailureConfig(max_failures=max_failures),
                                  callbacks=[SweepMetrics("probe"), *callbacks_for("probes", total_steps)]),
    )
    return tuner.fit()
