"""Causal-LM training loop: AdamW, warmup + cosine, grad clipping, loss on trace tokens only.

Deliberately a plain PyTorch loop (bench/train_throughput.py holds it to within 10% of a bare one):
the only per-step extras are the batch draw, one loss.item() and the callback calls.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import numpy as np
import torch

from squigglray.training.cadence import log_steps
from squigglray.training.callbacks import TrainerCallback, TrainState
from squigglray.training.config import TrainSection


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(step: int, cfg: TrainSection) -> float:
    """Linear warmup to cfg.lr, cosine decay to cfg.lr * min_lr_ratio at the last step."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))


def make_optimizer(model: torch.nn.Module, cfg: TrainSection) -> torch.optim.Optimizer:
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


class Trainer:
    """`Trainer(model, cfg, next_batch).fit()`; `next_batch(step)` returns input_ids/attention_mask/labels."""

    def __init__(self, model, cfg: TrainSection, next_batch, callbacks: list[TrainerCallback] | None = None,
                 phase_of=None):
        self.model, self.cfg, self.next_batch = model, cfg, next_batch
        self.callbacks = list(callbacks or [])
        self.phase_of = phase_of or (lambda step: "")
        self.log_at = set(log_steps(cfg.steps, cfg.log_dense_until, cfg.log_every))
        self.history: list[dict[str, Any]] = []

    def _emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def fit(self) -> TrainState:
        cfg, model = self.cfg, self.model
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        opt = make_optimizer(model, cfg)
        model.train()
        state = TrainState(max_steps=cfg.steps)
        t0 = time.perf_counter()
        self._emit("on_train_begin", state, model)
        window: list[float] = []
        for step in range(1, cfg.steps + 1):
            state.step, state.phase = step, self.phase_of(step)
            state.lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = state.lr
            batch = self.next_batch(step)
            out = model(**batch)
            out.loss.backward()
            self._emit("on_after_backward", state, model)
            if cfg.grad_clip > 0:
                state.grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            opt.step()
            opt.zero_grad(set_to_none=True)
            state.loss = float(out.loss.detach())
            window.append(state.loss)
            state.tokens_seen += int((batch["labels"][:, 1:] != -100).sum())
            state.wall_s = time.perf_counter() - t0
            state.is_log_step = step in self.log_at
            self._emit("on_step_end", state, model, batch)
            if state.is_log_step:
                row = {
                    "step": step, "loss": state.loss, "loss_window_mean": float(np.mean(window)),
                    "lr": state.lr, "grad_norm": state.grad_norm, "tokens_seen": state.tokens_seen,
                    "wall_s": state.wall_s, "phase": state.phase,
                }
                window.clear()
                self.history.append(row)
                self._emit("on_log", state, row)
        model.eval()
        self._emit("on_train_end", state, model)
        return state
