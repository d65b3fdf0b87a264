"""From-scratch causal-LM training with a curriculum, a cadence, callbacks and Parquet scalars.

Names resolve on first use (PEP 562), so a process that only reads configs (`squigglray dynamics
--help`, a Ray Train controller, a job driver validating its config) does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOME = {
    "BaseTrainConfig": "config", "run_id_for": "config", "find_reusable": "data", "train_base": "base",
    "TrainerCallback": "callbacks", "TrainState": "callbacks", "Trainer": "trainer",
}
__all__ = sorted(_HOME)

if TYPE_CHECKING:
    from squigglray.training.base import train_base
    from squigglray.training.callbacks import TrainerCallback, TrainState
    from squigglray.training.config import BaseTrainConfig, run_id_for
    from squigglray.training.data import find_reusable
    from squigglray.training.trainer import Trainer


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
