"""DCM jobs end to end on the trained nano model: a staged run writes its artifacts (and a failed
gate stops it), a K sweep runs as Ray Tune trials and writes the per-K table, and the CLI's
--ks/--seeds/--datasets options reject bad input with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from squigglray.config import ConfigError, build_config
from squigglray.dcm.config import DcmConfig

SMALL = {"name": "t", "model": "nano", "k": 4, "batch_size": 4, "threads": 2,
         "dataset": {"kind": "arithmetic", "n": 4, "max_operand": 9},
         "optim": {"steps": 6, "lr": 0.05, "restarts": 0}}


def small(**kw) -> DcmConfig:
    return build_config(DcmConfig, {**SMALL, **kw})


def test_run_one_writes_artifacts(solver_store):
    from squigglray.dcm.run import run_one

    logs = []
    out = run_one(small(gates={"diagnostic": 0.0, "joint": 0.0}), str(solver_store.base), log=logs.append)
    d = Path(solver_store.base) / "experiments" / out["experiment_id"]
    result = solver_store.read_json(f"experiments/{out['experiment_id']}/result.json")
    assert list(out["stages"]) == ["diagnostic_q", "diagnostic_a", "joint"]
    assert set(result["stages"]) == set(out["stages"]) and result["stopped_at"] is None
    for key in ("config_hash", "seed", "dataset_hash", "package_version", "experiment_id"):
        assert result[key] is not None, key
    joint = result["stages"]["joint"]
    assert len(joint["rows"]) == 4 and joint["summary"]["n"] == 4
    assert set(joint["summary"]["thresholds"]) >= {"seed_rule_convergence_rate"}
    assert all(len(r["curve"]) == r["steps"] for r in joint["rows"])
    slots = torch.load(d / "slots.pt")
    assert set(slots) == {"diagnostic_q", "diagnostic_a", "joint"}
    assert all(s.shape == (4, 32) for s in slots["joint"].values())
    assert (d / "report.md").read_text().count("joint") >= 1 and (d / "plots" / "loss_curves.png").stat().st_size > 0
    assert len(logs) == 3
    # Same config and seed: the same result, row for row.
    again = run_one(small(gates={"diagnostic": 0.0, "joint": 0.0}), str(solver_store.base), log=lambda *_: None,
                    write=False)
    assert [r["loss"][m] for r in again["stages"]["joint"]["rows"] for m in "qa"] == pytest.approx(
        [r["loss"][m] for r in joint["rows"] for m in "qa"])


def test_failed_gate_stops_the_run(solver_store):
    from squigglray.dcm.run import run_one

    out = run_one(small(gates={"diagnostic": 1.0, "joint": 0.0}, optim={"steps": 2, "restarts": 0}),
                  str(solver_store.base), log=lambda *_: None, write=False)
    assert out["stopped_at"] == "diagnostic_q" and list(out["stages"]) == ["diagnostic_q"]
    assert out["stages"]["diagnostic_q"]["passed"] is False and "spot_check" not in out


def test_k_sweep_on_tune(solver_store, ray_session):
    from squigglray.jobs.dcm import run_sweep

    out = run_sweep(small(), [2, 4], [0], None, str(solver_store.base), log=lambda *_: None)
    table = out["table"]
    assert [row["k"] for row in table] == [2, 4]
    for row in table:
        assert 0.0 <= row["convergence_rate"] <= 1.0 and 0.0 <= row["exact_match_rate"] <= 1.0
    sweeps = list((Path(solver_store.base) / "experiments").glob("dcm-sweep-t-*"))
    assert len(sweeps) == 1
    for name in ("sweep.json", "sweep.md", "plots/convergence_vs_k.png", "plots/loss_curves.png"):
        assert (sweeps[0] / name).stat().st_size > 0, name
    assert len(list((Path(solver_store.base) / "experiments").glob("dcm-t-k2-s0-*/result.json"))) == 1


def test_cli_options_are_checked():
    from squigglray.config import build_config
    from squigglray.jobs.dcm import DcmSweepOptions, parse_datasets

    assert build_config(DcmSweepOptions, {"ks": ["4", "8", "16"]}).ks == [4, 8, 16]  # as the parser splits them
    for bad in (["4", "x"], [], ["4", "4"], ["-1"]):
        with pytest.raises(ConfigError, match="ks"):
            build_config(DcmSweepOptions, {"ks": bad})
    assert parse_datasets(None) is None
    specs = parse_datasets("[{kind: arithmetic, n: 3}, {kind: sudoku, n: 2}]")
    assert [s["kind"] for s in specs] == ["arithmetic", "sudoku"]
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_datasets("[{kind: arithmetic")
    with pytest.raises(ConfigError, match="'kind'"):
        parse_datasets("{kind: arithmetic}")
    with pytest.raises(Exception, match="nosuch"):
        parse_datasets("[{kind: nosuch}]")
