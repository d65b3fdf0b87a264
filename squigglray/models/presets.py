"""Llama-style decoders (RMSNorm, RoPE, SwiGLU, tied embeddings) in sizes a laptop CPU can train."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

PRESETS: dict[str, dict[str, int]] = {
    # unit tests: builds in well under a second
    "nano": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=96),
    # the quickstart's model: trains on 2 CPU cores in minutes
    "tiny": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=6, intermediate_size=512),
}


class UnknownPreset(ValueError):
    pass


def llama_config(preset: str, tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> LlamaConfig:
    if preset not in PRESETS:
        raise UnknownPreset(f"unknown model preset {preset!r}; presets: {sorted(PRESETS)}")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_seq_len,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        hidden_act="silu",  # SwiGLU MLP
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_dropout=0.0,
        **PRESETS[preset],
    )


def build_model(preset: str, tokenizer: PreTrainedTokenizerBase, max_seq_len: int = 512, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialized model; the same seed gives the same weights."""
    cfg = llama_config(preset, tokenizer, max_seq_len)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model


def count_params(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
