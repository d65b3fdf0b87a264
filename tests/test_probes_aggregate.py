"""Probe summaries -> probe_summaries.parquet, probe_events_candidates.parquet, _manifest.json."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest
from probe_factory import make_summary

import squigglray
from squigglray.probes import aggregate as agg
from squigglray.probes.aggregate import (
    PROBE_EVENTS_SCHEMA, PROBE_SUMMARIES_SCHEMA, AggregationError, aggregate_experiment, read_summaries,
    summary_names, write_summary,
)
from squigglray.schemas.probes import DisScore

EXP = "exp-test"
OUTPUTS = (agg.SUMMARIES_FILE, agg.EVENTS_FILE, agg.MANIFEST_FILE)


def _event(i: int, metric: str = "loss", step: int = 3) -> dict:
    return {"event_id": f"e{i}", "metric": metric, "layer": 0, "module": "scalar", "kind": "mean_shift",
            "step": step, "step_start": step - 1, "step_end": step + 1, "magnitude": 1.5 + i, "score": 2.0}


def _dis(value: float = 0.3) -> DisScore:
    return DisScore(dis=value, magnitude=0.5, coherence=0.8, novelty=0.75, param_ratio=2.0, repr_ratio=1.5,
                    control_param_change=0.01, control_repr_change=0.005, step_coherence=0.5, seed_coherence=0.9,
                    n_seeds=2, max_similarity=0.25, nearest="fam_b", scoring_set_hash="s" * 64)


def _populate(store, scored: bool = False):
    summaries = [
        make_summary("fam_b", 1, [0.0, 1.0], events=[_event(0, "loss", 5), _event(1, "cka", 2)]),
        make_summary("fam_a", 0, [1.0, 0.0]),
        make_summary("control:shuffled_labels", 0, [1.0, 1.0], events=[_event(2)]),
        make_summary("fam_a", 1, [1.0, 0.1]),
    ]
    if scored:
        summaries = [s.model_copy(update={"dis": _dis(0.1 * (i + 1))}) for i, s in enumerate(summaries)]
    else:
        summaries[0] = summaries[0].model_copy(update={"dis": _dis()})
    for s in summaries:
        write_summary(store, s)
    return summaries


def _outputs(store) -> dict:
    return {n: store.read_bytes(store.aggregated(EXP, n)) for n in OUTPUTS if store.exists(store.aggregated(EXP, n))}


def test_round_trip_tables_and_manifest(store):
    _populate(store)
    manifest = aggregate_experiment(store, EXP, extra_manifest={"note": "smoke"})
    df = store.read_parquet(store.aggregated(EXP, agg.SUMMARIES_FILE)).to_pandas()
    ev = store.read_parquet(store.aggregated(EXP, agg.EVENTS_FILE))

    assert list(df.probe_id) == ["control-shuffled_labels.seed0", "fam_a.seed0", "fam_a.seed1", "fam_b.seed1"]
    sig = df.filter(like="sig.")
    assert list(sig.columns) == ["sig.delta.L0.self_attn.q_proj", "sig.drift.L0"] + [f"sig.dir.{j}" for j in range(2)]
    assert list(df.columns[:len(PROBE_SUMMARIES_SCHEMA)]) == PROBE_SUMMARIES_SCHEMA.names
    assert sig.loc[df.probe_id == "fam_b.seed1", "sig.dir.1"].item() == pytest.approx(1.0)
    assert sig["sig.delta.L0.self_attn.q_proj"].tolist() == pytest.approx([0.02] * 4)

    row = df.set_index("probe_id").loc["fam_b.seed1"]
    assert row["schema"] == "probe_summary@2.0" and row["role"] == "family" and row["seed"] == 1
    assert row["dis"] == pytest.approx(0.3) and row["dis_nearest"] == "fam_b" and row["dis_n_seeds"] == 2
    assert row["probe_a_loss_before"] == 1.0 and row["probe_b_answer_acc_after"] == 0.25
    assert row["ft_lr"] == 1e-3 and json.loads(row["ft_target_modules"]) == ["q_proj"]
    assert json.loads(row["library_versions"]) == {"torch": "2.13.0"} and row["n_events"] == 2
    assert row["t_total_s"] == pytest.approx(1.4) and json.loads(row["artifacts"])["adapter"].endswith("/adapter")
    unscored = df[df.probe_id != "fam_b.seed1"]
    assert unscored["dis"].isna().all() and unscored["dis_scoring_set_hash"].isna().all()

    assert ev.schema.equals(PROBE_EVENTS_SCHEMA) and ev.num_rows == 3
    assert ev.column("event_id").to_pylist() == ["e2", "e1", "e0"]  # by probe_id, then metric
    assert ev.column("family_id").to_pylist() == ["control:shuffled_labels", "fam_b", "fam_b"]

    aid = manifest["analysis_id"]
    assert re.fullmatch(r"an-[0-9a-f]{16}", aid)
    assert set(df.analysis_id) == {aid} and set(ev.column("analysis_id").to_pylist()) == {aid}
    assert set(df.experiment_id) == {EXP}
    assert manifest == store.read_json(store.aggregated(EXP, agg.MANIFEST_FILE))
    assert manifest["row_counts"] == {"probe_summaries": 4, "probe_events_candidates": 3}
    assert manifest["families"] == ["fam_a", "fam_b"] and manifest["controls"] == ["control:shuffled_labels"]
    assert manifest["seeds"] == [0, 1] and manifest["scored"] is False and manifest["config_hash"] == "c" * 64
    assert manifest["schema_versions"] == {"probe_summary": "probe_summary@2.0",
                                           "probe_summaries_table": "probe_summaries@1.0",
                                           "probe_events_table": "probe_events_candidates@1.0"}
    assert [i["path"] for i in manifest["inputs"]] == [
        f"experiments/{EXP}/summaries/{n}" for n in summary_names(store, EXP)]
    assert manifest["package_version"] == squigglray.__version__ and manifest["analysis"] == {"note": "smoke"}


def test_scored_and_no_events(store):
    summaries = _populate(store, scored=True)
    for s in summaries:
        write_summary(store, s.model_copy(update={"events": []}))
    manifest = aggregate_experiment(store, EXP)
    ev = store.read_parquet(store.aggregated(EXP, agg.EVENTS_FILE))
    assert manifest["scored"] is True and "analysis" not in manifest
    assert ev.num_rows == 0 and ev.schema.equals(PROBE_EVENTS_SCHEMA)
    df = store.read_parquet(store.aggregated(EXP, agg.SUMMARIES_FILE)).to_pandas()
    assert df["dis"].notna().all()


def test_idempotent_and_analysis_id_tracks_inputs(store):
    summaries = _populate(store)
    first = aggregate_experiment(store, EXP)
    before = _outputs(store)
    assert aggregate_experiment(store, EXP) == first and _outputs(store) == before
    write_summary(store, summaries[1].model_copy(update={"seed": 0, "run_id": "changed"}))
    assert aggregate_experiment(store, EXP)["analysis_id"] != first["analysis_id"]
    assert _outputs(store)[agg.SUMMARIES_FILE] != before[agg.SUMMARIES_FILE]


def _break(store, text: str, name: str = "fam_a.seed0.json") -> str:
    rel = f"experiments/{EXP}/summaries/{name}"
    store.write_text(rel, text)
    return store.full(rel)


def _good_json(store) -> dict:
    return json.loads(store.read_text(f"experiments/{EXP}/summaries/fam_a.seed0.json"))


@pytest.mark.parametrize("case", ["bad_json", "old_schema", "missing_field", "wrong_name"])
@pytest.mark.parametrize("earlier", [False, True])
def test_malformed_summary_stops_aggregation(store, case, earlier):
    _populate(store)
    if earlier:
        aggregate_experiment(store, EXP)
    before = _outputs(store)
    data = _good_json(store)
    if case == "bad_json":
        path = _break(store, "{not json")
    elif case == "old_schema":
        path = _break(store, json.dumps({**data, "schema": "probe_summary@1.0"}))
    elif case == "missing_field":
        del data["geometry"]
        path = _break(store, json.dumps(data))
    else:
        path = _break(store, json.dumps(data), "renamed.json")
    with pytest.raises(AggregationError) as err:
        aggregate_experiment(store, EXP)
    msg = str(err.value)
    assert path in msg
    if case == "old_schema":
        assert "probe_summary@1.0" in msg and "probe_summary@2.0" in msg
    if case == "missing_field":
        assert "geometry" in msg
    with pytest.raises(AggregationError, match=re.escape(path)):
        read_summaries(store, EXP)
    assert _outputs(store) == before  # untouched, and nothing written when nothing existed
    assert bool(before) is earlier


def test_mixed_config_hashes_and_signatures(store):
    _populate(store)
    write_summary(store, make_summary("fam_c", 0, [1.0, 0.0], config_hash="x" * 64))
    with pytest.raises(AggregationError, match="config_hash.*fam_c.seed0.json"):
        aggregate_experiment(store, EXP)
    odd = make_summary("fam_c", 0, [1.0, 0.0])
    write_summary(store, odd.model_copy(update={"signature": {**odd.signature, "drift.L1": 0.0}}))
    with pytest.raises(AggregationError, match="signature names.*drift.L1.*fam_c.seed0.json"):
        aggregate_experiment(store, EXP)
    write_summary(store, make_summary("fam_c", 0, [1.0, 0.0]))
    other = make_summary("fam_d", 0, [1.0, 0.0], experiment_id="other")
    store.write_text(store.probe_summary(EXP, other.probe_id), other.to_json())
    with pytest.raises(AggregationError, match="another experiment.*fam_d.seed0.json"):
        aggregate_experiment(store, EXP)
    assert _outputs(store) == {}


def test_no_summaries(store):
    assert summary_names(store, EXP) == [] and read_summaries(store, EXP) == []
    with pytest.raises(AggregationError, match="no summaries"):
        aggregate_experiment(store, EXP)
    store.write_text(f"experiments/{EXP}/summaries/README.txt", "not a summary")
    with pytest.raises(AggregationError, match="no summaries"):
        aggregate_experiment(store, EXP)


def test_write_read_round_trip_ignores_tmp_files(store):
    summaries = _populate(store)
    store.write_text(f"experiments/{EXP}/summaries/fam_z.seed0.json.tmp-abcd1234", "{partial")
    store.write_text(f"experiments/{EXP}/summaries/fam_y.seed0.tmp-abcd1234.json", "{partial")
    path = write_summary(store, summaries[0])
    assert path == store.full(store.probe_summary(EXP, summaries[0].probe_id))
    names = summary_names(store, EXP)
    assert names == sorted(f"{s.probe_id}.json" for s in summaries)
    assert read_summaries(store, EXP) == sorted(summaries, key=lambda s: s.probe_id)
    assert aggregate_experiment(store, EXP)["row_counts"]["probe_summaries"] == 4


def test_sig_order_and_docstring_covers_schema():
    names = ["dir.10", "drift.L1", "dir.2", "delta.L1.mlp", "drift.L0", "delta.L0.q", "other"]
    assert sorted(names, key=agg._sig_key) == ["delta.L0.q", "delta.L1.mlp", "drift.L0", "drift.L1", "dir.2",
                                               "dir.10", "other"]
    doc = agg.__doc__
    for name in PROBE_SUMMARIES_SCHEMA.names + PROBE_EVENTS_SCHEMA.names:
        assert re.search(rf"\b{re.escape(re.sub(r'^(ft|probe_[ab]|dis|t)_', '', name))}\b", doc), name
    assert len(set(PROBE_SUMMARIES_SCHEMA.names)) == len(PROBE_SUMMARIES_SCHEMA.names)
    assert isinstance(PROBE_SUMMARIES_SCHEMA, pa.Schema)


def test_filesystem_uri_store(tmp_path):
    from squigglray.paths import ArtifactStore

    store = ArtifactStore(f"file://{tmp_path}/uri-store")
    _populate(store)
    assert len(summary_names(store, EXP)) == 4
    assert aggregate_experiment(store, EXP)["row_counts"]["probe_summaries"] == 4
