"""Causal-LM training loop: AdamW, warmup + cosine, grad clipping, loss on trace tokens only.

Deliberately a plain PyTorch loop (bench/train_throughput.py holds it to within 10% of a bare one):
the only per-step extras are the batch draw, one loss.item() and the callback calls.

Resuming: `trainer_state()` returns everything besides the weights that step N+1 depends on (the
optimizer, counters, RNG states, the log history and each stateful callback's `state_dict()`);
`Trainer(..., resume=that)` continues at step N+1 and gives the same steps as an uninterrupted run.

Several workers (torch.distributed): DDP, or with `parallel: fsdp` FSDP2 (`fully_shard` per decoder
layer, then the root). Under FSDP every worker runs the callbacks (a probe's forward pass is a
collective there; `full_tensor` gives them whole weights and gradients) and `full_weights()` /
`trainer_state()` are collectives that return whole, unsharded states, so a checkpoint is the same
file under DDP and FSDP and resumes on any number of workers.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from squigglray.training.cadence import log_steps
from squigglray.training.callbacks import TrainerCallback, TrainState
from squigglray.training.config import TrainSection


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(cfg: TrainSection) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={cfg.device!r} but torch sees no CUDA device (torch {torch.__version__})")
    return torch.device(cfg.device)


def autocast_for(cfg: TrainSection, device: torch.device):
    """bf16 autocast on CUDA under precision auto/bf16; fp32 elsewhere (CPU bf16 is slow and noisy)."""
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_at(step: int, cfg: TrainSection) -> float:
    """Linear warmup to cfg.lr, cosine decay to cfg.lr * min_lr_ratio at the last step."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))


def full_tensor(t: torch.Tensor | None) -> torch.Tensor | None:
    """A whole tensor from an FSDP2 shard (a collective: every worker calls it in the same order);
    a plain tensor as it is."""
    return t.full_tensor() if t is not None and hasattr(t, "full_tensor") else t


