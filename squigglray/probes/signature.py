"""What a LoRA probe measures: the dynamics issue's geometry capture pointed at the adapters, the
step coherence of the gradients, representation drift from the base, and the probe's signature.

- `LoraGeometryCapture`: `GeometryCapture` whose watched matrices are the LoRA deltas
  dW = scaling * B @ A of every adapted (layer, module) and whose gradients are the adapters'
  [grad A, grad B]; rows have the long geometry schema (frobenius_norm of dW is the per-layer
  LoRA delta norm, gradient_cosine the step-to-step gradient coherence).
- `StepCoherence`: ||sum_t g_t|| / sum_t ||g_t|| over all adapter gradients, in [0, 1]: 1 when
  every step pushes the same way, about 1/sqrt(T) for T unrelated directions.
- `direction_sketch`: a random sketch of the whole dW, so probes can be compared by update
  direction without storing weights. Measurement j is sum over modules of u_j^T dW v_j with
  u_j, v_j standard normal vectors drawn from (sketch_seed, module name), identical in every probe;
  E[<S(X), S(Y)>] = dim * <X, Y>, so cosines of unit sketches estimate cosines of the updates
  (tests/test_probes_signature.py bounds the error). Computed from the factors, never forming dW.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from squigglray.families.base import stable_seed
from squigglray.geometry.capture import GeometryCapture
from squigglray.geometry.metrics import representation_drift
from squigglray.training.callbacks import TrainerCallback

_LORA_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")
ADAPTER = "default"


def lora_modules(model: torch.nn.Module) -> list[tuple[str, int, str, torch.nn.Module]]:
    """(short name 'layers.<i>.<module>', layer, module, peft LoraLayer) of every adapted matrix, in order."""
    from peft.tuners.lora import LoraLayer

    out = []
    for name, mod in model.named_modules():
        m = _LORA_NAME.search(name)
        if isinstance(mod, LoraLayer) and m and ADAPTER in mod.lora_A:
            out.append((f"layers.{m.group(1)}.{m.group(2)}", int(m.group(1)), m.group(2), mod))
    if not out:
        raise ValueError("the model has no LoRA layers inside 'layers.<i>.' blocks")
    return out


def _factors(mod) -> tuple[torch.Tensor, torch.Tensor, float]:
    return mod.lora_B[ADAPTER].weight, mod.lora_A[ADAPTER].weight, float(mod.scaling[ADAPTER])


def delta_sq_norm(mod) -> float:
    """||scaling * B A||_F^2 = scaling^2 tr((B^T B)(A A^T)), from the r x r Gram matrices."""
    B, A, s = _factors(mod)
    B, A = B.detach().double(), A.detach().double()
    return float(s * s * torch.trace((B.T @ B) @ (A @ A.T)))


def adapter_grad(mod) -> torch.Tensor | None:
    B, A, _ = _factors(mod)
    if A.grad is None or B.grad is None:
        return None
    return torch.cat([A.grad.detach().flatten(), B.grad.detach().flatten()])


class LoraGeometryCapture(GeometryCapture):
    """Geometry capture of the adapters' deltas (see the module docstring)."""

    def grad_items(self, model):
        return [(key, layer, module, adapter_grad(mod)) for key, layer, module, mod in lora_modules(model)]

    def weight_items(self, model):
        return [(key, layer, module, mod.get_delta_weight(ADAPTER).detach())
                for key, layer, module, mod in lora_modules(model)]


class StepCoherence(TrainerCallback):
    """Accumulates sum_t g_t and sum_t ||g_t|| of the adapter gradients (raw, before clipping)."""

    def __init__(self):
        self.total: torch.Tensor | None = None
        self.norm_sum = 0.0

    def on_after_backward(self, state, model):
        grads = [g for *_, mod in lora_modules(model) if (g := adapter_grad(mod)) is not None]
        if not grads:
            return
        g = torch.cat(grads).double()
        self.total = g.clone() if self.total is None else self.total + g
        self.norm_sum += float(g.norm())

    def value(self) -> float:
        if self.total is None or self.norm_sum <= 0:
            return 0.0
        return min(1.0, float(self.total.norm()) / self.norm_sum)


def direction_sketch(model: torch.nn.Module, dim: int, seed: int) -> list[float]:
    """Unit sketch of the whole LoRA update (module docstring); zeros when nothing moved."""
    total = torch.zeros(dim, dtype=torch.float64)
    for key, _, _, mod in lora_modules(model):
        B, A, s = _factors(mod)
        gen = torch.Generator().manual_seed(stable_seed("dir-sketch", seed, key))
        U = torch.randn(dim, B.shape[0], generator=gen, dtype=torch.float64)
        V = torch.randn(dim, A.shape[1], generator=gen, dtype=torch.float64)
        B, A = B.detach().to("cpu", torch.float64), A.detach().to("cpu", torch.float64)
        total += s * ((U @ B) * (A @ V.T).T).sum(dim=1)
    norm = float(total.norm())
    return [float(v) / norm for v in total] if norm > 0 else [0.0] * dim


@torch.no_grad()
def hidden_states(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """Per layer (embedding output first), the attention-masked token states as CPU float32 [tokens, d]."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                    output_hidden_states=True, use_cache=False)
    finally:
        model.train(was_training)
    mask = batch["attention_mask"].to(device).bool()
    return [h[mask].float().cpu() for h in out.hidden_states]


def drift_by_layer(before: list[torch.Tensor], after: list[torch.Tensor]) -> list[float]:
    """1 - linear CKA per block output (the geometry metric representation_drift); the embedding
    output is skipped (LoRA never touches it)."""
    return [representation_drift(a, b) for b, a in zip(before[1:], after[1:])]


def signature(model: torch.nn.Module, base_sq_norms: dict[str, float], drift: list[float], dim: int, seed: int
              ) -> tuple[dict[str, float], float]:
    """The named vector (delta.<layer>.<module>, drift.L<i>, dir.<j>) and the relative parameter change."""
    sig: dict[str, float] = {}
    num = den = 0.0
    for key, layer, module, mod in lora_modules(model):
        d2, w2 = delta_sq_norm(mod), base_sq_norms[key]
        sig[f"delta.L{layer}.{module}"] = math.sqrt(d2 / w2) if w2 > 0 else 0.0
        num, den = num + d2, den + w2
    for i, v in enumerate(drift):
        sig[f"drift.L{i}"] = v
    for j, v in enumerate(direction_sketch(model, dim, seed)):
        sig[f"dir.{j}"] = v
    return sig, (math.sqrt(num / den) if den > 0 else 0.0)


def base_sq_norms(model: torch.nn.Module) -> dict[str, float]:
    return {key: float(mod.base_layer.weight.detach().double().pow(2).sum()) for key, _, _, mod in lora_modules(model)}
