"""Ray task for a CLModel training run; squigglray.clmodel.run does the work."""

from __future__ import annotations

from typing import Any

import ray


@ray.remote(num_cpus=1)
def clmodel_train_task(cfg_json: dict[str, Any], store_uri: str, threads: int) -> dict[str, Any]:
    import torch

    from squigglray.clmodel.run import ClmodelRunConfig, run_training

    torch.set_num_threads(threads)
    out = run_training(ClmodelRunConfig.model_validate(cfg_json), store_uri, progress=False)
    return {k: out[k] for k in ("run_id", "seed", "dataset_slice_hash", "config_hash", "version", "eval")}
