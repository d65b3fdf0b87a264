"""Train CLModel on the project's families and write its milestones report.

    squigglray clmodel train [--config squigglray/configs/clmodel.yaml] [--set train.joint_steps=100]
    ray job submit --working-dir . -- python -m squigglray.jobs.clmodel train --num-cpus 4

The run is a Ray task (on a cluster it lands on any node with the CPUs/GPUs asked for); `--local`
runs it in this process instead. Artifacts: runs/clmodel-<name>-<hash>/ (see squigglray.clmodel.run).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from squigglray.clmodel.config import ClmodelRunConfig, run_id
from squigglray.config import load_config, packaged_config
from squigglray.entry import JobArgs, make_command_parser, parse_command, run_module
from squigglray.paths import ArtifactStore

PACKAGED_CONFIG = "clmodel"


class ClmodelTrainOptions(BaseModel):
    """Where the training runs; not part of the run's config (nor its id)."""

    model_config = ConfigDict(extra="forbid", title="where it runs")
    local: bool = Field(False, description="train in this process instead of a Ray task")
    num_cpus: int = Field(2, ge=0, description="CPUs of the Ray task")
    num_gpus: float = Field(0, ge=0, description="GPUs of the Ray task")


def train_job(cfg: ClmodelRunConfig, data_dir: str | None = None, local: bool = False, num_cpus: int = 2,
              num_gpus: float = 0, log: Callable[[str], None] = functools.partial(print, flush=True)) -> dict[str, Any]:
    """log flushes: under `ray job submit` stdout is a file, and `ray job logs --follow` should see lines live."""
    store = ArtifactStore(data_dir)
    if local:
        from squigglray.clmodel.run import run_training  # torch: imported by the run, not by --help

        out = run_training(cfg, store.location, log=log)
    else:
        import ray

        from actors.clmodel_train import clmodel_train_task
        from squigglray.jobs.ray_runtime import ensure_ray

        ensure_ray()
        log(f"{run_id(cfg)}: training in a Ray task ({num_cpus} CPU, {num_gpus} GPU)")
        task = clmodel_train_task.options(num_cpus=num_cpus, num_gpus=num_gpus)
        out = ray.get(task.remote(cfg.model_dump(mode="json"), store.location, max(1, num_cpus)))
    log(f"report: {store.full(store.run_report(out['run_id']))}")
    return out


COMMANDS = {
    "train": ("Staged training on the project's families (op traces from step_type labels), then the milestones: "
              "accuracy, quantizer health, routing, tool-call rate, latency.", [JobArgs, ClmodelTrainOptions]),
}


def make_parser():
    """The parser of `python -m squigglray.jobs.clmodel` and of `squigglray clmodel`."""
    return make_command_parser("squigglray clmodel", __doc__, COMMANDS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    _, (job, opts) = parse_command(make_parser(), argv)
    cfg = load_config(ClmodelRunConfig, job.config or packaged_config(PACKAGED_CONFIG), job.overrides)
    return train_job(cfg, job.data_dir, opts.local, opts.num_cpus, opts.num_gpus)


if __name__ == "__main__":
    run_module(__spec__.name)
