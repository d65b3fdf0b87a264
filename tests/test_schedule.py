"""Schedule marks and the desynchronized-schedule control: no Ray cluster, no training."""

from __future__ import annotations

import pytest

from squigglray.config import ConfigError, build_config, config_hash, load_config
from squigglray.jobs import dynamics
from squigglray.jobs.dynamics import DynamicsOptions, experiment_id, seed_config
from squigglray.config import packaged_config
from squigglray.training import BaseTrainConfig, run_id_for
from squigglray.training.schedule import jittered_config, schedule_marks

JITTER = 0.3
THREE_PHASES = [  # switches 2 steps apart: the jitter would cross them, unless kept in order
    {"name": "a", "fraction": 0.49, "levels": {"easy": 1.0}},
    {"name": "b", "fraction": 0.02, "levels": {"easy": 1.0}},
    {"name": "c", "fraction": 0.49, "levels": {"easy": 0.5, "medium": 0.5}},
]


@pytest.fixture(scope="module")
def quickstart():
    return load_config(BaseTrainConfig, packaged_config("quickstart"))


def three_phases(steps: int = 100) -> BaseTrainConfig:
    return build_config(BaseTrainConfig, {"curriculum": THREE_PHASES, "train": {"steps": steps}})


def test_marks_of_the_quickstart_config(quickstart):
    marks = schedule_marks(quickstart)
    assert marks == {"end of warmup": 30, "cadence change": 64, "curriculum easy -> mixed": 120}
    assert list(marks.values()) == sorted(marks.values())


def test_marks_leave_out_what_the_schedule_does_not_have(quickstart):
    train = quickstart.train.model_copy(update={"warmup_steps": 0, "log_dense_until": 400})
    one_phase = [quickstart.curriculum[0].model_copy(update={"fraction": 1.0})]
    assert schedule_marks(quickstart.model_copy(update={"train": train, "curriculum": one_phase})) == {}
    assert schedule_marks(three_phases()) == {"curriculum a -> b": 49, "curriculum b -> c": 51, "cadence change": 64,
                                              "end of warmup": 30}


def test_zero_jitter_is_the_identity(quickstart):
    assert jittered_config(quickstart, 3, 0.0) is quickstart
    for seed in (0, 1):
        assert config_hash(seed_config(quickstart, seed)) == config_hash(quickstart.model_copy(update={"seed": seed}))
    with pytest.raises(ValueError):
        jittered_config(quickstart, 0, 0.5)


@pytest.mark.parametrize("make", [lambda: load_config(BaseTrainConfig, packaged_config("quickstart")), three_phases])
def test_jittered_configs_are_seeded_valid_and_bounded(make):
    cfg = make()
    jittered = {s: jittered_config(cfg, s, JITTER) for s in range(8)}
    assert all(jittered_config(cfg, s, JITTER) == j for s, j in jittered.items())  # deterministic per seed
    assert len({config_hash(j) for j in jittered.values()}) == len(jittered)  # and different between seeds
    base = schedule_marks(cfg)
    for j in jittered.values():
        BaseTrainConfig.model_validate(j.model_dump())
        assert abs(sum(p.fraction for p in j.curriculum) - 1) < 1e-9 and all(p.fraction > 0 for p in j.curriculum)
        assert [p.name for p in j.curriculum] == [p.name for p in cfg.curriculum]
        assert [p.levels for p in j.curriculum] == [p.levels for p in cfg.curriculum]
        keep = {"warmup_steps"}
        assert j.train.model_dump(exclude=keep) == cfg.train.model_dump(exclude=keep)  # steps, lr, cadence...
        assert j.model_dump(exclude={"curriculum", "train"}) == cfg.model_dump(exclude={"curriculum", "train"})
        marks = schedule_marks(j)
        assert marks.keys() == base.keys()
        for name, step in base.items():  # each mark moves by at most its factor (and a step of rounding)
            assert abs(marks[name] - step) <= JITTER * step + 1, name
        switches = [v for k, v in marks.items() if k.startswith("curriculum")]
        assert switches == sorted(switches) and len(set(switches)) == len(switches)
    moved = {n: {schedule_marks(j)[n] for j in jittered.values()} for n in base if n != "cadence change"}
    assert all(len(steps) > 1 for steps in moved.values())  # warmup and every switch do move


