"""From-scratch causal-LM training with a curriculum, a cadence, callbacks and Parquet scalars."""

from squigglray.training.base import find_reusable, run_id_for, train_base
from squigglray.training.callbacks import TrainerCallback, TrainState
from squigglray.training.config import BaseTrainConfig
from squigglray.training.trainer import Trainer

__all__ = ["BaseTrainConfig", "Trainer", "TrainerCallback", "TrainState", "find_reusable", "run_id_for", "train_base"]
