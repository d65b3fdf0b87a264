"""What a preset costs before any weight exists: parameters and training memory at bf16 + AdamW.

    python -m squigglray.models.sizing        # the table for every preset, with and without checkpointing

Parameters are counted from the config (the formula `tests/test_model_sizing.py` checks against a
meta-device model of each preset). Training memory is for the trainer's precision: fp32 parameters
under bf16 autocast, fp32 gradients and AdamW's two fp32 moments (16 bytes a parameter), plus the
activations saved for backward (`saved_activation_bytes`: what the Hugging Face Llama keeps under
bf16 autocast, checked against the tensors a CPU forward of nano and tiny saves; gradients flowing in
backward and the allocator's slack come on top, so the totals are a floor).
"""

from __future__ import annotations

from dataclasses import dataclass

from squigglray.models.presets import CONTEXT, PRESETS, REAL_VOCAB

BYTES_PER_PARAM = 4 + 4 + 8  # fp32 weight, fp32 gradient, AdamW exp_avg + exp_avg_sq
GiB = 2**30


def dims(preset: str) -> tuple[int, int, int, int]:
    """(hidden h, layers, kv: the width of k and of v under grouped-query attention, intermediate i)."""
    p = PRESETS[preset]
    h = p["hidden_size"]
    return h, p["num_hidden_layers"], p["num_key_value_heads"] * (h // p["num_attention_heads"]), p["intermediate_size"]


def param_count(preset: str, vocab_size: int) -> int:
    """Unique parameters of `build_model(preset)` with a tokenizer of `vocab_size` (tied embeddings
    counted once): per layer q, o (h x h), k, v (h x kv), gate, up, down (h x i) and two RMSNorm
    weights; the embedding (vocab x h) and the final norm."""
    h, layers, _, _ = dims(preset)
    return layers * (layer_weights(preset) + 2 * h) + vocab_size * h + h


def layer_weights(preset: str) -> int:
    """One block's matrices: q, o (h x h), k, v (h x kv), gate, up, down (h x i)."""
    h, _, kv, inter = dims(preset)
    return 2 * h * h + 2 * h * kv + 3 * h * inter


def saved_activation_bytes(preset: str, vocab_size: int, tokens: int, checkpointing: bool = False) -> int:
    """Bytes that the forward pass of `tokens` tokens (a micro-batch) saves for backward, as the
    Hugging Face Llama under bf16 autocast does (fp32 residual stream; read off its saved tensors,
    `tests/test_model_sizing.py` measures them). Per layer and token: each RMSNorm's fp32 input and
    normalized output (16h), the bf16 inputs autocast casts for the projections (10h), attention's
    q, k, v and output (4h + 4kv; memory-efficient attention keeps no seq x seq matrix) and the MLP's
    gate, up, activation and down inputs (8i): 30h + 4kv + 8i. Once: the final norm and lm_head
    input (10h), the fp32 logits (4 x vocab); and autocast's bf16 copy of every weight (2 bytes a
    parameter). With activation checkpointing a layer keeps only its fp32 input (4h) and its weights'
    copies are made again in backward (`recompute_bytes`)."""
    h, layers, kv, inter = dims(preset)
    once = 10 * h + 4 * vocab_size
    if checkpointing:
        return tokens * (layers * 4 * h + once) + 2 * vocab_size * h
    return tokens * (layers * (30 * h + 4 * kv + 8 * inter) + once) + 2 * (layers * layer_weights(preset) + vocab_size * h)


def recompute_bytes(preset: str, tokens: int) -> int:
    """Under activation checkpointing, what backward holds at once beyond the saved activations: one
    layer's activations and weight copies, recomputed."""
    h, _, kv, inter = dims(preset)
    return tokens * (30 * h + 4 * kv + 8 * inter) + 2 * layer_weights(preset)


def train_flops_per_token(preset: str, vocab_size: int, seq_len: int, checkpointing: bool = False) -> int:
    """Training FLOPs a token: forward 2 and backward 4 per matrix parameter (every block's and the
    lm_head, which the tied embedding is) plus causal attention's scores and mixing (12 h per key a
    layer, T / 2 keys on average); activation checkpointing runs each block's forward again (+2 per
    block parameter, + a third of the attention)."""
    h, layers, _, _ = dims(preset)
    blocks, attention = layers * layer_weights(preset), 6 * layers * h * seq_len
    return 6 * (blocks + vocab_size * h) + attention + ((2 * blocks + attention // 3) if checkpointing else 0)


@dataclass(frozen=True)
class TrainingMemory:
    params: int
    states_bytes: int  # weights, gradients and optimizer moments
    activation_bytes: int  # one micro-batch

    @property
    def total_bytes(self) -> int:
        return self.states_bytes + self.activation_bytes


def training_memory(preset: str, vocab_size: int | None = None, micro_batch: int = 1, seq_len: int | None = None,
                    checkpointing: bool = False) -> TrainingMemory:
    """Training memory of one data-parallel worker (DDP: every worker holds all states; under FSDP
    the states divide by the worker count, activations do not)."""
    vocab_size = vocab_size or REAL_VOCAB
    seq_len = seq_len or CONTEXT.get(preset, 512)
    n, tokens = param_count(preset, vocab_size), micro_batch * seq_len
    act = saved_activation_bytes(preset, vocab_size, tokens, checkpointing)
    return TrainingMemory(n, n * BYTES_PER_PARAM, act + (recompute_bytes(preset, tokens) if checkpointing else 0))


def table(micro_batch: int = 1, seq_len: int | None = None, checkpointing: bool = False) -> str:
    rows = ["| preset | parameters | weights+grads+AdamW | activations (micro-batch) | total |", "|---|---:|---:|---:|---:|"]
    for preset in PRESETS:
        vocab = REAL_VOCAB if preset in CONTEXT else 512
        m = training_memory(preset, vocab, micro_batch, seq_len, checkpointing)
        rows.append(f"| {preset} | {m.params / 1e6:,.2f}M | {m.states_bytes / GiB:.2f} GiB | "
                    f"{m.activation_bytes / GiB:.2f} GiB | {m.total_bytes / GiB:.2f} GiB |")
    return "\n".join(rows)


def main() -> None:
    for checkpointing in (False, True):
        print(f"\nmicro-batch of 1 sequence at the preset's context, activation checkpointing "
              f"{'on' if checkpointing else 'off'}:\n{table(checkpointing=checkpointing)}")


if __name__ == "__main__":
    main()
