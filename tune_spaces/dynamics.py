"""Multi-seed base training as Ray Tune trials: one trial per seed, identical configs otherwise.

Each trial runs `squigglray.training.train_base`, reports every logged step to Tune, and hands its
resumable checkpoints (weights, optimizer, RNG and capture state) to Tune, so a trial that dies
resumes from its last checkpoint (`FailureConfig.max_failures`) and an interrupted experiment
continues with `Tuner.restore`. The trial's artifacts (scalars, geometry) go to the artifact store.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Iterable

from ray import tune
from tune_spaces.metrics import SweepMetrics
from tune_spaces.progress import callbacks_for, tune_verbosity
from tune_spaces.trial_hooks import Trial, TrialHook, trial_callbacks, with_hooks

from squigglray.training.callbacks import TrainerCallback

if TYPE_CHECKING:
    from squigglray.training import BaseTrainConfig

JITTER_KEY = "schedule_jitter"  # in the space only when set: the param spaces of existing experiments stay the same


class TuneReporter(TrainerCallback):
    """One `tune.report` per logged step; at a checkpoint step the report carries the checkpoint."""

    def __init__(self, checkpoint_every: int, run_id: str):
        self.every, self.run_id = checkpoint_every, run_id
        self.held: dict[str, Any] | None = None

    def on_log(self, state, row):
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))} | {"run_id": self.run_id}
        if self.every and state.step % self.every == 0 and state.step < state.max_steps:
            self.held = metrics  # reported with the checkpoint, right after this step's on_log
        else:
            tune.report(metrics)

    def sink(self, folder: str, state) -> None:
        metrics = self.held or {"step": state.step, "run_id": self.run_id}
        self.held = None
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def trial_config(config: dict[str, Any]) -> BaseTrainConfig:
    """The BaseTrainConfig a seed trial trains: the shared config made that seed's by
    `squigglray.training.schedule.seed_config`, the function that names the run ids the experiment returns."""
    from squigglray.training import BaseTrainConfig
    from squigglray.training.schedule import seed_config

    return seed_config(BaseTrainConfig.model_validate(config["train"]), int(config["seed"]),
                       float(config.get(JITTER_KEY, 0.0)))


def seed_trial(config: dict[str, Any]) -> None:
    """Tune function trainable. config: train (BaseTrainConfig JSON), seed, store (URI), threads,
    schedule_jitter when the experiment desynchronizes the seeds' schedules, and the caller's trial
    hooks when it gave some."""
    import torch
    from transformers.utils import logging as hf_logging

    from squigglray.paths import ArtifactStore
    from squigglray.training import run_id_for, train_base

    torch.set_num_threads(int(config.get("threads", 1)))
    hf_logging.disable_progress_bar()  # Tune's status table is the progress display of a trial
    cfg = trial_config(config)
    store = ArtifactStore(config["store"])
    rid = run_id_for(cfg)
    reporter = TuneReporter(cfg.train.checkpoint_every, rid)
    callbacks: list[TrainerCallback] = [reporter, *trial_callbacks(config, Trial("seed", store, run_id=rid))]
    checkpoint = tune.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else nullcontext(None) as resume:
        rec = train_base(cfg, store, callbacks=callbacks, progress=False, resume_from=resume,
                         checkpoint_sink=reporter.sink)
    tune.report({"step": rec.steps, "final_loss": rec.final_loss, "run_id": rid, "done_training": 1})


def seed_space(train_json: dict[str, Any], seeds: list[int], store_uri: str, threads: int,
               hooks: Iterable[TrialHook] | None = None, schedule_jitter: float = 0.0) -> dict[str, Any]:
    """hooks: extra callbacks for each trial (tune_spaces.trial_hooks)."""
    space = with_hooks({"train": train_json, "seed": tune.grid_search(list(seeds)), "store": store_uri,
                        "threads": threads}, hooks)
    if schedule_jitter:
        space[JITTER_KEY] = schedule_jitter
    return space


def run_seed_trials(space: dict[str, Any], resources: dict[str, float], storage_path: str, name: str,
                    max_failures: int = 2, max_concurrent: int = 0, total_steps: int = 0) -> tune.ResultGrid:
    """Start the experiment, or continue it (`Tuner.restore`) when `storage_path/name` holds one.
    Quiet unless SQUIGGLRAY_VERBOSE: one progress bar over `total_steps` (tune_spaces.progress)."""
    trainable = tune.with_resources(seed_trial, resources)
    path = f"{storage_path.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or None,
                                        trial_dirname_creator=lambda t: f"seed_{t.config['seed']}"),
            run_config=tune.RunConfig(
                name=name, storage_path=storage_path, verbose=tune_verbosity(),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[SweepMetrics("dynamics"), *callbacks_for("seed trials", total_steps)],
            ),
        )
    return tuner.fit()
