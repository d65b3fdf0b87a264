"""Sweep metrics for the Ray dashboard and Prometheus: a Tune callback, so the trainables stay as they are.

    tune.RunConfig(..., callbacks=[SweepMetrics("probe")])      # or "dcm", "dynamics"

Tune callbacks run in the driver (the process that calls `Tuner.fit()`); the metrics are created
there on first use and exported by the node's metrics agent as

    ray_squigglray_sweep_trials_total{sweep, group, status}     trials started (each start, retries too) /
                                                                 completed / errored / retried
    ray_squigglray_sweep_trial_seconds_bucket{sweep, status}     wall time of finished trials (Tune's time_total_s)
    ray_squigglray_sweep_steps_total{sweep, group}               training steps reported (the `step` result key)
    ray_squigglray_sweep_loss{sweep, group, trial, metric}       the latest loss of each trial (gauge)
    ray_squigglray_sweep_trials_running{sweep}                   trials running now (gauge)

`group` says what a trial works on: the probe target (a family or control:*) for probe sweeps,
`K=<k>` for DCM sweeps, the training run's name for dynamics sweeps, else "" (override with `group=`,
a module-level function of the trial config). `metric` is the result key the loss came from:
`loss`, `train_loss_last`, `final_loss` or `final_loss_<mode>`.

Ray's metrics agent drops a gauge series about 20 s (two default report intervals) after its last
`set`, so the callback sets its gauges again every few seconds while the sweep runs (`on_step_end`):
a finished trial's last loss stays visible until the experiment ends, then ages out.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ray import tune
from ray.util import metrics

TRIAL_BOUNDS = [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400]
LOSS_KEYS = ("loss", "train_loss_last", "final_loss")
LOSS_PREFIX = "final_loss_"
REFRESH_S = 5.0  # well under the agent's gauge TTL (2 x metrics_report_interval_ms, 20 s by default)


def trial_group(config: dict[str, Any]) -> str:
    """The default `group` tag of a trial of one of squigglray's sweeps."""
    if isinstance(config.get("probe"), dict) and "target" in config["probe"]:
        return str(config["probe"]["target"])
    if isinstance(config.get("dcm"), dict) and "k" in config["dcm"]:
        return f"K={config['dcm']['k']}"
    if isinstance(config.get("train"), dict) and config["train"].get("name"):
        return str(config["train"]["name"])
    return ""


def loss_values(result: dict[str, Any]) -> dict[str, float]:
    """The loss-like numbers of one Tune result, by key."""
    out = {}
    for k, v in result.items():
        if (k in LOSS_KEYS or k.startswith(LOSS_PREFIX)) and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


class SweepMetrics(tune.Callback):
    """Counts trials by status, training steps, trial wall time; keeps each trial's latest loss as a gauge."""

    def __init__(self, sweep: str, group: Callable[[dict[str, Any]], str] | None = None, step_key: str = "step"):
        self.sweep, self.group_fn, self.step_key = sweep, group, step_key
        self._m: dict[str, Any] | None = None
        self._steps: dict[str, int] = {}  # trial id -> last step seen
        self._started: dict[str, float] = {}  # trial id -> monotonic start
        self._running: set[str] = set()
        self._losses: dict[tuple[str, str, str], float] = {}  # (group, trial, metric) -> latest value
        self._refreshed = 0.0

    # Tune pickles its run config (callbacks included) into the experiment folder for Tuner.restore:
    # the metric objects stay behind and are created again on first use.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_m=None, _steps={}, _started={}, _running=set(), _losses={}, _refreshed=0.0)
        return state

    def _metrics(self) -> dict[str, Any]:
        if self._m is None:
            self._m = {
                "trials": metrics.Counter("squigglray_sweep_trials", "Tune trials by sweep, group and status",
                                          tag_keys=("sweep", "group", "status")),
                "seconds": metrics.Histogram("squigglray_sweep_trial_seconds", "wall time of finished Tune trials",
                                             boundaries=TRIAL_BOUNDS, tag_keys=("sweep", "status")),
                "steps": metrics.Counter("squigglray_sweep_steps", "training steps reported by Tune trials",
                                         tag_keys=("sweep", "group")),
                "loss": metrics.Gauge("squigglray_sweep_loss", "latest loss reported by each Tune trial",
                                      tag_keys=("sweep", "group", "trial", "metric")),
                "running": metrics.Gauge("squigglray_sweep_trials_running", "Tune trials running now",
                                         tag_keys=("sweep",)),
            }
        return self._m

    def _group(self, trial) -> str:
        config = trial.config or {}
        try:
            return str(self.group_fn(config)) if self.group_fn else trial_group(config)
        except Exception:  # noqa: BLE001 - a label must never break a sweep
            return ""

    def _count(self, trial, status: str) -> None:
        self._metrics()["trials"].inc(1, tags={"sweep": self.sweep, "group": self._group(trial), "status": status})

    def _set_running(self) -> None:
        self._metrics()["running"].set(len(self._running), tags={"sweep": self.sweep})

    def _set_loss(self, group: str, trial: str, metric: str, value: float) -> None:
        self._losses[(group, trial, metric)] = value
        self._metrics()["loss"].set(value, tags={"sweep": self.sweep, "group": group, "trial": trial, "metric": metric})

    def refresh(self) -> None:
        """Set every gauge again (the agent forgets a gauge that is not set for ~20 s)."""
        self._refreshed = time.monotonic()
        self._set_running()
        for (group, trial, metric), value in self._losses.items():
            self._set_loss(group, trial, metric, value)

    def _finish(self, trial, status: str) -> None:
        self._count(trial, status)
        last = trial.last_result or {}
        seconds = last.get("time_total_s")
        if not isinstance(seconds, (int, float)):
            start = self._started.get(trial.trial_id)
            seconds = None if start is None else time.monotonic() - start
        if seconds is not None:
            self._metrics()["seconds"].observe(float(seconds), tags={"sweep": self.sweep, "status": status})
        self._running.discard(trial.trial_id)
        self._started.pop(trial.trial_id, None)
        self._set_running()

    # -- Tune hooks -------------------------------------------------------------------------------

    def on_trial_start(self, iteration, trials, trial, **info):
        self._count(trial, "started")
        self._started.setdefault(trial.trial_id, time.monotonic())
        self._running.add(trial.trial_id)
        self._set_running()

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._started.setdefault(trial.trial_id, time.monotonic())
        self._running.add(trial.trial_id)
        self._set_running()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        m, group = self._metrics(), self._group(trial)
        step = result.get(self.step_key)
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            last = self._steps.get(trial.trial_id, 0)
            step = int(step)
            if step > last:  # lower: a retried trial went back to its checkpoint; count on from there
                m["steps"].inc(step - last, tags={"sweep": self.sweep, "group": group})
            self._steps[trial.trial_id] = step
        for key, value in loss_values(result).items():
            self._set_loss(group, trial.trial_id, key, value)

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self._refreshed >= REFRESH_S:
            self.refresh()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "completed")

    def on_trial_recover(self, iteration, trials, trial, **info):
        """The trial failed and Tune will run it again (FailureConfig.max_failures)."""
        self._count(trial, "retried")
        self._running.discard(trial.trial_id)
        self._set_running()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "errored")
