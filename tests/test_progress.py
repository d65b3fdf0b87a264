"""Quiet Tune runs (tune_spaces/progress.py): one bar over all trials, Tune's tables only with --verbose."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from squigglray.entry import VERBOSE_ENV, JobArgs, make_parser, parse_args
from tune_spaces.progress import ProgressBar, callbacks_for, tune_verbosity


def test_verbosity_follows_the_flag(monkeypatch):
    monkeypatch.setenv(VERBOSE_ENV, "")  # recorded, so the flag's os.environ write is undone after
    assert tune_verbosity() == 0 and [type(c) for c in callbacks_for("x", 10)] == [ProgressBar]
    parse_args(make_parser("squigglray x", "x", JobArgs), ["--verbose"])  # the job flag sets it
    assert tune_verbosity() == 2 and callbacks_for("x", 10) == []


def test_the_bar_sums_the_trials_and_survives_pickling(capsys):
    bar = ProgressBar("seed trials", total=20)
    t1, t2 = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    bar.on_trial_result(1, [t1, t2], t1, {"step": 4, "loss": 2.5})
    bar.on_trial_result(1, [t1, t2], t2, {"step": 3, "loss": 2.0})
    bar.on_trial_result(2, [t1, t2], t1, {"step": 6})
    assert bar._bar.n == 9  # the latest step of each trial, summed
    restored = pickle.loads(pickle.dumps(bar))  # Tune stores callbacks with the experiment state
    assert restored._bar is None and restored.done == {"a": 6.0, "b": 3.0}
    bar.on_trial_complete(3, [t1, t2], t2)  # an ended trial counts in full
    assert bar._bar.n == 16
    bar.on_experiment_end([t1, t2])
    assert "seed trials" in capsys.readouterr().err
