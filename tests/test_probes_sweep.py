"""A probe sweep end to end on the nano model: Ray Tune trials (one SIGKILLed and retried),
summaries, DIS, Parquet aggregation, report; a rerun skips finished probes."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from squigglray.config import ConfigError, build_config
from squigglray.probes.config import ProbeConfig

FAMILIES = ["arithmetic", "mod_power"]
TINY = {
    "families": FAMILIES, "seeds": [0, 1],
    "data": {"n_instances": 8},
    "lora": {"r": 2, "alpha": 4.0},
    "finetune": {"steps": 10, "batch_size": 4, "capture_every": 1, "max_seq_len": 320},
    "eval": {"families": FAMILIES, "a_per_family": 1, "b_per_family": 1, "capture_batch_size": 2},
    "signature": {"sketch_dim": 16},
}


@pytest.fixture(scope="module")
def nano_base(tmp_path_factory, nano_tokenizer):
    from squigglray.models import build_model

    folder = tmp_path_factory.mktemp("nano-base")
    build_model("nano", nano_tokenizer, 320, seed=0).save_pretrained(folder)
    nano_tokenizer.save_pretrained(folder)
    return str(folder)


def test_adapter_runs_one_probe_in_process(nano_base, store):
    from squigglray.probes.adapter import LoraProbeAdapter, ProbeJob
    from squigglray.probes.plan import build_plan

    plan = build_plan(build_config(ProbeConfig, TINY), nano_base, store, "exp-one")
    assert set(plan.targets) == {*FAMILIES, "control:shuffled_labels", "control:random_family"}
    shuffled = plan.targets["control:shuffled_labels"].instances
    assert all("~solution-of~" in x.instance_id for x in shuffled)
    eval_problems = {x.instance.problem for x in plan.eval_a + plan.eval_b}
    assert not eval_problems & {x.problem for t in plan.targets.values() for x in t.instances}
    s = LoraProbeAdapter().run(ProbeJob(plan, "mod_power", 1), store)
    assert s.family_id == "mod_power" and s.seed == 1 and s.dis is None
    assert s.provenance.base_checkpoint_sha256 == plan.base.sha256 and s.provenance.library_versions["peft"]
    assert s.geometry.param_change > 0 and 0 < s.geometry.step_coherence <= 1
    assert len(s.direction()) == 16 and any(k.startswith("delta.L1.") for k in s.signature)
    assert store.exists(f"{s.artifacts['adapter']}/adapter_config.json")
    assert pq.read_table(store.full(s.artifacts["geometry"])).num_rows > 0
    again = LoraProbeAdapter().run(ProbeJob(plan, "mod_power", 1), store)
    assert again.signature == s.signature and again.metrics == s.metrics  # same seed, same probe


@pytest.mark.slow
def test_sweep_through_tune_with_retries_and_rerun(ray_session, nano_base, store):
    from fault_drill import KillOnce
    from squigglray.jobs.probe import run_probe_sweep

    cfg = build_config(ProbeConfig, TINY)
    out = run_probe_sweep(cfg, "exp-sweep", nano_base, store.base, hooks=[KillOnce(3)])
    assert out["ran"] == 8 and out["probes"] == 8
    exp = store.experiment_dir("exp-sweep")
    names = sorted(p.name for p in store.local_path(f"{exp}/summaries").iterdir())
    assert names == sorted(f"{t}.seed{s}" + ".json" for t in [*FAMILIES, "control-shuffled_labels",
                                                                "control-random_family"] for s in (0, 1))
    table = pq.read_table(store.full(store.aggregated("exp-sweep", "probe_summaries.parquet")))
    assert table.num_rows == 8
    rows = table.to_pylist()
    assert {(r["family_id"], r["seed"]) for r in rows if r["role"] == "family"} == {(f, s) for f in FAMILIES
                                                                                   for s in (0, 1)}
    assert all(0 <= r["dis"] <= 1 for r in rows) and len({r["analysis_id"] for r in rows}) == 1
    assert sum(c.startswith("sig.dir.") for c in table.column_names) == 16
    events = pq.read_table(store.full(store.aggregated("exp-sweep", "probe_events_candidates.parquet")))
    assert events.num_rows == sum(r["n_events"] for r in rows)
    manifest = json.loads(store.read_text(store.aggregated("exp-sweep", "_manifest.json")))
    assert manifest["row_counts"]["probe_summaries"] == 8 and manifest["families"] == FAMILIES
    assert manifest["analysis"]["dis_stability"]["groups"] == [[0], [1]]
    assert "DIS ranking" in store.read_text(f"{exp}/probe_report.md")
    assert pq.read_table(store.full(f"{exp}/expansion/neighbours.parquet")).num_rows > 0
    # the fault drill SIGKILLed one trial at step 3; Tune ran it again, and its probe is there once
    killed = store.read_text(f"{exp}/.fault-drill")
    assert f"{killed}.json" in names and [r["probe_id"] for r in rows].count(killed) == 1

    again = run_probe_sweep(cfg, "exp-sweep", nano_base, store.base)
    assert again["ran"] == 0 and again["manifest"]["analysis_id"] == manifest["analysis_id"]

    changed = build_config(ProbeConfig, TINY, ["families=[arithmetic]", "finetune.lr=0.01"])
    with pytest.raises(ConfigError, match="another config"):
        run_probe_sweep(changed, "exp-sweep", nano_base, store.base)


def test_a_second_round_scores_novelty_against_the_first(store):
    """analyze() saves each experiment's family directions; a later sweep's baseline_id reads them back."""
    from probe_factory import make_summary

    from squigglray.jobs.probe import analyze
    from squigglray.probes.aggregate import write_summary

    def sweep(exp: str, directions: dict[str, list[float]]) -> None:
        for fam, d in directions.items():
            for seed in (0, 1):
                write_summary(store, make_summary(fam, seed, d, experiment_id=exp))

    sweep("round1", {"mod_power": [1, 0, 0, 0], "control:random_family": [0, 0, 0, 1]})
    first = analyze(store, "round1")
    assert first["manifest"]["analysis"]["direction_baseline"] == "directions-round1"
    sweep("round2", {"gcd_lcm": [1, 1, 0, 0], "crt": [0, 0, 1, 0], "control:random_family": [0, 0, 0, 1]})
    plain = {s.family_id: s.dis for s in analyze(store, "round2")["scored"]}
    vs = {s.family_id: s.dis for s in analyze(store, "round2", baseline_id="directions-round1")["scored"]}
    assert plain["gcd_lcm"].baseline_similarity is None and plain["gcd_lcm"].novelty == pytest.approx(1.0)
    assert vs["gcd_lcm"].baseline_id == "directions-round1" and vs["gcd_lcm"].nearest == "baseline:mod_power"
    assert vs["gcd_lcm"].novelty == pytest.approx(1 - 0.5 ** 0.5) and vs["crt"].novelty == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="no scoring baseline 'directions-nope'"):
        analyze(store, "round2", baseline_id="directions-nope")
