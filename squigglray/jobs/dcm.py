"""DCM phase 1a: one staged run, or a K x seed x dataset sweep on Ray Tune.

    squigglray dcm run                                      # the packaged config, squigglray/configs/dcm_smoke.yaml
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

import functools
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from squigglray.config import ConfigError, Seeds, config_hash, load_config, packaged_config
from squigglray.dcm.config import DcmConfig, experiment_id
from squigglray.dcm.data import load_pairs
from squigglray.entry import JobArgs, make_command_parser, parse_command, run_module
from squigglray.paths import ArtifactStore
from squigglray.placement import DEFAULTS, MemoryClass, NamedPlacement, Placement, make_placement

PACKAGED_CONFIG = "dcm_smoke"


class DcmSweepOptions(BaseModel):
    """The sweep's grid and where its trials run; none of them changes a trial's config hash."""

    model_config = ConfigDict(extra="forbid", title="sweep options")
    ks: Seeds = Field(default_factory=lambda: [4, 8, 16, 32, 64, 128], description="comma-separated K values")
    seeds: Seeds = Field(default_factory=lambda: [0], description="comma-separated seeds")
    datasets: str | None = Field(None, description="YAML list of dataset specs, e.g. "
                                 "'[{kind: arithmetic, n: 32}, {kind: sudoku, n: 32, holes: 8}]' "
                                 "(default: the config's dataset)", json_schema_extra={"metavar": "YAML"})
    cpus_per_trial: float | None = Field(None, ge=0, description="default: the placement's (1 CPU)")
    gpus_per_trial: float | None = Field(None, ge=0, description="e.g. 1: each trial declares a GPU "
                                         "(default: the placement's, no GPU)")
    memory_class: MemoryClass | None = Field(None, description="minimum GPU memory per trial: 16g, 32g, 40g or 80g")
    accelerator_type: str | None = Field(None, description="e.g. A100: trials only on those GPUs")
    placement: NamedPlacement = Field(None, description="start from this workload's cluster default "
                                      f"(squigglray.placement.DEFAULTS: {', '.join(sorted(DEFAULTS))}), e.g. dcm",
                                      json_schema_extra={"metavar": "WORKLOAD"})

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: str | None) -> str | None:
        parse_datasets(v)  # each spec is checked by loading it
        return v

    def dataset_specs(self) -> list[dict] | None:
        import yaml

        return yaml.safe_load(self.datasets) if self.datasets else None

    def trial_placement(self, cfg: DcmConfig) -> Placement:
        return trial_placement(cfg, self.cpus_per_trial, self.gpus_per_trial, self.placement,
                               memory_class=self.memory_class,
                               accelerator_type=self.accelerator_type)


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


COMMANDS = {
    "run": ("Seed 001's stages on one config: Q/A diagnostics, joint Q-A, greedy spot check, with gates.",
            [JobArgs]),
    "sweep": ("K x seed x dataset trials on Ray Tune (joint stage): convergence, exact match, losses, steps per K.",
              [JobArgs, DcmSweepOptions]),
}


def make_parser():
    """The parser of `python -m squigglray.jobs.dcm` and of `squigglray dcm`."""
    return make_command_parser("squigglray dcm", __doc__, COMMANDS)


def print_sweep_table(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"DCM sweep {out['sweep_id']}")
    for col in ("dataset", "K", "converged", "greedy exact", "seed rule", "steps"):
        t.add_column(col, justify="left" if col == "dataset" else "right")
    for r in out["table"]:
        t.add_row(r["dataset"], str(r["k"]), f"{r['convergence_rate']:.0%}", f"{r['exact_match_rate']:.0%}",
                  f"{r['seed_rule_rate']:.0%}", "-" if r["steps_to_converge"] is None else f"{r['steps_to_converge']:.0f}")
    Console().print(t)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    command, (job, *rest) = parse_command(make_parser(), argv)
    cfg = load_config(DcmConfig, job.config or packaged_config(PACKAGED_CONFIG), job.overrides)
    log = functools.partial(print, flush=True)  # under `ray job submit` stdout is a file: lines go out live
    if command == "run":
        from squigglray.dcm.run import run_one  # torch: imported by the run, not by --help

        out = run_one(cfg, job.data_dir, log=log)
        print(f"report: {out['experiment_id']}/report.md")
        return out
    (opts,) = rest
    out = run_sweep(cfg, opts.ks, opts.seeds, opts.dataset_specs(), job.data_dir, log=log,
                    placement=opts.trial_placement(cfg))
    print_sweep_table(out)
    return out


if __name__ == "__main__":
    run_module(__spec__.name)
