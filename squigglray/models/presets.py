"""Llama-style decoders (RMSNorm, RoPE, SwiGLU, tied embeddings): sizes a laptop CPU trains (nano,
tiny) and the real-scale sizes seed 000 asks for (125m, 350m, 1.3b: grouped-query attention, context
2,048, a tokenizer of REAL_VOCAB trained on the training data). What each costs: `models/sizing.py`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a model is built: the sizes above are read by configs without torch
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

PRESETS: dict[str, dict[str, int]] = {
    # unit tests: builds in well under a second
    "nano": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=96),
    # the quickstart's model: trains on 2 CPU cores in minutes
    "tiny": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=6, intermediate_size=512),
    # real scale (129M, 336M, 1.28B parameters at REAL_VOCAB; head dim 64, 64, 128)
    "125m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                 intermediate_size=3072),
    "350m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8,
                 intermediate_size=3072),
    "1.3b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8,
                 intermediate_size=6144),
}
CONTEXT = {"125m": 2048, "350m": 2048, "1.3b": 2048}  # the real-scale presets' context (tokens)
REAL_VOCAB = 32768  # their tokenizer's size (nano and tiny: the config's vocab_size, 512 by default)


class UnknownPreset(ValueError):
    pass


def llama_config(preset: str, tokenizer: PreTrainedTokenizerBase, max_seq_len: int,
                 shape: dict[str, int] | None = None) -> LlamaConfig:
    """The preset's LlamaConfig; `shape` replaces some of its sizes (a preset's smoke at reduced width)."""
    if preset not in PRESETS:
        raise UnknownPreset(f"unknown model preset {preset!r}; presets: {sorted(PRESETS)}")
    from transformers import LlamaConfig

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
        **(PRESETS[preset] | (shape or {})),
    )


def build_model(preset: str, tokenizer: PreTrainedTokenizerBase, max_seq_len: int = 512, seed: int = 0,
                device: str | torch.device | None = None, shape: dict[str, int] | None = None) -> LlamaForCausalLM:
    """A freshly initialized model; the same seed gives the same weights. `device="meta"`: the
    structure only, no memory (sizes of a 1.3B model on a laptop)."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = llama_config(preset, tokenizer, max_seq_len, shape)
    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model


def count_params(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
