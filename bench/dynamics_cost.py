"""What a dynamics experiment costs on GPUs, from its config, its FLOPs and a stated GPU throughput,
with this CPU's measured training throughput beside it (the same Trainer, on the tiny preset).

    python bench/dynamics_cost.py --config examples/dynamics_350m.yaml --seeds 3
    python bench/dynamics_cost.py --config examples/dynamics_1.3b.yaml --seeds 3 --gpu-tflops 989 --mfu 0.4

FLOPs a token: `models.sizing.train_flops_per_token` (6 per matrix parameter, causal attention,
activation checkpointing's second forward). GPU time = tokens x FLOPs / (peak bf16 FLOP/s x MFU):
H100 SXM dense bf16 peak 989 TFLOP/s (NVIDIA's datasheet, without sparsity), MFU 0.4 (a stated
assumption, typical of well-tuned DDP at 350M-1.3B; `scripts/gpu_check.sh` measures tokens/s on a
real GPU). Memory per worker: `models.sizing.training_memory` (a floor).
"""

from __future__ import annotations

import argparse
import io
import time

from squigglray.config import build_config, load_config
from squigglray.models.presets import REAL_VOCAB
from squigglray.models.sizing import GiB, param_count, train_flops_per_token, training_memory
from squigglray.training import BaseTrainConfig
from squigglray.training.stream import rows_per_step


def cpu_tokens_per_s(steps: int = 12) -> tuple[float, float]:
    """Trained tokens/s of the Trainer on the tiny preset here, and the FLOP/s that is."""
    from tqdm import tqdm

    from squigglray.models import build_model, train_tokenizer
    from squigglray.training import Trainer
    from squigglray.training.callbacks import ProgressCallback
    from squigglray.training.data import CurriculumSampler, build_pool

    cfg = build_config(BaseTrainConfig, {}, [f"train.steps={steps}", "data.pool_per_family_level=60"])
    pool = build_pool(cfg)
    tok = train_tokenizer(pool.texts(), cfg.model.vocab_size)
    sampler = CurriculumSampler(cfg, pool, tok)
    model = build_model("tiny", tok, cfg.model.max_seq_len, seed=0)
    Trainer(model, cfg.train.model_copy(update={"steps": 2}), sampler.batch).fit()  # warm-up
    t0 = time.perf_counter()
    state = Trainer(model, cfg.train, sampler.batch, [ProgressCallback(lambda **kw: tqdm(file=io.StringIO(), **kw))]).fit()
    rate = state.tokens_seen / (time.perf_counter() - t0)
    return rate, rate * train_flops_per_token("tiny", len(tok), cfg.model.max_seq_len)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4, help="data-parallel workers a seed (memory per worker)")
    ap.add_argument("--gpu-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s of one GPU (H100 SXM)")
    ap.add_argument("--mfu", type=float, default=0.4, help="the fraction of that peak training reaches")
    ap.add_argument("--usd-per-gpu-hour", type=float, default=0.0, help="0: no price")
    a = ap.parse_args()
    cfg = load_config(BaseTrainConfig, a.config, [])
    m, t = cfg.model, cfg.train
    vocab = m.vocab_size if m.preset in ("nano", "tiny") else REAL_VOCAB
    per_token = train_flops_per_token(m.preset, vocab, m.max_seq_len, t.activation_checkpointing)
    tokens = t.steps * rows_per_step(cfg) * m.max_seq_len
    flops = per_token * tokens
    gpu_s = flops / (a.gpu_tflops * 1e12 * a.mfu)
    rows = rows_per_step(cfg) // a.workers
    mem = training_memory(m.preset, vocab, t.micro_batch_size or rows, m.max_seq_len, t.activation_checkpointing)
    print(f"{cfg.name}: {m.preset}, {param_count(m.preset, vocab) / 1e6:,.0f}M parameters, context {m.max_seq_len}, "
          f"activation checkpointing {'on' if t.activation_checkpointing else 'off'}")
    print(f"  {per_token / 1e9:.2f} GFLOP a trained token; {t.steps:,} steps x {rows_per_step(cfg) * m.max_seq_len:,} "
          f"tokens = {tokens / 1e9:.2f}B tokens, {flops:.2e} FLOP a seed")
    print(f"  GPU: {gpu_s / 3600:,.1f} GPU-hours a seed at {a.gpu_tflops:g} TFLOP/s x MFU {a.mfu:g} "
          f"({gpu_s / 3600 / a.workers:,.1f} h wall on {a.workers} GPUs); {a.seeds} seeds: {a.seeds * gpu_s / 3600:,.0f} GPU-hours"
          + (f", ${a.seeds * gpu_s / 3600 * a.usd_per_gpu_hour:,.0f}" if a.usd_per_gpu_hour else ""))
    states = mem.states_bytes / (a.workers if t.parallel == "fsdp" else 1)  # FSDP shards them over the workers
    print(f"  memory a worker (floor): {(states + mem.activation_bytes) / GiB:.1f} GiB ({states / GiB:.1f} states"
          f"{f' (FSDP: 1/{a.workers} of {mem.states_bytes / GiB:.1f})' if t.parallel == 'fsdp' else ''} + "
          f"{mem.activation_bytes / GiB:.1f} activations of a {t.micro_batch_size or rows}-row micro-batch)")
    rate, cpu_flops = cpu_tokens_per_s()
    print(f"  this CPU, measured: {rate:,.0f} tokens/s on tiny = {cpu_flops / 1e9:.1f} GFLOP/s; one seed here would "
          f"take {flops / cpu_flops / 86400 / 365:,.1f} years ({a.gpu_tflops * 1e12 * a.mfu / cpu_flops:,.0f}x slower "
          f"than the GPU estimate)")


if __name__ == "__main__":
    main()
