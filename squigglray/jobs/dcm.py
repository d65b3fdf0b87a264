"""DCM phase 1a: one staged run, or a K x seed x dataset sweep on Ray Tune.

    squigglray dcm run --config squigglray/configs/dcm_smoke.yaml
    squigglray dcm sweep --config squigglray/configs/dcm_smoke.yaml --ks 4,8,16,32 --seeds 0,1
    ray job submit --working-dir . -- python -m squigglray.jobs.dcm sweep --config my.yaml --gpus-per-trial 1
    ray job submit --working-dir . -- python -m squigglray.jobs.dcm sweep --config my.yaml --placement dcm

A trial's placement: `placement:` in the config (or --placement <workload>, a cluster default of
squigglray.placement.DEFAULTS), with --cpus-per-trial / --gpus-per-trial / --memory-class /
--accelerator-type laid over it; it is checked against the cluster before any trial starts.

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
from squigglray.placement import DEFAULTS, Placement, default_for, make_placement


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


def trial_placement(cfg: DcmConfig, cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
                    placement: Placement | None = None, **update: Any) -> Placement:
    """`placement`, else the config's, else one CPU; then the flags: cpus_per_trial and gpus_per_trial
    replace the base's values unless they are None or, over a given placement, their defaults (1, 0);
    `update` (memory_class=..., accelerator_type=...) sets fields whose value is not None."""
    base = placement or cfg.placement
    changes = {k: v for k, v in update.items() if v is not None}
    if cpus_per_trial is not None and (base is None or cpus_per_trial != 1.0):
        changes["cpus"] = cpus_per_trial
    if gpus_per_trial is not None and (base is None or gpus_per_trial != 0.0):
        changes["gpus"] = gpus_per_trial
    try:
        return make_placement("the DCM trial placement", **{**(base or Placement()).model_dump(), **changes})
    except ValueError as e:
        raise ConfigError(str(e)) from None


def run_sweep(cfg: DcmConfig, ks: list[int], seeds: list[int], datasets: list[dict] | None, data_dir: str | None,
              cpus_per_trial: float | None = None, gpus_per_trial: float | None = None, log=print,
              placement: Placement | None = None) -> dict[str, Any]:
    """K x seed x dataset trials on Ray Tune (joint stage only), then the per-K table and plots.
    Where trials run: `trial_placement`; a placement no node can hold raises PlacementError first."""
    from actors.placement import check_feasible
    from squigglray.jobs.ray_runtime import ensure_ray
    from squigglray.placement import to_tune_resources
    from squigglray.report.dcm_report import write_sweep_report
    from tune_spaces.dcm_sweep import run_dcm_trials
    from tune_spaces.probe_sweep import trial_lost

    store = ArtifactStore(data_dir)
    p = trial_placement(cfg, cpus_per_trial, gpus_per_trial, placement)
    configs = [cfg.model_copy(update={"k": k, "seed": s, "dataset": d, "stages": ["joint"]}).model_dump(mode="json")
               for d in (datasets or [cfg.dataset]) for k in ks for s in seeds]
    sweep_id = f"dcm-sweep-{cfg.name}-{config_hash({'configs': configs})[:10]}"
    ensure_ray()
    check_feasible(p, what=f"a DCM trial of {sweep_id}")
    name = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    trials: list[dict] = []
    todo = configs
    for rnd in range(2):  # a second round for trials lost with their node before they ran (Tune does not retry those)
        grid = run_dcm_trials(todo, store.location, to_tune_resources(p),
                              store.full(f"{store.experiment_dir(sweep_id)}/tune"),
                              name + (f"-round{rnd + 1}" if rnd else ""), threads=max(1, int(p.cpus)))
        trials += [{**r.metrics} for r in grid if r.error is None]
        errors = [r.error for r in grid if r.error is not None]
        finished = {t["experiment_id"] for t in trials}
        todo = [c for c in todo if experiment_id(DcmConfig.model_validate(c)) not in finished]
        if not todo or not all(trial_lost(e) for e in errors):
            break
    if todo:
        raise RuntimeError(f"{len(todo)} DCM trial(s) failed: {errors[0] if errors else 'no result'}")
    order = {experiment_id(DcmConfig.model_validate(c)): i for i, c in enumerate(configs)}
    trials.sort(key=lambda t: order.get(t["experiment_id"], len(order)))
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
    ap.add_argument("--cpus-per-trial", type=float, default=None, help="default: the placement's (1 CPU)")
    ap.add_argument("--gpus-per-trial", type=float, default=None, help="default: the placement's (no GPU)")
    ap.add_argument("--memory-class", default=None, help="minimum GPU memory per trial: 16g, 32g, 40g or 80g")
    ap.add_argument("--accelerator-type", default=None, help="e.g. A100: trials only on those GPUs")
    ap.add_argument("--placement", default=None, choices=sorted(DEFAULTS),
                    help="start from this workload's cluster default (squigglray.placement.DEFAULTS), e.g. dcm")
    ap.add_argument("--data-dir")
    a = ap.parse_args(argv)
    cfg = load_config(DcmConfig, a.config, a.overrides)
    if a.command == "run":
        out = run_one(cfg, a.data_dir)
        print(json.dumps({k: v["summary"] for k, v in out["stages"].items()}, indent=2, default=str))
    else:
        base = default_for(a.placement) if a.placement else None
        p = trial_placement(cfg, a.cpus_per_trial, a.gpus_per_trial, base, memory_class=a.memory_class,
                            accelerator_type=a.accelerator_type)
        run_sweep(cfg, parse_ints(a.ks, "ks"), parse_ints(a.seeds, "seeds"), parse_datasets(a.datasets), a.data_dir,
                  placement=p)


if __name__ == "__main__":
    main()
