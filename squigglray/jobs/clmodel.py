"""Train CLModel on the project's families and write its milestones report.

    squigglray clmodel train [--config squigglray/configs/clmodel.yaml] [--set train.joint_steps=100]
    ray job submit --working-dir . -- python -m squigglray.jobs.clmodel train --num-cpus 4

The run is a Ray task (on a cluster it lands on any node with the CPUs/GPUs asked for); `--local`
runs it in this process instead. Artifacts: runs/clmodel-<name>-<hash>/ (see squigglray.clmodel.run).
"""

from __future__ import annotations

import argparse
import functools
from typing import Any, Callable

from squigglray.clmodel.run import ClmodelRunConfig, run_id, run_training
from squigglray.paths import ArtifactStore


def train_job(cfg: ClmodelRunConfig, data_dir: str | None = None, local: bool = False, num_cpus: int = 2,
              num_gpus: float = 0, log: Callable[[str], None] = functools.partial(print, flush=True)) -> dict[str, Any]:
    """log flushes: under `ray job submit` stdout is a file, and `ray job logs --follow` should see lines live."""
    store = ArtifactStore(data_dir)
    if local:
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


def main(argv: list[str] | None = None) -> None:
    from squigglray.config import load_config
    from squigglray.config import packaged_config

    ap = argparse.ArgumentParser(prog="python -m squigglray.jobs.clmodel")
    ap.add_argument("command", choices=["train"])
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--local", action="store_true", help="train in this process, without Ray")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--num-gpus", type=float, default=0)
    a = ap.parse_args(argv)
    cfg = load_config(ClmodelRunConfig, a.config or packaged_config("clmodel"), a.overrides)
    train_job(cfg, a.data_dir, a.local, a.num_cpus, a.num_gpus)


if __name__ == "__main__":
    main()
