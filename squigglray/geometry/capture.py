"""Geometry capture: a `TrainerCallback` that applies `squigglray.geometry.metrics` at capture steps.

Long schema of `geometry_state/<run_id>.parquet` (`GEOMETRY_SCHEMA`, one row per value):

=====================  =========  ===============================================================
column                 type       meaning
=====================  =========  ===============================================================
run_id                 string     run the row belongs to
step                   int64      optimizer step (1-based, as `TrainState.step`) of the capture
layer                  int64      transformer block index (0-based); -1 for non-layer rows
module                 string     watched matrix inside the block, e.g. 'self_attn.q_proj',
                                  'mlp.down_proj'; 'hidden' for activation rows
metric                 string     a key of `squigglray.geometry.metrics.METRICS`
value                  float64    the metric value
seed                   int64      run seed
dataset_slice_hash     string     hash of the training data slice
config_hash            string     hash of the run config
package_version        string     squigglray version that wrote the row
capture_batch_hash     string     sha256 of the fixed capture batch (`batch_hash`)
=====================  =========  ===============================================================

Per watched weight W (2-D `.weight` of the blocks' attention q/k/v/o and MLP gate/up/down):
- at `on_after_backward` (raw gradients, before clipping): `gradient_norm`; `gradient_cosine`
  against the raw gradient of the previous optimizer step;
- at `on_step_end` (after the optimizer step): `frobenius_norm`, `spectral_norm`,
  `stable_rank_fro_spec`; `update_norm` and `relative_update` against the weights after the
  previous optimizer step.
Per hidden state of the fixed capture batch (eval mode, no grad, attention-masked tokens only,
flattened to tokens x hidden): `effective_rank_entropy`, `activation_anisotropy`;
`representation_drift` against the hidden states after the previous optimizer step. Hidden-state
layer numbering: `hidden_states[0]` (embedding output) is layer -1, `hidden_states[i + 1]` (output
of block i; in HF Llama the last one is after the final norm) is layer i.

Lag 1: the lagged metrics (`gradient_cosine`, `update_norm`, `relative_update`,
`representation_drift`) at capture step s compare step s with step s-1, never with the previous
capture. The cadence is dense early (every step) and sparse later (every 20 steps); measured since
the previous capture they would follow the gap alone (`update_norm` ~20x from the first captures
to the every-20-steps tail), and the change-point detector would report the cadence as an event
that every seed shares. Measured since the previous step they are per-step quantities that the cadence only
samples, so it makes no events. They are absent at a capture at step 1 (there is no step 0).

Cost: nothing happens at steps that are neither a capture step s nor a pre-capture step s-1. A
pre-capture step keeps CPU float32 copies of the watched weights, their gradients and the
per-layer capture activations (one eval-mode forward of the capture batch, shared with the capture
when s-1 is one too); step s uses them and drops them. Where the cadence is sparse each capture thus
costs one more forward and one more set of copies, but no more SVDs.

At scale (`GeometrySection`): `spectral="power"` replaces the float64 decomposition of every watched
matrix by a few float32 block power-iteration steps on the weights' own device, warm-started from the
previous capture's subspace (O(k m n) instead of O(m n min(m, n)); the estimate is a lower bound, within
0.5% of the exact value on tiny in `tests/test_geometry_capture.py`, about 0.1% on random init-like
matrices of 768 to 3,072 rows after the first captures); `layer_stride=k` watches blocks 0, k, 2k, ... and the last (rows of
the other blocks are absent); `lag_copies="device_bfloat16"` keeps the lag copies on the weights'
device, no host transfer, the gradients' and hidden states' in bfloat16 (the weights' stay float32:
a step's update is far below bfloat16's resolution).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch

from squigglray.geometry.metrics import (
    METRICS,
    activation_anisotropy,
    effective_rank_entropy,
    frobenius_norm,
    gradient_cosine,
    gradient_norm,
    power_spectral_stats,
    relative_update,
    representation_drift,
    spectral_stats,
    update_norm,
)
from squigglray.training.callbacks import TrainerCallback, TrainState
from squigglray.training.trainer import full_tensor

DEFAULT_MODULES: tuple[str, ...] = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)
HIDDEN_MODULE = "hidden"
PROVENANCE_KEYS: tuple[str, ...] = ("run_id", "seed", "dataset_slice_hash", "config_hash", "package_version")

GEOMETRY_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("step", pa.int64(), nullable=False),
    pa.field("layer", pa.int64(), nullable=False),
    pa.field("module", pa.string(), nullable=False),
    pa.field("metric", pa.string(), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("dataset_slice_hash", pa.string(), nullable=False),
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("package_version", pa.string(), nullable=False),
    pa.field("capture_batch_hash", pa.string(), nullable=False),
])

WEIGHT_METRICS_FIRST = ("gradient_norm", "frobenius_norm", "spectral_norm", "stable_rank_fro_spec")
WEIGHT_METRICS_LATER = ("gradient_cosine", "update_norm", "relative_update")
HIDDEN_METRICS_FIRST = ("effective_rank_entropy", "activation_anisotropy")
HIDDEN_METRICS_LATER = ("representation_drift",)

_BLOCK_PARAM = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)\.weight$")


def batch_hash(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> str:
    """sha256 over shapes and int64 contents of the capture batch (stable across calls/devices)."""
    h = hashlib.sha256()
    for name, t in (("input_ids", input_ids), ("attention_mask", attention_mask)):
        a = torch.as_tensor(t).detach().to("cpu", torch.int64).contiguous()
        h.update(f"{name}:{tuple(a.shape)};".encode())
        h.update(a.numpy().tobytes())
    return h.hexdigest()


def watched_weights(model: torch.nn.Module, modules: Iterable[str] = DEFAULT_MODULES
                    ) -> dict[str, tuple[int, str]]:
    """Parameter name -> (layer index, module name) for every 2-D `layers.<i>.<module>.weight`."""
    wanted = set(modules)
    out: dict[str, tuple[int, str]] = {}
    for name, p in model.named_parameters():
        m = _BLOCK_PARAM.search(name)
        if m and m.group(2) in wanted and p.ndim == 2:
            out[name] = (int(m.group(1)), m.group(2))
    return out


LAG_COPIES = {"cpu_float32": ("cpu", torch.float32), "device_bfloat16": (None, torch.bfloat16)}


@dataclass
class _StepCopy:
    """Copies (`LAG_COPIES`) from one optimizer step, for the lag-1 metrics of the step after it: the
    raw gradients, the weights after its optimizer step and the capture batch's hidden states then."""

    step: int
    grad: dict[str, torch.Tensor] = field(default_factory=dict)
    weight: dict[str, torch.Tensor] = field(default_factory=dict)
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)


