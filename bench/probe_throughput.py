"""Probes per minute through Ray Tune against the same probes in a plain Python loop (issue 5).

    python bench/probe_throughput.py                  # the quickstart's probe size (configs/probe.yaml), tiny model
    python bench/probe_throughput.py --base tiny      # a trained base from the data dir instead of a fresh init

The same plan (base, eval probes, targets) and the same (target, seed) probes run twice: in one
process, one after another, with torch using every CPU; then as Tune trials (one CPU and one torch
thread per trial, actors reused), the way `squigglray probe` runs them. Weights do not change the
cost, so by default the base is a freshly initialized tiny model with a tokenizer trained on the
families. Target: Tune's overhead at most 20% (tune rate >= plain rate / 1.2).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from squigglray.config import load_config
from squigglray.jobs.probe import SweepOptions, grid, run_trials
from squigglray.config import packaged_config
from squigglray.paths import ArtifactStore
from squigglray.probes.adapter import LoraProbeAdapter, ProbeJob
from squigglray.probes.config import ProbeConfig
from squigglray.probes.plan import build_plan, write_plan


def fresh_base(folder: str) -> str:
    from squigglray.families import list_families, sample
    from squigglray.families.trace import format_prompt
    from squigglray.models import build_model, train_tokenizer

    texts = [format_prompt(x.problem) + x.trace for f in list_families() for x in sample(f, 40, 0)]
    tok = train_tokenizer(texts, 512)
    build_model("tiny", tok, 320, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default=None, help="checkpoint folder or trained preset (default: a fresh tiny model)")
    ap.add_argument("--families", default="gcd_lcm,mod_power", help="families of the grid (controls are added)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = load_config(ProbeConfig, packaged_config("probe"),
                      [f"families=[{a.families}]", f"seeds=[{a.seeds}]", *a.overrides])
    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    cpus = int(ray.cluster_resources()["CPU"])
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(f"{tmp}/data")
        base = a.base or fresh_base(f"{tmp}/base")
        specs = grid(cfg)
        plan = build_plan(cfg, base, store, "bench-plain")
        write_plan(store, plan)
        torch.set_num_threads(cpus)
        t0 = time.perf_counter()
        for spec in specs:
            LoraProbeAdapter().run(ProbeJob(plan, spec["target"], spec["seed"]), store)
        plain = time.perf_counter() - t0

        tuned = plan.model_copy(update={"experiment_id": "bench-tune"})
        write_plan(store, tuned)
        t1 = time.perf_counter()
        run_trials(store, tuned, specs, SweepOptions().resolved())
        tune_s = time.perf_counter() - t1
    n = len(specs)
    plain_rate, tune_rate = 60 * n / plain, 60 * n / tune_s
    print(f"{n} probes ({cfg.finetune.steps} steps x {cfg.finetune.batch_size}, {len(plan.eval_a)}+{len(plan.eval_b)} "
          f"eval instances), {cpus} CPUs")
    print(f"plain loop ({cpus} torch threads): {plain:7.1f} s  {plain_rate:5.2f} probes/min")
    print(f"Ray Tune ({cpus} trials x 1 thread): {tune_s:7.1f} s  {tune_rate:5.2f} probes/min")
    print(f"tune/plain rate ratio: {tune_rate / plain_rate:.3f}  (Tune overhead {100 * (plain_rate / tune_rate - 1):+.1f}%;"
          f" target <= +20%)")


if __name__ == "__main__":
    main()
