"""Multi-seed base training as Ray Tune trials: one trial per seed, identical configs otherwise.

Each trial runs `squigglray.training.train_base`, reports every logged step to Tune, and hands its
resumable checkpoints (weights, optimizer, RNG and capture state) to Tune, so a trial that dies
resumes from its last checkpoint (`FailureConfig.max_failures`) and an interrupted experiment
continues with `Tuner.restore`. The trial's artifacts (scalars, geometry) go to the artifact store.

With `workers` > 1 in the trial config, or a streamed training set (`data.stream`: a Ray Data
pipeline, `stream_dataset`, split among the workers), the trial function launches a Ray Train `TorchTrainer`
(Train V2: the trial builds the trainer; `TuneReportCallback` passes worker 0's reports to Tune):
that many data-parallel workers (DDP; gloo on CPU) train the seed together, each on its shard of
every batch, worker 0 capturing and checkpointing; Ray Train restarts the worker group from its
last checkpoint when a worker dies (`FailureConfig.max_failures`).
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
WORKERS_KEY = "workers"  # likewise: data-parallel workers per seed, with "worker_resources" and "train_storage"
MIN_BLOCK = 128 * 1024  # smaller blocks would stay in the tasks' heaps (Ray inlines objects under 100 KiB)
STREAM_TASKS = 1  # files read and tokenized at once: one keeps the stream in order without a reorder buffer
                  # (measured: 2 MiB held at a 1 MiB budget, 2 tasks 4-5 MiB); ~1M tokens/s, above what a node trains
STREAM_TASK_CPUS = 0.25  # what each Ray Data read or tokenize task of a stream asks (squigglray.jobs.dynamics
                         # leaves DATA_CPUS of a small cluster to them)


class TuneReporter(TrainerCallback):
    """One `tune.report` per logged step; at a checkpoint step the report carries the checkpoint."""

    def __init__(self, checkpoint_every: int, run_id: str):
        self.every, self.run_id = checkpoint_every, run_id
        self.held: dict[str, Any] | None = None

    def report(self, metrics: dict[str, Any], folder: str | None = None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)

    def on_log(self, state, row):
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))} | {"run_id": self.run_id}
        if self.every and state.step % self.every == 0 and state.step < state.max_steps:
            self.held = metrics  # reported with the checkpoint, right after this step's on_log
        else:
            self.report(metrics)

    def sink(self, folder: str | None, state) -> None:
        metrics = self.held or {"step": state.step, "run_id": self.run_id}
        self.held = None
        self.report(metrics, folder)


class TrainReporter(TuneReporter):
    """TuneReporter inside a Ray Train worker: every worker reports each logged step (Train V2 takes
    as many reports from each), worker 0's with the checkpoint at checkpoint steps (`sink` gets no
    folder on the others)."""

    def report(self, metrics: dict[str, Any], folder: str | None = None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)


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
    if WORKERS_KEY in config:
        _data_parallel_trial(config)
    else:
        _train_seed(config, TuneReporter, tune.get_checkpoint())


def _train_seed(config: dict[str, Any], reporter_type: type[TuneReporter], checkpoint, rank: int = 0,
                world: int = 1, stream_epoch=None) -> None:
    """Train the trial's seed (or, `rank` of `world`, one data-parallel worker's share of it),
    resuming from `checkpoint`; worker 0 alone runs the trial hooks."""
    import torch
    from transformers.utils import logging as hf_logging

    from squigglray.paths import ArtifactStore
    from squigglray.training import run_id_for, train_base

    torch.set_num_threads(int(config.get("threads", 1)))
    hf_logging.disable_progress_bar()  # Tune's status table is the progress display of a trial
    cfg = trial_config(config)
    store = ArtifactStore(config["store"])
    rid = run_id_for(cfg)
    reporter = reporter_type(cfg.train.checkpoint_every, rid)
    hooks = trial_callbacks(config, Trial("seed", store, run_id=rid)) if rank == 0 else []
    with checkpoint.as_directory() if checkpoint else nullcontext(None) as resume:
        rec = train_base(cfg, store, callbacks=[reporter, *hooks], progress=False, resume_from=resume,
                         checkpoint_sink=reporter.sink, rank=rank, world=world, stream_epoch=stream_epoch)
    done = {"step": cfg.train.steps, "run_id": rid, "done_training": 1}
    reporter.report(done | ({"final_loss": rec.final_loss} if rec else {}))  # workers other than 0: no record


def stream_dataset(cfg: BaseTrainConfig, store_uri: str):
    """The seed's training stream (squigglray/data/stream.py) as a Ray Data pipeline: the files in
    the seed's order, each read and tokenized by a small task (`TokenizeFiles`) beside the training
    workers, yielding blocks of about 1/16 of `data.stream_memory_mb` (at least MIN_BLOCK). Returns
    the dataset and the DataConfig that keeps it in order (so resumes replay it exactly) and within
    its memory budget."""
    import ray.data
    import ray.train
    from ray.data import DataContext, ExecutionOptions, ExecutionResources

    from squigglray.data.stream import TokenizeFiles
    from squigglray.paths import ArtifactStore
    from squigglray.training.base import tokenizer_for
    from squigglray.training.data import build_pool
    from squigglray.training.stream import stream_tokenizer

    store = ArtifactStore(store_uri)
    pool = build_pool(cfg, store)
    tokenize = stream_tokenizer(cfg, pool.source, tokenizer_for(cfg, pool, store))
    budget = cfg.data.stream_memory_mb * 2**20
    DataContext.get_current().target_max_block_size = max(budget // 16, MIN_BLOCK)
    files = pool.source.files_for(cfg.seed)
    ds = ray.data.from_items([{"file": f} for f in files], override_num_blocks=len(files)).map_batches(
        TokenizeFiles(pool.source, tokenize), batch_size=1, batch_format="pyarrow", num_cpus=STREAM_TASK_CPUS,
        concurrency=STREAM_TASKS)
    options = ExecutionOptions(preserve_order=True, resource_limits=ExecutionResources(object_store_memory=budget))
    return ds, ray.train.DataConfig(execution_options=options, enable_shard_locality=False)


def _data_parallel_trial(config: dict[str, Any]) -> None:
    """The seed trial as a Ray Train run of `config["workers"]` workers (`train_worker`), fed
    `stream_dataset` with `data.stream`."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = {k.upper() if k in ("cpu", "gpu") else k: v for k, v in config["worker_resources"].items() if v}
    cfg = trial_config(config)
    data = {}
    if cfg.data.stream:
        ds, data_config = stream_dataset(cfg, config["store"])
        data = {"datasets": {"train": ds}, "dataset_config": data_config}
    trainer = TorchTrainer(
        train_worker, train_loop_config=config, **data,
        scaling_config=ray.train.ScalingConfig(num_workers=int(config[WORKERS_KEY]), use_gpu=bool(resources.get("GPU")),
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(name=f"seed_{config['seed']}", storage_path=config["train_storage"],
                                       callbacks=[TuneReportCallback()],
                                       failure_config=ray.train.FailureConfig(max_failures=int(config["max_failures"]))),
    )
    trainer.fit()


def train_worker(config: dict[str, Any]) -> None:
    """One data-parallel worker of a seed (Ray Train's train_loop_per_worker): `train_base` on its
    shard; worker 0 alone runs the trial hooks and writes the run's artifacts."""
    import ray.train

    ctx = ray.train.get_context()
    shard = ray.train.get_dataset_shard("train") if trial_config(config).data.stream else None
    epoch = (lambda: shard.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)) if shard else None
    _train_seed(config, TrainReporter, ray.train.get_checkpoint(), ctx.get_world_rank(), ctx.get_world_size(), epoch)


def seed_space(train_json: dict[str, Any], seeds: list[int], store_uri: str, threads: int,
               hooks: Iterable[TrialHook] | None = None, schedule_jitter: float = 0.0, workers: int = 1,
               worker_resources: dict[str, float] | None = None, train_storage: str = "",
               max_failures: int = 2) -> dict[str, Any]:
    """hooks: extra callbacks for each trial (tune_spaces.trial_hooks). workers > 1: each seed is a
    Ray Train run of that many workers, each asking `worker_resources`, its state under
    `train_storage`, restarted up to `max_failures` times."""
    space = with_hooks({"train": train_json, "seed": tune.grid_search(list(seeds)), "store": store_uri,
                        "threads": threads}, hooks)
    if schedule_jitter:
        space[JITTER_KEY] = schedule_jitter
    if workers > 1 or train_json.get("data", {}).get("stream"):
        space.update({WORKERS_KEY: workers, "worker_resources": dict(worker_resources or {}),
                      "train_storage": train_storage, "max_failures": max_failures})
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
