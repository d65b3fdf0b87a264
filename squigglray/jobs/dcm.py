"""DCM phase 1a: one staged run, or a K x seed x dataset sweep on Ray Tune.

    squigglray dcm run --config squigglray/configs/dcm_smoke.yaml
    squigglray dcm sweep --config squigglray/configs/dcm_smoke.yaml --ks 4,8,16,32 --seeds 0,1
    ray job submit --working-dir . -- python -m squigglray.jobs.dcm sweep --config my.yaml --gpus-per-trial 1

Artifacts: experiments/dcm-<name>-<hash>/result.json (every row, the stage summaries and the
thresholds table), slots.pt (c* per pair and stage), report.md; a sweep adds
experiments/<sweep id>/sweep.json, sweep.md and plots (convergence vs K, loss curves).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from typing import Any

import torch

from squigglray.config import ConfigError, config_hash, load_config
from squigglray.dcm.config import DcmConfig
from squigglray.dcm.data import load_pairs, load_paraphrases
from squigglray.dcm.run import run_stages
from squigglray.dcm.slots import freeze
from squigglray.paths import ArtifactStore


def experiment_id(cfg: DcmConfig) -> str:
    return f"dcm-{cfg.name}-k{cfg.k}-s{cfg.seed}-{config_hash(cfg)[:10]}"


def load_frozen(cfg: DcmConfig, store: ArtifactStore):
    from squigglray.models import load_model

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.startswith("cuda"))
    model, tok = load_model(cfg.model, store, dtype=torch.bfloat16 if bf16 else torch.float32)
    return freeze(model.to(device), tok, cfg.mode_words)


def pairs_for(cfg: DcmConfig):
    pairs = load_pairs(dict(cfg.dataset))
    return load_paraphrases(cfg.paraphrases, pairs) if cfg.paraphrases else pairs


def run_one(cfg: DcmConfig, data_dir: str | None = None, log=print, write: bool = True) -> dict[str, Any]:
    """The staged run of one config; writes its artifacts under experiments/<id>/."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    store = ArtifactStore(data_dir)
    pairs = pairs_for(cfg)
    fz = load_frozen(cfg, store)
    out = run_stages(fz, cfg, pairs, log=log)
    slots = out.pop("slots")
    exp = experiment_id(cfg)
    out["experiment_id"] = exp
    if write:
        from squigglray.report.dcm_report import write_run_report

        store.write_json(f"{store.experiment_dir(exp)}/result.json", out)
        buf = io.BytesIO()
        torch.save(slots, buf)
        store.write_bytes(f"{store.experiment_dir(exp)}/slots.pt", buf.getvalue())
        write_run_report(store, exp, out)
    return out


def run_sweep(cfg: DcmConfig, ks: list[int], seeds: list[int], datasets: list[dict] | None, data_dir: str | None,
              cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, log=print) -> dict[str, Any]:
    """K x seed x dataset trials on Ray Tune (joint stage only), then the per-K table and plots."""
    from squigglray.jobs.ray_runtime import ensure_ray
    from squigglray.report.dcm_report import write_sweep_report
    from tune_spaces.dcm_sweep import run_dcm_trials

    store = ArtifactStore(data_dir)
    configs = [cfg.model_copy(update={"k": k, "seed": s, "dataset": d, "stages": ["joint"]}).model_dump(mode="json")
               for d in (datasets or [cfg.dataset]) for k in ks for s in seeds]
    sweep_id = f"dcm-sweep-{cfg.name}-{config_hash({'configs': configs})[:10]}"
    ensure_ray()
    grid = run_dcm_trials(configs, store.location, {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
                          store.full(f"{store.experiment_dir(sweep_id)}/tune"), f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
                          threads=max(1, int(cpus_per_trial)))
    failed = [r for r in grid if r.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} DCM trial(s) failed: {failed[0].error}")
    trials = [{**r.metrics} for r in grid]
    results = {t["experiment_id"]: store.read_json(f"{store.experiment_dir(t['experiment_id'])}/result.json")
               for t in trials}
    out = write_sweep_report(store, sweep_id, trials, results)
    log(f"sweep {sweep_id}: {len(trials)} trials; report {store.full(store.experiment_dir(sweep_id))}/sweep.md")
    return out


def parse_ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{what} {text!r} must be comma-separated integers") from None
    if not vals or min(vals) < 0 or len(set(vals)) != len(vals):
        raise ConfigError(f"--{what} {text!r} must name distinct non-negative integers")
    return vals


def parse_datasets(text: str | None) -> list[dict] | None:
    """--datasets: a YAML list of load_pairs specs; each is checked by loading it."""
    import yaml

    if not text:
        return None
    try:
        specs = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--datasets is not valid YAML: {e}") from None
    if not isinstance(specs, list) or not specs or not all(isinstance(d, dict) and "kind" in d for d in specs):
        raise ConfigError(f"--datasets must be a YAML list of mappings with a 'kind', got {text!r}")
    for d in specs:
        load_pairs(dict(d))
    return specs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "sweep"])
    ap.add_argument("--config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--ks", default="4,8,16,32,64,128")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--datasets", default=None, help="YAML list of dataset specs")
    ap.add_argument("--cpus-per-trial", type=float, default=1.0)
    ap.add_argument("--gpus-per-trial", type=float, default=0.0)
    ap.add_argument("--data-dir")
    a = ap.parse_args(argv)
    cfg = load_config(DcmConfig, a.config, a.overrides)
    if a.command == "run":
        out = run_one(cfg, a.data_dir)
        print(json.dumps({k: v["summary"] for k, v in out["stages"].items()}, indent=2, default=str))
    else:
        run_sweep(cfg, parse_ints(a.ks, "ks"), parse_ints(a.seeds, "seeds"), parse_datasets(a.datasets), a.data_dir,
                  a.cpus_per_trial, a.gpus_per_trial)


if __name__ == "__main__":
    main()
