"""Ray Tune for DCM: one trial per (K, seed, dataset); each trial runs the joint stage and reports
its summary. Trials declare their resources through the dict of `squigglray.placement.to_tune_resources`
(e.g. {"cpu": 1, "gpu": 1, "gpu_mem_16g": 1}); squigglray.jobs.dcm checks it against the cluster first."""

from __future__ import annotations

import os
from typing import Any

from ray import tune
from tune_spaces.metrics import SweepMetrics
from tune_spaces.progress import callbacks_for, tune_verbosity


def dcm_trial(config: dict[str, Any]) -> None:
    import torch

    from squigglray.dcm.config import DcmConfig
    from squigglray.dcm.run import run_one

    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    cfg = DcmConfig.model_validate(config["dcm"])
    out = run_one(cfg, config["data_dir"], log=lambda *_: None, write=True)
    joint = out["stages"].get("joint") or next(iter(out["stages"].values()))
    s = joint["summary"]
    tune.report({"k": cfg.k, "seed": cfg.seed, "dataset": cfg.dataset.get("kind"),
                 "convergence_rate": s["convergence_rate"], "exact_match_rate": s["exact_match_rate"],
                 "seed_rule_rate": s["seed_rule_rate"], "steps_to_converge": s["steps_to_converge"] or -1,
                 "seconds_to_converge": s["seconds_to_converge"] or -1,
                 **{f"final_loss_{m}": v for m, v in s["final_loss"].items()},
                 "experiment_id": out["experiment_id"]})


def run_dcm_trials(configs: list[dict], data_dir: str, resources: dict[str, float], storage: str, name: str,
                   threads: int = 1, max_failures: int = 1) -> tune.ResultGrid:
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    space = {"dcm": tune.grid_search(configs), "data_dir": data_dir, "threads": threads}
    tuner = tune.Tuner(
        tune.with_resources(dcm_trial, {k: v for k, v in resources.items() if v}),
        param_space=space,
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=storage,
                                  failure_config=tune.FailureConfig(max_failures=max_failures),
                                  verbose=tune_verbosity(),  # quiet: one bar over the trials (tune_spaces.progress)
                                  callbacks=[SweepMetrics("dcm"),
                                             *callbacks_for("DCM trials", len(configs), key="", unit="trial")]),
    )
    return tuner.fit()
