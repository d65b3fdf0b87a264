"""One worker of a 2-process gloo group for tests/test_fsdp.py (torch.multiprocessing spawns it by
reference: this module is on the children's path as it is on the test's)."""

from __future__ import annotations

import os


def train_worker(rank: int, world: int, port: int, cfg_json: str, store_uri: str, resume_from: str | None) -> None:
    import torch
    import torch.distributed as dist

    from squigglray.paths import ArtifactStore
    from squigglray.training import BaseTrainConfig, train_base

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train_base(BaseTrainConfig.model_validate_json(cfg_json), ArtifactStore(store_uri), progress=False,
                   resume_from=resume_from, rank=rank, world=world)
    finally:
        dist.destroy_process_group()
