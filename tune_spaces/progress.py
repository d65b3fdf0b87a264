"""Quiet Tune runs: one progress bar per experiment instead of Tune's status tables.

Ray Tune prints a status table every 30 s and a config box per trial (thousands of lines for the
quickstart). By default our sweeps run Tune at verbose=0 with a `ProgressBar` callback: one tqdm bar
on stderr counting the trials' units (training steps, probes) against the total. `--verbose` on the
job (or SQUIGGLRAY_VERBOSE=1) gives Tune's own output back; every trial's results are in its folder
under the experiment's storage either way (result.json, progress.csv).
"""

from __future__ import annotations

import os
from typing import Any

from ray.tune import Callback

from squigglray.entry import VERBOSE_ENV


def tune_verbosity() -> int:
    """Tune's verbose level for our sweeps: 0 (the progress bar) unless SQUIGGLRAY_VERBOSE is set."""
    value = os.environ.get(VERBOSE_ENV, "").strip()
    if not value:
        return 0
    try:
        return max(0, min(3, int(value)))
    except ValueError:
        return 2


def callbacks_for(desc: str, total: int, key: str = "step", unit: str = "step") -> list[Callback]:
    """The progress bar when Tune itself is quiet, nothing when it prints its own tables."""
    return [ProgressBar(desc, total, key, unit)] if tune_verbosity() == 0 else []


class ProgressBar(Callback):
    """One bar for a whole experiment: the sum over trials of their latest `key` (a trial that ends
    counts in full), against `total`. Restored experiments start the bar where they are."""

    def __init__(self, desc: str, total: int, key: str = "step", unit: str = "step"):
        self.desc, self.total, self.key, self.unit = desc, int(total), key, unit
        self.done: dict[str, float] = {}
        self._bar = None

    def __getstate__(self) -> dict[str, Any]:  # Tune saves callbacks with the experiment state
        return {**self.__dict__, "_bar": None}

    def _update(self, loss: float | None = None) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, dynamic_ncols=True)
        self._bar.n = min(self.total, int(sum(self.done.values())))
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        self._bar.refresh()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if self.key in result:
            self.done[trial.trial_id] = float(result[self.key])
        loss = result.get("loss")
        self._update(float(loss) if isinstance(loss, (int, float)) else None)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        per_trial = self.total / max(1, len(trials))
        self.done[trial.trial_id] = max(self.done.get(trial.trial_id, 0.0), per_trial)
        self._update()

    def on_experiment_end(self, trials: list, **info) -> None:
        if self._bar is not None:
            self._update()
            self._bar.close()
            self._bar = None
