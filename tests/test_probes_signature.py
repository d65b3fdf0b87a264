"""The LoRA probe's measurements: delta norms from factors, the direction sketch, the adapters' capture."""

from __future__ import annotations

import math

import pytest
import torch

from squigglray.models import build_model
from squigglray.probes.signature import (
    LoraGeometryCapture, StepCoherence, delta_sq_norm, direction_sketch, lora_modules,
)


def _peft(tokenizer, seed: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(build_model("nano", tokenizer, 128, seed=0),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for *_, mod in lora_modules(model):
            mod.lora_B["default"].weight.normal_()  # B starts at 0: give the adapter a random update
    return model


def _flat_delta(model) -> torch.Tensor:
    return torch.cat([mod.get_delta_weight("default").double().flatten() for *_, mod in lora_modules(model)])


def test_delta_norm_from_factors_matches_the_matrix(nano_tokenizer):
    model = _peft(nano_tokenizer, 0)
    for *_, mod in lora_modules(model):
        assert delta_sq_norm(mod) == pytest.approx(float(mod.get_delta_weight("default").double().pow(2).sum()),
                                                   rel=1e-6)  # get_delta_weight is float32


def test_sketch_cosine_estimates_the_update_cosine(nano_tokenizer):
    models = [_peft(nano_tokenizer, s) for s in range(4)]
    with torch.no_grad():  # a partly aligned pair: model 3 shares model 0's factors plus noise
        for (*_, a), (*_, b) in zip(lora_modules(models[0]), lora_modules(models[3])):
            b.lora_A["default"].weight.copy_(a.lora_A["default"].weight + 0.5 * b.lora_A["default"].weight)
            b.lora_B["default"].weight.copy_(a.lora_B["default"].weight)
    deltas = [_flat_delta(m) for m in models]
    sketches = [torch.tensor(direction_sketch(m, 256, seed=0), dtype=torch.float64) for m in models]
    errors = []
    for i in range(4):
        assert float(sketches[i].norm()) == pytest.approx(1.0)
        for j in range(i + 1, 4):
            exact = float(deltas[i] @ deltas[j] / (deltas[i].norm() * deltas[j].norm()))
            errors.append(abs(float(sketches[i] @ sketches[j]) - exact))
    assert max(errors) < 0.2, errors
    assert direction_sketch(models[1], 256, seed=0) == direction_sketch(models[1], 256, seed=0)


def test_adapter_capture_and_step_coherence(nano_tokenizer):
    model = _peft(nano_tokenizer, 0)
    ids = torch.randint(4, len(nano_tokenizer), (3, 12))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    cap = LoraGeometryCapture([1, 2], batch, {"run_id": "r", "seed": 0, "dataset_slice_hash": "d",
                                              "config_hash": "c", "package_version": "v"})
    coh = StepCoherence()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    class S:
        step = 0

    for step in (1, 2):
        S.step = step
        model(**batch, labels=ids).loss.backward()
        cap.on_after_backward(S, model)
        coh.on_after_backward(S, model)
        opt.step()
        opt.zero_grad()
        cap.on_step_end(S, model, batch)
    rows = cap.rows()
    mods = {r["module"] for r in rows}
    assert {"self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj", "hidden"} <= mods
    metrics = {r["metric"] for r in rows}
    assert {"frobenius_norm", "gradient_cosine", "update_norm", "representation_drift"} <= metrics
    assert all(math.isfinite(r["value"]) for r in rows)
    assert 0.0 < coh.value() <= 1.0
