"""The dynamics experiment on a real local Ray Tune: seed trials, a killed trial that resumes, the
analysis artifacts and reports, and restoring a finished experiment."""

from __future__ import annotations

import json

import pytest

from squigglray.config import ConfigError, build_config
from squigglray.events.schema import EVENT_FAMILIES_SCHEMA, EVENTS_SCHEMA
from squigglray.entry import parse_args
from squigglray.jobs.dynamics import DynamicsOptions, experiment_id, make_parser, run_dynamics
from squigglray.paths import ArtifactStore
from squigglray.training import BaseTrainConfig, train_base

FAST = [
    "model.preset=nano", "train.steps=24", "train.batch_size=8", "data.pool_per_family_level=8",
    "data.families=[arithmetic, mod_power, stair_climb]", "train.log_dense_until=10", "train.log_every=2",
    "probes.a_per_family=2", "probes.b_per_family=2", "geometry.capture_batch_size=4",
]


def geometry_rows(store, rid):
    return store.read_parquet(store.geometry_state(rid)).to_pylist()


@pytest.fixture(scope="module")
def experiment(ray_session, tmp_path_factory):
    data = tmp_path_factory.mktemp("dyn")
    cfg = build_config(BaseTrainConfig, {}, FAST)
    opts = DynamicsOptions(seeds=[0, 1], checkpoint_every=8, n_perm=50)
    from fault_drill import KillOnce

    out = run_dynamics(cfg, opts, str(data), hooks=[KillOnce(11)])  # each trial is SIGKILLed once at step 11
    return ArtifactStore(str(data)), out


def test_killed_trials_resume_and_match_an_uninterrupted_run(experiment, tmp_path):
    store, out = experiment
    for seed, rid in out["runs"].items():
        assert store.exists(f"runs/{rid}/.fault-drill")  # the drill did kill this trial
        rows = geometry_rows(store, rid)
        keys = [(r["step"], r["layer"], r["module"], r["metric"]) for r in rows]
        assert len(keys) == len(set(keys))  # no duplicate rows after the resume
    # identical to the same seed trained in one go, without Tune or a kill (same thread count: the
    # float reduction order depends on it)
    import torch

    direct = ArtifactStore(tmp_path)
    cfg0 = out["config"].model_copy(update={"seed": 0})
    threads = torch.get_num_threads()
    torch.set_num_threads(out["options"].threads_per_trial)
    try:
        train_base(cfg0, direct, progress=False)
    finally:
        torch.set_num_threads(threads)
    rid0 = out["runs"][0]
    assert geometry_rows(direct, rid0) == geometry_rows(store, rid0)
    a = store.read_parquet(store.run_scalars(rid0)).drop_columns(["wall_s"])
    b = direct.read_parquet(direct.run_scalars(rid0)).drop_columns(["wall_s"])
    assert a.equals(b)


