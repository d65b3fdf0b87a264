"""The SIGKILL fault drill of the Tune trials (a test hook, tune_spaces.trial_hooks): the trial's
process kills itself at a step, once, and Tune must resume or rerun it.

    run_dynamics(cfg, opts, data_dir, hooks=[KillOnce(11)])               # each seed trial dies once
    run_probe_sweep(cfg, exp, base, data_dir, hooks=[KillOnce(3)])        # one probe of the sweep dies

A seed trial's marker is runs/<run_id>/.fault-drill (one per run: every seed dies once); a probe
trial's is experiments/<EXP_ID>/.fault-drill (one per sweep: the first probe to reach the step dies,
and the marker holds its probe id). This module is pickled by value, so the Ray workers, which do
not have tests/ on their path, can run it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import ray.cloudpickle

from squigglray.training.callbacks import TrainerCallback

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

MARKER = ".fault-drill"


class _Kill(TrainerCallback):
    """SIGKILL this process at `step`, unless `marker` exists. The marker is created atomically, so
    of the trials sharing one marker exactly one dies; it records `note`."""

    def __init__(self, step: int, marker: Path, note: str = ""):
        self.step, self.marker, self.note = step, marker, note

    def on_step_end(self, state, model, batch):
        if state.step != self.step:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, (self.note or str(os.getpid())).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


class KillOnce:
    """A trial hook: SIGKILL the trial at `step`, once per marker."""

    def __init__(self, step: int):
        self.step = step

    def __repr__(self) -> str:
        return f"KillOnce({self.step})"

    def __call__(self, trial):
        store = trial.store
        if trial.kind == "seed":
            marker, note = Path(store.local_path(f"{store.run_dir(trial.run_id)}/{MARKER}")), ""
        else:
            marker = Path(store.local_path(f"{store.experiment_dir(trial.experiment)}/{MARKER}"))
            note = trial.probe_id
        marker.parent.mkdir(parents=True, exist_ok=True)
        return _Kill(self.step, marker, note)
