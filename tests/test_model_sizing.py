"""Model presets' sizes without their weights: parameter counts from meta-device models, training
memory (bf16 autocast + AdamW) against what a CPU step really holds (`squigglray/models/sizing.py`)."""

from __future__ import annotations

import pytest
import torch

from squigglray.models.presets import CONTEXT, PRESETS, REAL_VOCAB, build_model, count_params
from squigglray.models.sizing import BYTES_PER_PARAM, param_count, saved_activation_bytes, training_memory
from squigglray.models.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["1 + 2 = 3, x^2 - 1 = (x - 1)(x + 1), \\boxed{42}"] * 20, vocab_size=400)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_param_count_formula_equals_the_meta_model(preset, tokenizer):
    model = build_model(preset, tokenizer, max_seq_len=CONTEXT.get(preset, 512), device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())  # no memory, even at 1.3B
    assert count_params(model) == param_count(preset, len(tokenizer))


@pytest.mark.parametrize("preset, low, high", [("125m", 110e6, 140e6), ("350m", 300e6, 380e6),
                                               ("1.3b", 1.2e9, 1.4e9)])
def test_real_scale_presets_are_their_size_with_gqa_and_a_2k_context(preset, low, high, tokenizer):
    assert low <= param_count(preset, REAL_VOCAB) <= high
    cfg = build_model(preset, tokenizer, max_seq_len=CONTEXT[preset], device="meta").config
    assert cfg.num_key_value_heads < cfg.num_attention_heads and cfg.max_position_embeddings == 2048
    assert cfg.tie_word_embeddings and cfg.hidden_act == "silu"
    mem = training_memory(preset)
    assert mem.states_bytes == 16 * param_count(preset, REAL_VOCAB)
    # checkpointing trades the saved activations of every layer for one recomputed layer
    assert training_memory(preset, checkpointing=True).activation_bytes < mem.activation_bytes / 2


def test_a_real_adamw_step_holds_16_bytes_a_parameter(tokenizer):
    model = build_model("nano", tokenizer, max_seq_len=64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, len(tokenizer), (2, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    unique = {id(p): p for p in model.parameters()}.values()
    held = sum(p.nbytes + p.grad.nbytes for p in unique)
    held += sum(t.nbytes for state in opt.state.values() for k, t in state.items() if k != "step")
    assert held == BYTES_PER_PARAM * count_params(model)


@pytest.mark.parametrize("preset", ["nano", "tiny"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_saved_activations_match_what_a_forward_saves(preset, checkpointing, tokenizer):
    """Every distinct tensor storage the forward saves for backward (parameters aside), under bf16
    autocast, against the estimate: within 5%."""
    model = build_model(preset, tokenizer, max_seq_len=256)
    if checkpointing:
        model.activation_checkpointing_enable()
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    batch, seq = 2, 128
    ids = torch.randint(0, len(tokenizer), (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, labels=ids, use_cache=False)
    estimate = saved_activation_bytes(preset, len(tokenizer), batch * seq, checkpointing)
    assert sum(saved.values()) == pytest.approx(estimate, rel=0.05)
