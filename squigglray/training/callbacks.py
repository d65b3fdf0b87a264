"""Trainer callbacks: the hook points that geometry capture and probes attach to.

Order within a step: forward+backward -> on_after_backward (gradients present) ->
optimizer step -> on_step_end -> on_log (only at cadence steps).
A callback whose state must survive a resume defines `state_dict()` and `load_state_dict(d)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class TrainState:
    step: int = 0
    max_steps: int = 0
    tokens_seen: int = 0  # trace tokens that carried loss
    lr: float = 0.0
    phase: str = ""
    loss: float = float("nan")  # at this step (set every step, cheap on CPU)
    grad_norm: float = float("nan")
    wall_s: float = 0.0
    is_log_step: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class TrainerCallback:
    """Override what you need; every method is optional."""

    def on_train_begin(self, state: TrainState, model: torch.nn.Module) -> None: ...

    def on_after_backward(self, state: TrainState, model: torch.nn.Module) -> None: ...

    def on_step_end(self, state: TrainState, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None: ...

    def on_log(self, state: TrainState, row: dict[str, Any]) -> None: ...

    def on_train_end(self, state: TrainState, model: torch.nn.Module) -> None: ...


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def set_description(self, desc: str) -> Any: ...
    def close(self) -> Any: ...


class ProgressCallback(TrainerCallback):
    """A progress bar (tqdm by default; the Ray layer passes ray's tqdm_ray)."""

    def __init__(self, factory=None, desc: str = "train"):
        if factory is None:
            from tqdm.auto import tqdm as factory
        self.factory, self.desc, self.bar = factory, desc, None

    def on_train_begin(self, state, model):
        self.bar = self.factory(total=state.max_steps, desc=self.desc)
        if state.step:  # resumed
            self.bar.update(state.step)

    def on_step_end(self, state, model, batch):
        self.bar.update(1)

    def on_log(self, state, row):
        stats = f"loss={row['loss']:.3f} lr={row['lr']:.1e}"
        if hasattr(self.bar, "set_postfix_str"):
            self.bar.set_postfix_str(stats)
        else:  # ray's tqdm_ray has only set_description
            self.bar.set_description(f"{self.desc} {stats}")

    def on_train_end(self, state, model):
        self.bar.close()
