"""From-scratch causal-LM training with a curriculum, a cadence, callbacks and Parquet scalars.

Names resolve on first use (PEP 562), so a process that only reads configs (`squigglray dynamics
--help`, a job driver validating its config) does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from squigglray.lazy import lazy_names

_HOME = {
    "BaseTrainConfig": "config", "run_id_for": "config", "find_reusable": "data", "train_base": "base",
    "TrainerCallback": "callbacks", "TrainState": "callbacks", "Trainer": "trainer",
}
__getattr__, __all__ = lazy_names(__name__, _HOME)

if TYPE_CHECKING:
    from squigglray.training.base import train_base
    from squigglray.training.callbacks import TrainerCallback, TrainState
    from squigglray.training.config import BaseTrainConfig, run_id_for
    from squigglray.training.data import find_reusable
    from squigglray.training.trainer import Trainer
