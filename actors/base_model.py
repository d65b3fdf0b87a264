"""Ray tasks for base-model training and held-out evaluation; domain code does the work."""

from __future__ import annotations

from typing import Any

import ray


@ray.remote(num_cpus=1)
def train_base_task(cfg_json: dict[str, Any], store_uri: str, threads: int) -> dict[str, Any]:
    """Train in a worker; the progress bar renders in the driver through ray's tqdm_ray."""
    import torch
    from ray.experimental.tqdm_ray import tqdm

    from squigglray.paths import ArtifactStore
    from squigglray.training import BaseTrainConfig, train_base

    torch.set_num_threads(threads)
    cfg = BaseTrainConfig.model_validate(cfg_json)
    return train_base(cfg, ArtifactStore(store_uri), progress_factory=tqdm).model_dump(mode="json", by_alias=True)


@ray.remote(num_cpus=1)
def eval_shard_task(checkpoint: str, items_json: list[dict[str, Any]], max_new_tokens: int, timeout_s: float,
                    batch_size: int) -> list[dict[str, Any]]:
    """Greedy tool-integrated evaluation of one shard of held-out instances."""
    import torch

    from squigglray.eval.heldout import evaluate_heldout
    from squigglray.models import load_model
    from squigglray.schemas import ProblemInstance

    torch.set_num_threads(1)
    model, tokenizer = load_model(checkpoint)
    items = [(d["level"], ProblemInstance.model_validate(d["instance"])) for d in items_json]
    return evaluate_heldout(model, tokenizer, items, max_new_tokens, timeout_s, batch_size)
