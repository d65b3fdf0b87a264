"""Examples/s of the batched DCM optimizer (B examples as one [B, K, d] tensor) against optimizing
the same examples one at a time, with the same steps and no early freezing (the random-init model
converges nowhere, so every example runs every step on every side).

Two one-at-a-time baselines, both checked to end at the batched optimizer's losses:
- seed 001's loop (`squigglray.dcm.reference`): per example torch's AdamW on c and the seed's
  `generator_loss_fn` per mode, the code researchers run today;
- this optimizer at B=1: the same code one example at a time, so batching is all that differs.

    python bench/dcm_batching.py                  # tiny preset architecture, B=16, K=16, 30 steps, joint Q-A
    python bench/dcm_batching.py --batch 64 --model Qwen/Qwen2.5-1.5B --device cuda --bf16

Freezing is off (stop_accuracy above 1), so a trained --model also runs every step on every side.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from squigglray.config import build_config
from squigglray.dcm.config import DcmConfig
from squigglray.dcm.data import arithmetic_pairs
from squigglray.dcm.optimizer import optimize
from squigglray.dcm.reference import optimize_one
from squigglray.dcm.slots import freeze


def close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-3 * max(1.0, abs(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--preset", default="tiny", help="random-init architecture, unless --model is given")
    ap.add_argument("--model", help="a hub id or save_pretrained folder instead (squigglray.models.load_model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="load the model in bf16 (the DCM default on CUDA)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    if args.model:
        from squigglray.models import load_model

        model, tok = load_model(args.model, dtype=dtype)
    else:
        from squigglray.families import list_families, sample
        from squigglray.families.trace import format_prompt
        from squigglray.models import build_model, train_tokenizer

        texts = [format_prompt(x.problem) + x.trace for f in list_families() for x in sample(f, 20, 0)]
        tok = train_tokenizer(texts, vocab_size=512)
        model = build_model(args.preset, tok, 320, seed=0).to(dtype)
    fz = freeze(model.to(args.device), tok, {"q": "Question", "a": "Answer"})
    pairs = arithmetic_pairs(args.batch, seed=0)
    cfg = build_config(DcmConfig, {"k": args.k, "batch_size": args.batch, "optim": {"steps": args.steps, "restarts": 0}})
    cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"stop_accuracy": float("inf")})})
    warm = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"steps": 2})})
    optimize(fz, warm, pairs[:2])
    optimize_one(fz, warm, pairs[0])
    one = cfg.model_copy(update={"batch_size": 1})
    times: dict[str, list[float]] = {"batched": [], "seed": [], "b1": []}
    for _ in range(args.repeat):  # interleaved, so drifting machine load hits every side alike
        t0 = time.perf_counter()
        batched = optimize(fz, cfg, pairs)
        times["batched"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        seed = [optimize_one(fz, cfg, p)[0][-1] for p in pairs]
        times["seed"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        alone = [optimize(fz, one, [p])[0] for p in pairs]
        times["b1"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    final = [r.curve[-1] for r in batched]
    same = {"seed": all(close(a, b) for a, b in zip(seed, final)),
            "b1": all(close(a.curve[-1], b) for a, b in zip(alone, final))}
    what = args.model or f"{args.preset} preset (random init)"
    print(f"{what}, {dtype}, {args.device}, {args.threads} threads, B={args.batch}, K={args.k}, "
          f"{args.steps} steps, joint Q-A, median of {args.repeat}")
    names = {"batched": "batched optimizer", "seed": "seed 001's loop", "b1": "this optimizer, B=1"}
    for k, name in names.items():
        print(f"{name:22s} {med[k]:7.2f} s  {args.batch / med[k]:7.2f} examples/s")
    for k in ("seed", "b1"):
        ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(times[k], times["batched"]))
        print(f"speed-up over {names[k]}: {med[k] / med['batched']:.2f}x  (per repeat: {ratios}; "
              f"same final losses: {same[k]})")


if __name__ == "__main__":
    main()
