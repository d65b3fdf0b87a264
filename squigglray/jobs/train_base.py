"""Train the base model from scratch on the family mixture, as a Ray task on the local or given cluster,
unless a run of the same config is already there; prints the run record as JSON.

    squigglray train-base --set model.preset=nano --set train.steps=50
    python -m squigglray.jobs.train_base --smoke
    ray job submit --working-dir . -- python -m squigglray.jobs.train_base --config examples/quickstart.yaml

Writes runs/<run_id>/ (run.json, scalars.parquet, checkpoints/final, ...) under the data dir and
points the model preset at it (models/<preset>.json): `--model <preset>` of the solver loads it.
"""

from __future__ import annotations

import ray

from squigglray.entry import TrainJobArgs, make_parser as make_parser_for, parse_args, run_module
from squigglray.paths import ArtifactStore
from squigglray.schemas import RunRecord
from squigglray.training import BaseTrainConfig, find_reusable
from squigglray.training.data import Pool


def train_or_reuse(cfg: BaseTrainConfig, store: ArtifactStore, reuse: bool = True, log=print,
                   pool: Pool | None = None) -> tuple[RunRecord, bool]:
    """Train as a Ray task using every CPU of the (local) cluster, unless this config already ran."""
    from actors.base_model import train_base_task
    from squigglray.jobs.ray_runtime import cluster_cpus
    from squigglray.training.base import publish

    if reuse and (rec := find_reusable(cfg, store, pool.slice_hash if pool else None)):
        log(f"reusing run {rec.provenance.run_id} (config hash {rec.provenance.config_hash[:10]} matches)")
        publish(store, cfg.model.preset, rec.provenance.run_id)
        return rec, True
    cpus = cluster_cpus()
    threads = cfg.train.threads or cpus
    task = train_base_task.options(num_cpus=min(threads, cpus))
    rec = RunRecord.model_validate(ray.get(task.remote(cfg.model_dump(mode="json"), store.uri, threads)))
    return rec, False


def make_parser():
    """The parser of `python -m squigglray.jobs.train_base` and of `squigglray train-base`."""
    return make_parser_for("squigglray train-base", __doc__, TrainJobArgs)


def main(argv: list[str] | None = None) -> RunRecord:
    from rich.console import Console

    from squigglray.jobs.ray_runtime import ensure_ray

    (job,) = parse_args(make_parser(), argv)
    cfg = job.train_config()
    ensure_ray()
    rec, _ = train_or_reuse(cfg, ArtifactStore(job.data_dir), not job.no_reuse)
    Console().print_json(rec.to_json())
    return rec


if __name__ == "__main__":
    run_module(__spec__.name)