class GeometryCapture(TrainerCallback):
    """Collects geometry rows at `capture_steps` (see the module docstring for schema and metrics).

    `provenance`: a mapping (or a pydantic `Provenance`) with run_id, seed, dataset_slice_hash,
    config_hash, package_version. `capture_batch`: a dict with input_ids and attention_mask.
    """

    def __init__(self, capture_steps: Iterable[int], capture_batch: Mapping[str, torch.Tensor],
                 provenance: Mapping[str, Any] | Any, modules: Sequence[str] = DEFAULT_MODULES,
                 capture_hash: str | None = None, spectral: str = "exact", power_iterations: int = 4,
                 layer_stride: int = 1, lag_copies: str = "cpu_float32"):
        """`spectral`, `power_iterations`, `layer_stride`, `lag_copies`: what a capture costs at scale
        (`GeometrySection` documents each); the defaults are the exact, every-layer capture."""
        self.seconds = 0.0  # wall time inside the capture's hooks: its overhead, measured where it runs
        self.capture_steps = frozenset(int(s) for s in capture_steps)
        self.pre_capture_steps = frozenset(s - 1 for s in self.capture_steps if s >= 2)
        self.input_ids = torch.as_tensor(capture_batch["input_ids"]).detach().clone()
        self.attention_mask = torch.as_tensor(capture_batch["attention_mask"]).detach().clone()
        self.capture_batch_hash = capture_hash or batch_hash(self.input_ids, self.attention_mask)
        if hasattr(provenance, "model_dump"):
            provenance = provenance.model_dump()
        missing = [k for k in PROVENANCE_KEYS if k not in provenance]
        if missing:
            raise ValueError(f"provenance lacks {missing}")
        self.provenance = {k: provenance[k] for k in PROVENANCE_KEYS}
        self.provenance["seed"] = int(self.provenance["seed"])
        self.modules = tuple(modules)
        if spectral not in ("exact", "power") or lag_copies not in LAG_COPIES or layer_stride < 1:
            raise ValueError(f"spectral must be exact or power, lag_copies one of {sorted(LAG_COPIES)}, "
                             f"layer_stride >= 1 (got {spectral!r}, {lag_copies!r}, {layer_stride})")
        self.spectral, self.power_iterations, self.layer_stride = spectral, int(power_iterations), int(layer_stride)
        self.lag_copies = lag_copies
        self._power_v: dict[str, torch.Tensor] = {}  # the last capture's top right singular subspaces
        self._watch: dict[str, tuple[int, str]] | None = None
        self._prev: _StepCopy | None = None  # copies from the last step, held only after a pre-capture step
        self._now: _StepCopy | None = None  # copies of this pre-capture step, filled by its two hooks
        self._rows: list[dict[str, Any]] = []

    # -- helpers -------------------------------------------------------------------------------
    def _watched_layer(self, layer: int, last: int) -> bool:
        """Every `layer_stride`-th block (0, k, 2k, ...), the last one, and the embedding output (-1)."""
        return layer % self.layer_stride == 0 or layer in (-1, last)

    def _copy(self, t: torch.Tensor, weight: bool = False) -> torch.Tensor:
        """A lag copy. Weights stay float32 in every mode: one step's update is ~1e-4 of a weight at
        usual learning rates, below bfloat16's resolution (~4e-3), so update_norm needs float32."""
        device, dtype = LAG_COPIES[self.lag_copies]
        return t.detach().to(device or t.device, torch.float32 if weight else dtype, copy=True)

    def _params(self, model: torch.nn.Module):
        if self._watch is None:
            watch = watched_weights(model, self.modules)
            last = max((layer for layer, _ in watch.values()), default=0)
            self._watch = {k: v for k, v in watch.items() if self._watched_layer(v[0], last)}
            if not self._watch:
                raise ValueError(f"no watched weights matched modules {self.modules}")
        params = dict(model.named_parameters())
        return [(name, params[name], *lm) for name, lm in self._watch.items()]

    def grad_items(self, model: torch.nn.Module) -> list[tuple[str, int, str, torch.Tensor | None]]:
        """(key, layer, module, gradient) of every watched matrix; a subclass may watch other matrices
        (the LoRA probes watch their adapters' deltas)."""
        return [(name, layer, module, full_tensor(p.grad)) for name, p, layer, module in self._params(model)]

    def weight_items(self, model: torch.nn.Module) -> list[tuple[str, int, str, torch.Tensor]]:
        """(key, layer, module, matrix) of every watched matrix, after the optimizer step."""
        return [(name, layer, module, full_tensor(p.detach())) for name, p, layer, module in self._params(model)]

    def _add(self, step: int, layer: int, module: str, metric: str, value: float) -> None:
        assert metric in METRICS, metric
        self._rows.append({
            "run_id": self.provenance["run_id"], "step": int(step), "layer": int(layer), "module": module,
            "metric": metric, "value": float(value), "seed": self.provenance["seed"],
            "dataset_slice_hash": self.provenance["dataset_slice_hash"],
            "config_hash": self.provenance["config_hash"],
            "package_version": self.provenance["package_version"],
            "capture_batch_hash": self.capture_batch_hash,
        })

    # -- hooks ---------------------------------------------------------------------------------
    def _roles(self, step: int) -> tuple[bool, bool]:
        """(capture at `step`, keep copies of `step` for the capture at step + 1)."""
        return step in self.capture_steps, step in self.pre_capture_steps

    def _lagged(self, step: int) -> _StepCopy:
        """The copies from step - 1; empty when there are none (a capture at step 1)."""
        prev = self._prev
        return prev if prev is not None and prev.step == step - 1 else _StepCopy(step - 1)

    @contextlib.contextmanager
    def _timed(self, model: torch.nn.Module):
        """Adds the block's wall time to `seconds`, after the device's queued work on each side (so
        a capture is not charged for the backward, nor the next step for the capture)."""
        device = next(model.parameters()).device
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _: None)
        sync(device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync(device)
            self.seconds += time.perf_counter() - t0

    def on_after_backward(self, state: TrainState, model: torch.nn.Module) -> None:
        step = state.step
        capture, keep = self._roles(step)
        if not (capture or keep):
            return
        with self._timed(model):
            self._grad_rows(step, capture, keep, model)

    def _grad_rows(self, step: int, capture: bool, keep: bool, model: torch.nn.Module) -> None:
        prev = self._lagged(step).grad
        self._now = _StepCopy(step) if keep else None
        for name, layer, module, g in self.grad_items(model):
            if g is None:
                continue
            g = g.detach()
            if capture:
                self._add(step, layer, module, "gradient_norm", gradient_norm(g))
                if name in prev:
                    self._add(step, layer, module, "gradient_cosine", gradient_cosine(g, prev[name].to(g.device)))
            if keep:
                self._now.grad[name] = self._copy(g)

    def on_step_end(self, state: TrainState, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        step = state.step
        capture, keep = self._roles(step)
        if not (capture or keep):
            return
        with self._timed(model):
            self._weight_and_hidden_rows(step, capture, keep, model)

    def _weight_and_hidden_rows(self, step: int, capture: bool, keep: bool, model: torch.nn.Module) -> None:
        prev = self._lagged(step)
        now = self._now if self._now is not None and self._now.step == step else _StepCopy(step)
        with torch.no_grad():
            for name, layer, module, W in self.weight_items(model):
                if capture:
                    self._weight_rows(step, name, layer, module, W, prev.weight.get(name))
                if keep:
                    now.weight[name] = self._copy(W, weight=True)
            for layer, X in self._hidden_states(model):
                if capture:
                    self._hidden_rows(step, layer, X, prev.hidden.get(layer))
                if keep:
                    now.hidden[layer] = self._copy(X)
        self._prev, self._now = (now if keep else None), None  # step - 1's copies are used up

    def _weight_rows(self, step: int, key: str, layer: int, module: str, W: torch.Tensor,
                     prev: torch.Tensor | None) -> None:
        self._add(step, layer, module, "frobenius_norm", frobenius_norm(W))
        if prev is not None:
            prev = prev.to(W.device)
            self._add(step, layer, module, "update_norm", update_norm(W, prev))
            self._add(step, layer, module, "relative_update", relative_update(W, prev))
        if self.spectral == "power":
            top, stable, self._power_v[key] = power_spectral_stats(W, self._power_v.get(key), self.power_iterations)
        else:
            top, stable = spectral_stats(W)
        self._add(step, layer, module, "spectral_norm", top)
        self._add(step, layer, module, "stable_rank_fro_spec", stable)

    def _hidden_states(self, model: torch.nn.Module) -> list[tuple[int, torch.Tensor]]:
        """(layer, attention-masked tokens x hidden) of the capture batch, from an eval-mode forward
        (the model's mode is restored); layer numbering as in the module docstring."""
        was_training = model.training
        device = next(model.parameters()).device
        model.eval()
        try:
            out = model(input_ids=self.input_ids.to(device), attention_mask=self.attention_mask.to(device),
                        output_hidden_states=True, use_cache=False)
        finally:
            model.train(was_training)
        mask = self.attention_mask.to(device).bool()
        last = len(out.hidden_states) - 2
        return [(i - 1, h[mask].reshape(-1, h.shape[-1])) for i, h in enumerate(out.hidden_states)
                if self._watched_layer(i - 1, last)]

    def _hidden_rows(self, step: int, layer: int, X: torch.Tensor, prev: torch.Tensor | None) -> None:
        self._add(step, layer, HIDDEN_MODULE, "effective_rank_entropy", effective_rank_entropy(X))
        self._add(step, layer, HIDDEN_MODULE, "activation_anisotropy", activation_anisotropy(X))
        if prev is not None:
            self._add(step, layer, HIDDEN_MODULE, "representation_drift", representation_drift(X, prev.to(X.device)))

    # -- resume --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Rows so far and the copies of the last step when the next one captures (a checkpoint is
        taken between steps), so a resumed run writes the same rows, none twice."""
        p = self._prev
        lag = None if p is None else {"step": p.step, "grad": dict(p.grad), "weight": dict(p.weight),
                                      "hidden": dict(p.hidden)}
        return {"rows": self.rows(), "lag": lag, "capture_batch_hash": self.capture_batch_hash,
                "power_v": dict(self._power_v), "seconds": self.seconds}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved["capture_batch_hash"] != self.capture_batch_hash:
            raise ValueError("checkpoint was captured on another capture batch "
                             f"({saved['capture_batch_hash'][:12]} != {self.capture_batch_hash[:12]})")
        if "lag" not in saved:
            raise ValueError("checkpoint holds the previous capture's copies (geometry before lag 1); "
                             "its lagged metrics would not be since the previous step")
        self._rows = [dict(r) for r in saved["rows"]]
        self._power_v = dict(saved.get("power_v", {}))
        self.seconds = float(saved.get("seconds", 0.0))
        lag = saved["lag"]
        self._prev = None if lag is None else _StepCopy(lag["step"], dict(lag["grad"]), dict(lag["weight"]),
                                                        dict(lag["hidden"]))
        self._now = None

    # -- output --------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows]

    def to_table(self) -> pa.Table:
        return pa.Table.from_pylist(self._rows, schema=GEOMETRY_SCHEMA)

    def write(self, store) -> str:
        """Write `geometry_state/<run_id>.parquet` through `store.write_parquet`; returns its path."""
        return store.write_parquet(store.geometry_state(self.provenance["run_id"]), self.to_table())