def test_two_fsdp_workers_follow_one_and_resume_after_a_kill(experiment, tmp_path):
    """Seed 0 again as a Ray Train run of 2 gloo workers under FSDP2 (each the half of every batch,
    the model sharded), worker 0 SIGKILLed at step 11: Ray Train restarts both from the step-8
    checkpoint, and the run ends with the loss curve and geometry of the one-worker trial of the
    fixture (within float tolerance). DDP takes the same path in tests/test_gpu_check.py."""
    import pytest
    from fault_drill import KillOnce

    from squigglray.jobs.dynamics import train_seeds
    from squigglray.jobs.ray_runtime import cluster_cpus

    store, out = experiment
    two = ArtifactStore(str(tmp_path / "fsdp"))
    opts = DynamicsOptions(seeds=[0], workers_per_trial=2, checkpoint_every=8).resolved(cluster_cpus())
    cfg = out["config"].model_copy(update={"train": out["config"].train.model_copy(update={"parallel": "fsdp"})})
    rid = train_seeds(cfg, opts, two, "dyn-fsdp", hooks=[KillOnce(11)])[0]  # training only
    assert two.exists(f"runs/{rid}/.fault-drill")  # the drill did kill worker 0
    one_rows = store.read_parquet(store.run_scalars(out["runs"][0])).to_pylist()
    two_rows = two.read_parquet(two.run_scalars(rid)).to_pylist()
    assert [r["step"] for r in two_rows] == [r["step"] for r in one_rows]  # no step logged twice
    for r1, r2 in zip(one_rows, two_rows):
        assert r2["tokens_seen"] == r1["tokens_seen"]
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-4) and r2["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-2)
    g1 = {(r["step"], r["layer"], r["module"], r["metric"]): r["value"] for r in geometry_rows(store, out["runs"][0])}
    g2 = {(r["step"], r["layer"], r["module"], r["metric"]): r["value"] for r in geometry_rows(two, rid)}
    assert g1.keys() == g2.keys() and len(geometry_rows(two, rid)) == len(g2)
    far = [k for k in g1 if g2[k] != pytest.approx(g1[k], rel=2e-2, abs=1e-3)]
    assert not far, far[:5]


def test_analysis_artifacts_and_reports(experiment):
    store, out = experiment
    exp = store.experiment_dir(out["experiment_id"])
    for rid in out["runs"].values():
        ev = store.read_parquet(store.events_candidates(rid))
        assert ev.schema.equals(EVENTS_SCHEMA, check_metadata=False)
        assert set(ev.column("run_id").to_pylist()) <= {rid}
        md = store.read_text(store.run_report(rid))
        assert "## Events" in md and "plots/geometry.png" in md
        assert store.exists(f"runs/{rid}/reports/plots/geometry.png")
    fams = store.read_parquet(f"{exp}/event_families.parquet")
    assert fams.schema.equals(EVENT_FAMILIES_SCHEMA, check_metadata=False)
    analysis = store.read_json(f"{exp}/analysis.json")
    assert analysis["seeds"] == [0, 1]
    # H1 counts every single-metric geometry event once: tested, or left out near the schedule
    events = [e for rid in out["runs"].values() for e in store.read_parquet(store.events_candidates(rid)).to_pylist()]
    geometry = [e for e in events if e["module"] not in ("scalar", "__composite__")]
    h1 = analysis["h1"]
    assert h1["n_events"] + h1["n_excluded"] == len(geometry) and h1["n_excluded"] > 0
    assert all(set(m) >= {"end of warmup", "cadence change"} for m in analysis["schedules"].values())
    tested = [t for t in analysis["tests"] if t["p_value"] is not None]
    assert len(analysis["tests"]) == 6 and all(t["q_value"] >= t["p_value"] for t in tested)
    assert {f["family_id"] for f in analysis["family_tests"]} == {
        f["family_id"] for f in fams.to_pylist() if f["structural"]}
    assert {r["source"] for r in analysis["correlation"]} >= {"geometry", "loss", "geometry_beyond_loss"}
    report = store.read_text(f"{exp}/report.md")
    for section in ("## Hypotheses", "## Observations", "## Non-claims", "## Limitations", "## Reproduction",
                    "**H1: ", "**H2: ", "**H3: ", "Calibration (", "Near a schedule change"):
        assert section in report
    assert "--seeds 0,1" in report and store.exists(f"{exp}/config.yaml")
    for png in ("curves", "seed_alignment", "correlation"):
        assert store.read_bytes(f"{exp}/plots/{png}.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert store.read_json(store.model_pointer("nano"))["run_id"] == out["runs"][0]


def test_restoring_a_finished_experiment_trains_nothing(experiment):
    store, out = experiment
    opts = DynamicsOptions(seeds=[0, 1], checkpoint_every=8, n_perm=50)
    before = {rid: store.read_bytes(store.geometry_state(rid)) for rid in out["runs"].values()}
    again = run_dynamics(out["config"], opts, store.uri)
    assert again["experiment_id"] == out["experiment_id"] and again["runs"] == out["runs"]
    assert {rid: store.read_bytes(store.geometry_state(rid)) for rid in out["runs"].values()} == before
    # nor analyzes again: the inputs and settings hash to the stored analysis_key
    from squigglray.jobs.dynamics_analysis import _finite

    assert again["analysis_reused"] and not out["analysis_reused"]
    assert again["families"].equals(out["families"]) and again["summary"] == _finite(out["summary"])
    assert again["h1"] == _finite(out["h1"])
    assert again["correlation"] == _finite(out["correlation"])
    assert all(again["events"][rid].equals(out["events"][rid]) for rid in out["runs"].values())


def test_analysis_key_follows_inputs_and_settings(experiment):
    from squigglray.jobs.dynamics_analysis import analysis_key, stored_analysis

    store, out = experiment
    cfg, runs, opts = out["config"], out["runs"], out["options"]
    key = analysis_key(store, cfg, runs, opts)
    assert key == out["summary"]["analysis_key"]
    assert stored_analysis(store, out["experiment_id"], runs, key)["summary"]["analysis_key"] == key
    for setting in ({"n_perm": 60}, {"detector": "regression"}, {"align": "step_frac"}, {"tolerance": 0.1}):
        assert analysis_key(store, cfg, runs, opts.model_copy(update=setting)) != key, setting
    assert analysis_key(store, cfg.model_copy(update={"name": "other"}), runs, opts) != key
    assert stored_analysis(store, out["experiment_id"], runs, "another key") is None
    rid = runs[1]
    for path in (store.run_scalars(rid), store.geometry_state(rid), store.run_config(rid)):
        data = store.read_bytes(path)
        try:  # a run's data changed (say, an interrupted experiment continued): a new key
            store.write_bytes(path, data + b" ")
            assert analysis_key(store, cfg, runs, opts) != key, path
        finally:
            store.write_bytes(path, data)
    log = store.read_text(store.run_research_log(rid))
    try:  # another experiment sharing this run analyzed it since: its log no longer vouches for this key
        store.write_text(store.run_research_log(rid), log.replace(key, "0" * len(key)))
        assert stored_analysis(store, out["experiment_id"], runs, key) is None
    finally:
        store.write_text(store.run_research_log(rid), log)


def test_experiment_id_and_seed_parsing():
    cfg = build_config(BaseTrainConfig, {}, FAST)
    assert experiment_id(cfg, [0, 1], "h") == experiment_id(cfg.model_copy(update={"seed": 7}), [1, 0], "h")
    assert experiment_id(cfg, [0, 1], "h") != experiment_id(cfg, [0, 1, 2], "h")
    assert experiment_id(cfg, [0, 1], "h") != experiment_id(cfg, [0, 1], "other data")
    assert parse_args(make_parser(), ["--seeds", "0, 1,2"])[1].seeds == [0, 1, 2]  # the job's own parser
    for bad in ("0,0", "a,b", "", "-1"):
        with pytest.raises(ConfigError):
            parse_args(make_parser(), ["--seeds", bad])
    assert 3 * DynamicsOptions(seeds=[0, 1, 2]).resolved(2).cpus_per_trial <= 2
    assert DynamicsOptions(seeds=[0, 1]).resolved(16).threads_per_trial == 8
    json.dumps(DynamicsOptions().model_dump())