def test_jitter_keeps_every_phase_when_there_is_no_room():
    cfg = three_phases(steps=3)
    for seed in range(20):
        j = jittered_config(cfg, seed, 0.49)
        assert [round(p.fraction * 3) for p in j.curriculum] == [1, 1, 1]
    small_warmup = three_phases().model_copy(update={"train": three_phases().train.model_copy(
        update={"warmup_steps": 1})})
    assert all(jittered_config(small_warmup, s, 0.49).train.warmup_steps >= 1 for s in range(20))


def test_experiment_id_changes_with_jitter_only_when_set(quickstart):
    plain = experiment_id(quickstart, [0, 1], "h")
    assert experiment_id(quickstart, [0, 1], "h", 0.0) == plain
    assert experiment_id(quickstart, [0, 1], "h", 0.2) != plain
    assert experiment_id(quickstart, [0, 1], "h", 0.2) != experiment_id(quickstart, [0, 1], "h", 0.1)
    with pytest.raises(ValueError):
        DynamicsOptions(schedule_jitter=0.5)
    with pytest.raises(ValueError):
        DynamicsOptions(schedule_jitter=-0.1)


def test_the_trial_trains_the_jittered_config_whose_run_id_is_returned(quickstart):
    """The seam between train_seeds and the Tune trial: the trial's config for a seed is the one
    whose run id train_seeds returns; fails if the jitter is dropped on either side."""
    from tune_spaces.dynamics import seed_space, trial_config

    seeds = [0, 1, 2]
    for jitter in (0.0, JITTER):
        space = seed_space(quickstart.model_dump(mode="json"), seeds, "file:///tmp/x", 1, None, jitter)
        assert space["seed"] == {"grid_search": seeds}
        for seed in seeds:
            trained = trial_config({**space, "seed": seed})
            assert trained == seed_config(quickstart, seed, jitter)
            assert run_id_for(trained) == run_id_for(seed_config(quickstart, seed, jitter))
            assert (trained == quickstart.model_copy(update={"seed": seed})) == (jitter == 0)
    assert "schedule_jitter" not in seed_space({}, seeds, "file:///tmp/x", 1)  # old experiments' spaces unchanged


class _Ran(Exception):
    pass


def test_both_command_lines_pass_the_jitter(monkeypatch):
    from typer.testing import CliRunner

    from squigglray.cli import app

    got = []

    def fake_run(cfg, opts, *args, **kwargs):
        got.append(opts.schedule_jitter)
        raise _Ran

    monkeypatch.setattr(dynamics, "run_dynamics", fake_run)
    with pytest.raises(_Ran):
        dynamics.main(["--smoke", "--seeds", "0,1", "--schedule-jitter", "0.2"])
    r = CliRunner().invoke(app, ["dynamics", "--smoke", "--seeds", "0,1", "--schedule-jitter", "0.25"])
    assert isinstance(r.exception, _Ran), r.output
    assert got == [0.2, 0.25]
    with pytest.raises(ConfigError):
        dynamics.main(["--smoke", "--schedule-jitter", "0.7"])


def test_the_analysis_leaves_out_each_run_near_its_own_schedule(quickstart):
    """Under the control each seed's marks differ, and an event is judged against its own run's."""
    import numpy as np

    from squigglray.jobs.dynamics_analysis import near_schedule_mask, run_schedules

    runs = {0: "r0", 1: "r1"}
    shared, jittered = run_schedules(quickstart, runs, 0.0), run_schedules(quickstart, runs, JITTER)
    assert shared["r0"] == shared["r1"] == schedule_marks(quickstart)
    switch = "curriculum easy -> mixed"
    assert jittered["r0"][switch] != jittered["r1"][switch]
    marks_t = {rid: np.asarray([m[switch] / 400.0]) for rid, m in jittered.items()}
    t = marks_t["r0"][0]
    assert near_schedule_mask(["r0", "r1"], np.asarray([t, t]), marks_t, 0.001).tolist() == [True, False]