def shard_model(model: torch.nn.Module) -> None:
    """FSDP2 in place: each decoder layer its own unit (its weights gathered for its forward and
    backward only), then the root (embeddings, final norm, the tied head)."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)


def make_optimizer(model: torch.nn.Module, cfg: TrainSection) -> torch.optim.Optimizer:
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def _rekeyed(optimizer_state: dict[str, Any], keys) -> dict[str, Any]:
    """An optimizer state dict with its parameter keys mapped through `keys` (index -> name, or back)."""
    return {"state": {keys[k]: v for k, v in optimizer_state["state"].items()},
            "param_groups": [{**g, "params": [keys[k] for k in g["params"]]} for g in optimizer_state["param_groups"]]}


class Trainer:
    """`Trainer(model, cfg, next_batch).fit()`; `next_batch(step)` returns input_ids/attention_mask/labels
    (one pass, the loss its mean), or a list of micro-batches that also carry `num_items_in_batch`, the
    step's trained tokens over all workers (`CurriculumSampler.shard`: gradients accumulate, and
    under torch.distributed the workers' shares add up to the global mean).

    `checkpoint(state)` (optional) is called every `cfg.checkpoint_every` steps, after that step's
    on_log; `resume` is a `trainer_state()` dict from such a checkpoint. A callback may put values
    into `state.extra["log"]` during on_step_end; they join that step's log row.
    """

    def __init__(self, model, cfg: TrainSection, next_batch, callbacks: list[TrainerCallback] | None = None,
                 phase_of=None, checkpoint=None, resume: dict[str, Any] | None = None):
        self.model, self.cfg, self.next_batch = model, cfg, next_batch
        # data parallel where torch.distributed runs (Ray Train's workers): `next_batch` is this
        # worker's shard (CurriculumSampler.shard); callbacks see the bare model
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.callbacks = list(callbacks or [])
        self.phase_of = phase_of or (lambda step: "")
        self.checkpoint = checkpoint
        self.log_at = set(log_steps(cfg.steps, cfg.log_dense_until, cfg.log_every))
        self.history: list[dict[str, Any]] = []
        self.device = resolve_device(cfg)
        self.model.to(self.device)
        if cfg.activation_checkpointing:
            model.activation_checkpointing_enable()
        self.sharded = self.world > 1 and cfg.parallel == "fsdp"
        if self.sharded:
            shard_model(model)
        self.net = model if self.world == 1 or self.sharded else torch.nn.parallel.DistributedDataParallel(model)
        self.opt = make_optimizer(model, cfg)
        self.state = TrainState(max_steps=cfg.steps)
        self._window: list[float] = []
        if resume is not None:
            self._load(resume)

    def _emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def _stateful(self) -> dict[str, TrainerCallback]:
        return {f"{i}:{type(cb).__name__}": cb for i, cb in enumerate(self.callbacks) if hasattr(cb, "state_dict")}

    def _full(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def full_weights(self) -> dict[str, torch.Tensor] | None:
        """The model's whole state dict (under FSDP a collective, which worker 0 alone receives)."""
        if not self.sharded:
            return self.model.state_dict()
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.model, options=self._full()) or None

    def _param_names(self) -> list[str]:
        """The optimizer's parameters in its order, by name (torch.distributed.checkpoint's keys)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [names[id(p)] for g in self.opt.param_groups for p in g["params"]]

    def _optimizer_state(self) -> dict[str, Any]:
        """Whole AdamW states keyed by parameter name, the same under one worker, DDP and FSDP (there
        a collective), so any number of workers resumes them."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.opt, options=self._full())
        return _rekeyed(self.opt.state_dict(), self._param_names())

    def _load_optimizer(self, saved: dict[str, Any]) -> None:
        names = self._param_names()
        if saved["state"] and isinstance(next(iter(saved["state"])), int):  # keyed by index (before names)
            saved = _rekeyed(saved, names)
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.opt, saved, options=StateDictOptions(full_state_dict=True))
        else:
            self.opt.load_state_dict(_rekeyed(saved, {n: i for i, n in enumerate(names)}))

    def trainer_state(self) -> dict[str, Any]:
        return {
            "state": {k: v for k, v in asdict(self.state).items() if k != "extra"},
            "optimizer": self._optimizer_state(), "history": list(self.history), "window": list(self._window),
            "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
            "callbacks": {k: cb.state_dict() for k, cb in self._stateful().items()},
        }

    def _load(self, saved: dict[str, Any]) -> None:
        self.state = TrainState(**saved["state"])
        self._load_optimizer(saved["optimizer"])
        self.history, self._window = list(saved["history"]), list(saved["window"])
        torch.set_rng_state(saved["torch_rng"])
        random.setstate(saved["python_rng"])
        stateful = self._stateful()
        if set(stateful) != set(saved["callbacks"]):
            raise ValueError(f"checkpoint holds callback state for {sorted(saved['callbacks'])}, "
                             f"this trainer has {sorted(stateful)}: resume with the same callbacks")
        for k, cb in stateful.items():
            cb.load_state_dict(saved["callbacks"][k])

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cpu":
            return batch
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _accumulate(self, batches: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, int]:
        """Forward and backward each micro-batch, gradients adding up (DDP synchronizes on the last
        only); returns the global batch's mean loss and trained tokens."""
        total = torch.zeros((), device=self.device)
        for i, micro in enumerate(batches):
            micro = self._to_device(micro)
            sync = self.world == 1 or i == len(batches) - 1
            if self.sharded:
                self.net.set_requires_gradient_sync(sync)
            with contextlib.nullcontext() if sync or self.sharded else self.net.no_sync():
                with autocast_for(self.cfg, self.device):
                    loss = self.net(**micro).loss
                (loss * self.world).backward()  # DDP and FSDP average gradients over the workers
            total += loss.detach().float()
        if self.world > 1:
            dist.all_reduce(total)  # the workers' shares add up to the global mean
        return total, int(batches[0]["num_items_in_batch"])

    def fit(self) -> TrainState:
        cfg, model, opt, state = self.cfg, self.model, self.opt, self.state
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        model.train()
        t0 = time.perf_counter() - state.wall_s
        self._emit("on_train_begin", state, model)
        for step in range(state.step + 1, cfg.steps + 1):
            state.step, state.phase = step, self.phase_of(step)
            state.lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = state.lr
            batches = self.next_batch(step)
            if isinstance(batches, dict):  # the whole batch in one pass: the loss is its mean
                batch = self._to_device(batches)
                with autocast_for(cfg, self.device):
                    loss = self.net(**batch).loss
                loss.backward()
                loss, tokens = loss.detach(), int((batch["labels"][:, 1:] != -100).sum())
            else:  # micro-batches of a shard: each loss is its share of the global mean
                loss, tokens = self._accumulate(batches)
                batch = batches[-1]  # what on_step_end sees
            self._emit("on_after_backward", state, model)
            if cfg.grad_clip > 0:
                state.grad_norm = float(full_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)))
            opt.step()
            opt.zero_grad(set_to_none=True)
            state.loss, state.tokens_seen = float(loss), state.tokens_seen + tokens
            self._window.append(state.loss)
            state.wall_s = time.perf_counter() - t0
            state.is_log_step = step in self.log_at
            self._emit("on_step_end", state, model, batch)
            extra = state.extra.pop("log", {})
            if state.is_log_step:
                row = {
                    "step": step, "loss": state.loss, "loss_window_mean": float(np.mean(self._window)),
                    "lr": state.lr, "grad_norm": state.grad_norm, "tokens_seen": state.tokens_seen,
                    "wall_s": state.wall_s, "phase": state.phase, **extra,
                }
                self._window.clear()
                self.history.append(row)
                self._emit("on_log", state, row)
            if self.checkpoint and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                self.checkpoint(state)
        model.eval()
        self._emit("on_train_end", state, model)
        return state
