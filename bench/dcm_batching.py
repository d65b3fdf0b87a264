"""Examples/s of the batched DCM optimizer (B examples as one [B, K, d] tensor) against optimizing
the same examples one at a time, with the same steps and no early freezing (the random-init model
converges nowhere, so every example runs every step in both).

    python bench/dcm_batching.py                  # tiny preset architecture, B=16, K=16, 30 steps, joint Q-A
    python bench/dcm_batching.py --batch 64 --preset tiny --device cuda
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
from squigglray.dcm.slots import freeze


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from squigglray.families import list_families, sample
    from squigglray.families.trace import format_prompt
    from squigglray.models import build_model, train_tokenizer

    texts = [format_prompt(x.problem) + x.trace for f in list_families() for x in sample(f, 20, 0)]
    tok = train_tokenizer(texts, vocab_size=512)
    model = build_model(args.preset, tok, 320, seed=0).to(args.device)
    fz = freeze(model, tok, {"q": "Question", "a": "Answer"})
    pairs = arithmetic_pairs(args.batch, seed=0)
    cfg = build_config(DcmConfig, {"k": args.k, "batch_size": args.batch,
                                   "optim": {"steps": args.steps, "restarts": 0, "stop_accuracy": 1.0}})
    optimize(fz, cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"steps": 2})}), pairs[:2])  # warm-up
    one = cfg.model_copy(update={"batch_size": 1})
    t_batched, t_alone = [], []
    for _ in range(args.repeat):  # interleaved, so drifting machine load hits both sides alike
        t0 = time.perf_counter()
        batched = optimize(fz, cfg, pairs)
        t_batched.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        alone = [optimize(fz, one, [p])[0] for p in pairs]
        t_alone.append(time.perf_counter() - t0)
    tb, ta = statistics.median(t_batched), statistics.median(t_alone)
    same = all(abs(a.curve[-1] - b.curve[-1]) < 1e-3 * max(1.0, abs(b.curve[-1])) for a, b in zip(batched, alone))
    frozen = sum(r.converged for r in batched)
    print(f"{args.preset} preset (random init), {args.device}, {args.threads} threads, B={args.batch}, K={args.k}, "
          f"{args.steps} steps, joint Q-A ({frozen} examples froze early), median of {args.repeat}")
    print(f"batched:        {tb:7.2f} s  {args.batch / tb:7.2f} examples/s")
    print(f"one at a time:  {ta:7.2f} s  {args.batch / ta:7.2f} examples/s")
    ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(t_alone, t_batched))
    print(f"speed-up batched/one-at-a-time: {ta / tb:.2f}x  (per repeat: {ratios}; same final losses: {same})")

if __name__ == "__main__":
    main()
