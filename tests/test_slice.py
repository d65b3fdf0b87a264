"""Dataset slicing on Ray Data: schema, sources, determinism across partitionings, holdout
disjointness, rebuild from the manifest, and errors on corrupt input."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from squigglray.data.config import SliceConfig
from squigglray.families.trace import format_prompt
from squigglray.data.dedup import jaccard, normalize_text, shingles
from squigglray.data.omr_sample import OMR_SCHEMA, omr_rows, write_omr_shards
from squigglray.schemas import SchemaMismatch
from squigglray.schemas.pool import POOL_ITEM_SCHEMA, PoolItem, check_items_schema, items_from_table, items_table

QUOTAS = {"train": 30, "probe_a": 3, "holdout": 6}


def _cfg(omr_path, **extra) -> SliceConfig:
    data = {"name": "t", "seed": 7, "batch_size": 512, "quotas": QUOTAS, "fill": {"min_train": 12},
            "sources": [{"kind": "omr", "path": str(omr_path)},
                        {"kind": "families", "families": ["mod_power", "stars_bars"], "per_family_level": 8}]}
    data.update(extra)
    return SliceConfig.model_validate(data)


@pytest.fixture(scope="module")
def omr_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("omr")
    write_omr_shards(d, 2400, shards=2, seed=3)
    return d


@pytest.fixture(scope="module")
def built(omr_dir, tmp_path_factory, ray_session):
    from squigglray.data.slice import read_items
    from squigglray.jobs.slice import build_slice
    from squigglray.paths import ArtifactStore

    root = tmp_path_factory.mktemp("sl") / "data"
    manifest = build_slice(_cfg(omr_dir), str(root), log=lambda *_: None)
    store = ArtifactStore(root)
    return store, manifest, read_items(manifest.slice_id, store)[1]


def _item(**kw) -> dict:
    base = {"item_id": "omr:cot:abc", "source": {"dataset": "d", "split": "cot", "source_id": "abc", "tags": {}},
            "content": {"problem": "What is 1+1?", "final_answer": "2"}, "trace": {"steps": [], "max_steps": 8},
            "provenance": {"reference_solution": "2", "solution_field": "generated_solution"},
            "family_id": "arithmetic", "family_rule": "r", "reasoning_style": "short", "difficulty": "easy",
            "split": "train", "synthetic": False, "problem_sha256": "a" * 64, "normalized_sha256": "b" * 64,
            "rank": "c" * 64, "n_tokens": 3}
    base.update(kw)
    return base


def test_pool_item_schema_validates_and_round_trips():
    x = PoolItem.model_validate(_item(trace={"steps": [{"step_type": "compute", "text": "1+1"}], "max_steps": 12}))
    t = items_table([x])
    assert t.schema.equals(POOL_ITEM_SCHEMA, check_metadata=True)
    assert json.loads(t.schema.metadata[b"step_type_vocabulary"])[0] == "parse"
    assert items_from_table(t) == [x]
    for bad in (_item(trace={"steps": [], "max_steps": 31}), _item(item_id="no-colons"),
                _item(trace={"steps": [{"step_type": "guess", "text": ""}], "max_steps": 8}),
                _item(split="test"), _item(content={"problem": "", "final_answer": None})):
        with pytest.raises(ValueError):
            PoolItem.model_validate(bad)
    with pytest.raises(SchemaMismatch, match="column 'rank' is missing"):
        check_items_schema(t.drop_columns(["rank"]).schema, "x.parquet")


def test_slice_has_the_seed_schema_quotas_styles_and_provenance(built):
    store, m, items = built
    assert m.slice["splits"] == {s: sum(x.split == s for x in items) for s in ("train", "probe_a", "holdout")}
    fams = m.slice["families"]
    for fam, per in fams.items():
        real = [x for x in items if x.family_id == fam and x.family_rule != "synthetic_fill"]
        assert sum(x.split == "holdout" for x in real) <= QUOTAS["holdout"]
        assert sum(x.split == "train" for x in real) <= QUOTAS["train"]
    omr = [x for x in items if x.source.dataset == "nvidia/OpenMathReasoning"]
    assert omr and all(x.item_id == f"omr:{x.source.split}:{x.source.source_id}" for x in omr)
    assert all(x.provenance.solution_field == "generated_solution" and x.trace.steps == [] for x in omr)
    assert {x.reasoning_style for x in omr} <= {"cot", "tir"} and "problem_source" in omr[0].source.tags
    assert all(8 <= x.trace.max_steps <= 30 for x in items)
    assert "unassigned" in m.pool["families"]  # the vague template lands in the explicit bucket
    assert sum(m.pool["rules"].values()) + sum(m.pool["invalid"].values()) == m.pool["rows"]
    assert m.sources[0]["license"] == "CC-BY-4.0" and "AIMO" in m.sources[0]["license_note"]
    assert all(len(f["sha256"]) == 64 and f["rows"] > 0 for f in m.sources[0]["files"])
    assert m.pool["tokens"] > 0 and m.slice["tokens"] == sum(x.n_tokens for x in items)
    # Synthetic fill: target types the OMR sample lacks got family instances, recorded as such.
    fill = [x for x in items if x.family_rule == "synthetic_fill"]
    assert fill and all(x.synthetic and x.split == "train" for x in fill)
    assert set(m.slice["synthetic_fill"]) <= set(SliceConfig.model_fields["fill"].default_factory().target_types)
    per_target = {t: sum(x.target_type == t and x.split == "train" for x in items) for t in m.slice["synthetic_fill"]}
    assert all(n >= 12 for n in per_target.values())
    # Items are sorted within each split by family then rank.
    for s in ("train", "holdout"):
        keys = [(x.family_id, x.rank) for x in items if x.split == s]
        assert keys == sorted(keys)


def test_holdout_is_disjoint_from_train_and_probe_a(built):
    store, m, items = built
    hold = [x for x in items if x.split == "holdout"]
    rest = [x for x in items if x.split != "holdout"]
    assert hold and rest
    assert not {x.problem_sha256 for x in hold} & {x.problem_sha256 for x in rest}
    assert not {normalize_text(x.content.problem) for x in hold} & {normalize_text(x.content.problem) for x in rest}
    sh = {x.item_id: shingles(x.content.problem) for x in items}
    threshold = m.config["contamination"]["near_dup_threshold"]
    for a in hold:  # brute force, independent of the MinHash index
        for b in rest:
            if not (a.synthetic and b.synthetic):
                assert jaccard(sh[a.item_id], sh[b.item_id]) < threshold, (a.content.problem, b.content.problem)
    removed = pq.read_table(store.local_path(f"slices/{m.slice_id}/removed.parquet")).to_pylist()
    assert m.contamination["removed"] == len(removed) > 0
    assert {r["reason"] for r in removed} <= {"exact", "normalized", "near_duplicate", "duplicate"}
    assert "near_duplicate" in m.contamination["by_reason"]  # the OMR sample's templates collide
    ids = {x.item_id for x in items}
    assert all(r["item_id"] not in ids or r["wanted_split"] == "" for r in removed)


def test_same_slice_from_other_partitionings_and_orders(built, omr_dir, tmp_path, ray_session):
    from squigglray.jobs.slice import build_slice

    _, m, _ = built
    # The same rows re-sharded into 5 files in another order, read in other batch sizes.
    rows = pq.read_table(sorted(omr_dir.glob("*.parquet"))).to_pylist()
    random.Random(1).shuffle(rows)
    other = tmp_path / "resharded"
    other.mkdir()
    for k in range(5):
        part = rows[k::5]
        pq.write_table(pa.Table.from_pylist(part, schema=OMR_SCHEMA), other / f"shard{k}.parquet", row_group_size=97)
    again = build_slice(_cfg(other, batch_size=131), str(tmp_path / "d2"), log=lambda *_: None)
    assert again.hashes == m.hashes
    assert again.slice_id != m.slice_id  # other source files, other id; the same items


def test_rebuild_from_manifest_is_byte_identical(built, tmp_path, ray_session, omr_dir):
    from squigglray.jobs.slice import rebuild_slice
    from squigglray.data.sources import SourceError

    store, m, _ = built
    manifest_file = tmp_path / "manifest.json"
    manifest_file.write_bytes(store.read_bytes(f"slices/{m.slice_id}/manifest.json"))
    out = tmp_path / "rebuilt"
    new = rebuild_slice(str(manifest_file), out=str(out), log=lambda *_: None)
    assert (out / "items.parquet").read_bytes() == store.read_bytes(f"slices/{m.slice_id}/items.parquet")
    assert new.slice_id == m.slice_id
    # A changed source file is named, and nothing is rebuilt from it.
    edited = json.loads(manifest_file.read_text())
    edited["sources"][0]["files"][0]["sha256"] = "0" * 64
    manifest_file.write_text(json.dumps(edited))
    with pytest.raises(SourceError, match="changed since the slice was built"):
        rebuild_slice(str(manifest_file), out=str(tmp_path / "never"), log=lambda *_: None)
    assert not (tmp_path / "never").exists()


def _build_error(tmp_path, cfg):
    from squigglray.jobs.slice import build_slice

    root = tmp_path / "data"
    with pytest.raises(ValueError) as err:
        build_slice(cfg, str(root), log=lambda *_: None)
    assert not (root / "slices").exists() or not any((root / "slices").iterdir())  # nothing half-written
    return str(err.value)


def test_corrupt_shard_is_named(tmp_path, ray_session):
    d = tmp_path / "omr"
    files = write_omr_shards(d, 200, shards=2)
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2])  # truncated: footer gone
    assert files[1].name in _build_error(tmp_path, _cfg(d))


def test_corrupt_data_page_is_named(tmp_path, ray_session):
    d = tmp_path / "omr"
    files = write_omr_shards(d, 400, shards=1)
    data = bytearray(files[0].read_bytes())
    mid = len(data) // 3
    data[mid: mid + 200] = bytes(200)  # footer intact, a data page broken
    files[0].write_bytes(bytes(data))
    msg = _build_error(tmp_path, _cfg(d))
    assert files[0].name in msg


def test_missing_and_mistyped_columns_are_named(tmp_path, ray_session):
    d = tmp_path / "omr"
    d.mkdir()
    rows = omr_rows(20)
    pq.write_table(pa.Table.from_pylist(rows, schema=OMR_SCHEMA).drop_columns(["expected_answer"]), d / "cot-0.parquet")
    msg = _build_error(tmp_path, _cfg(d))
    assert "cot-0.parquet" in msg and "'expected_answer'" in msg
    d2 = tmp_path / "omr2"
    d2.mkdir()
    t = pa.Table.from_pylist(rows, schema=OMR_SCHEMA)
    t = t.set_column(t.schema.get_field_index("problem"), "problem", pa.array(range(len(rows))))
    pq.write_table(t, d2 / "cot-0.parquet")
    msg = _build_error(tmp_path / "b", _cfg(d2))
    assert "cot-0.parquet" in msg and "'problem'" in msg and "string" in msg


def test_jsonl_source_and_its_errors(tmp_path, ray_session):
    from squigglray.jobs.slice import build_slice

    lines = [{"question": f"Find the remainder when {7 + i}^{i + 20} is divided by {11 + i}.", "ans": str(i),
              "sol": "short", "uid": f"q{i}"} for i in range(40)] + [{"question": "", "ans": "0", "uid": "empty"}]
    src = tmp_path / "extra.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    fields = {"problem": "question", "answer": "ans", "solution": "sol", "id": "uid"}
    cfg = SliceConfig.model_validate({"name": "j", "quotas": {"train": 20, "probe_a": 2, "holdout": 4},
                                      "fill": {"enabled": False},
                                      "sources": [{"kind": "jsonl", "path": src.as_uri(),  # a URI works too
                                                   "name": "mine", "fields": fields}]})
    m = build_slice(cfg, str(tmp_path / "data"), log=lambda *_: None)
    assert m.pool["invalid"] == {"empty_problem": 1}
    assert m.slice["styles"] == {"short": m.slice["items"]}
    assert m.slice["datasets"] == {"mine": m.slice["items"]} and m.slice["splits"]["holdout"] == 4
    bad = cfg.model_copy(update={"sources": [cfg.sources[0].model_copy(
        update={"fields": cfg.sources[0].fields.model_copy(update={"problem": "text"})})]})
    assert "'text'" in _build_error(tmp_path / "b", bad)
    src.write_text(src.read_text() + "{not json\n")
    msg = _build_error(tmp_path / "c", cfg)
    assert "extra.jsonl" in msg and "line 42" in msg


def test_near_duplicates_never_cross_into_holdout(tmp_path, ray_session):
    """A source whose problems come in reworded pairs: the pair is never split across holdout/train."""
    from squigglray.data.slice import read_items
    from squigglray.jobs.slice import build_slice
    from squigglray.paths import ArtifactStore

    base = ["Let {a} be a positive integer such that the sum of its digits equals {b}. Find the smallest such "
            "integer that is also divisible by {c} and greater than {d}.",
            "A box contains {a} red balls and {b} blue balls. Two balls are drawn without replacement. Find the "
            "probability that both balls have the same color, given that at least one of them is red and {c} < {d}."]
    lines = []
    for i in range(60):
        text = base[i % 2].format(a=i + 3, b=i + 11, c=i + 5, d=i + 40)
        lines.append({"problem": text, "answer": str(i), "id": f"p{i}"})
        lines.append({"problem": text.replace("Find", "Determine").replace("Two", "2"), "answer": str(i), "id": f"p{i}b"})
    src = tmp_path / "pairs.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cfg = SliceConfig.model_validate({
        "name": "p", "fill": {"enabled": False}, "quotas": {"train": 40, "probe_a": 5, "holdout": 10,
                                                          "include_unassigned": True},
        "sources": [{"kind": "jsonl", "path": str(src), "name": "pairs"}]})
    m = build_slice(cfg, str(tmp_path / "data"), log=lambda *_: None)
    _, items = read_items(m.slice_id, ArtifactStore(tmp_path / "data"))
    split = {x.source.source_id: x.split for x in items}
    for i in range(60):
        a, b = split.get(f"p{i}"), split.get(f"p{i}b")
        if "holdout" in (a, b):
            assert {a, b} - {None, "holdout"} == set(), (i, a, b)
    assert m.contamination["by_reason"].get("near_duplicate", 0) > 0


def test_trainer_trains_on_a_slice_by_id(built, ray_session):
    """`data.slice` = a slice id: the run trains on the slice's train split and records its id and hash."""
    from squigglray.config import build_config
    from squigglray.training import BaseTrainConfig, train_base
    from squigglray.training.data import CurriculumSampler, build_pool

    store, m, items = built
    cfg = build_config(BaseTrainConfig, {}, [
        "model.preset=nano", "model.max_seq_len=512", "train.steps=6", "train.batch_size=4", "train.log_dense_until=4",
        "train.log_every=2", "data.families=[mod_power, stars_bars]", f"data.slice={m.slice_id}",
        "probes.a_per_family=2", "probes.max_new_tokens=12",
        "curriculum=[{name: all, fraction: 1.0, levels: {easy: 1, medium: 1}}]"])
    pool = build_pool(cfg, store)
    train_ids = {x.item_id for x in items if x.split == "train"}
    assert pool.slice_id == m.slice_id and pool.slice_hash == m.hashes["items_sha256"]
    assert {x.instance_id for xs in pool.items.values() for x in xs} == train_ids
    assert not pool.problems() & {x.content.problem for x in items if x.split == "holdout"}
    rec = train_base(cfg, store, progress=False)
    assert rec.provenance.dataset_slice_id == m.slice_id
    assert rec.provenance.dataset_slice_hash == m.hashes["items_sha256"]
    # probes A and B are the slice's own held-out items (issue 24 part 5), judged by free generation
    probes = store.read_json(f"runs/{rec.provenance.run_id}/probes.json")
    assert probes["source"] == f"slice {m.slice_id}" and probes["answer_acc"] == "generate"
    by_id = {x.item_id: x for x in items}
    for name, split, k in (("a", "probe_a", 2), ("b", "holdout", 3)):
        got = [by_id[x["instance_id"]] for x in probes["probes"][name]["instances"]]
        want = sorted((x for x in items if x.split == split and x.family_id in ("mod_power", "stars_bars")
                       and x.provenance.reference_solution and x.content.final_answer),
                      key=lambda x: (x.family_id, x.rank))
        heads = [x for f in ("mod_power", "stars_bars") for x in [y for y in want if y.family_id == f][:k]]
        assert sorted(x.item_id for x in got) == sorted(x.item_id for x in heads), name
        assert not {x.content.problem for x in got} & pool.problems()
    scalars = store.read_parquet(store.run_scalars(rec.provenance.run_id)).to_pylist()
    assert all(0.0 <= r["probe_b_answer_acc"] <= 1.0 for r in scalars)
    empty = cfg.model_copy(update={"probes": cfg.probes.model_copy(update={"b_per_family": 1}),
                                   "data": cfg.data.model_copy(update={"families": ["crt"]})})
    with pytest.raises(ValueError, match="no probe_a items"):
        train_base(empty, store, progress=False)
    bad = cfg.model_copy(update={"curriculum": [cfg.curriculum[0].model_copy(update={"families": {"crt": 1.0}})]})
    from squigglray.models import train_tokenizer

    with pytest.raises(ValueError, match="has none of them"):
        CurriculumSampler(bad, pool, train_tokenizer(pool.texts()[:50], 400))


def test_probes_take_a_slice_by_id(built, tmp_path, nano_tokenizer):
    """`data.slice`: targets from the slice's train split, probe A from probe_a, probe B from holdout."""
    from squigglray.config import ConfigError, build_config
    from squigglray.models import build_model
    from squigglray.probes.adapter import LoraProbeAdapter, ProbeJob
    from squigglray.probes.config import ProbeConfig
    from squigglray.probes.plan import build_plan, read_plan, write_plan

    store, m, items = built
    base = tmp_path / "nano-base"
    build_model("nano", nano_tokenizer, 320, seed=0).save_pretrained(base)
    nano_tokenizer.save_pretrained(base)
    cfg = build_config(ProbeConfig, {
        "families": ["mod_power", "stars_bars"], "seeds": [0], "data": {"n_instances": 4, "slice": m.slice_id},
        "lora": {"r": 2, "alpha": 4.0}, "finetune": {"steps": 4, "batch_size": 2, "capture_every": 1},
        "eval": {"a_per_family": 1, "b_per_family": 1, "capture_batch_size": 2}, "signature": {"sketch_dim": 8}})
    plan = build_plan(cfg, str(base), store, "exp-slice")
    by_id = {x.item_id: x for x in items}
    for fam in ("mod_power", "stars_bars"):
        ids = [x.instance_id for x in plan.targets[fam].instances]
        assert ids == [x.item_id for x in items if x.split == "train" and x.family_id == fam][:4]
    assert {by_id[x.instance.instance_id].split for x in plan.eval_a} == {"probe_a"}
    assert {by_id[x.instance.instance_id].split for x in plan.eval_b} == {"holdout"}
    assert not {x.instance_id for t in plan.targets.values() for x in t.instances if "~" not in x.instance_id} \
        & {x.instance.instance_id for x in plan.eval_a + plan.eval_b}
    write_plan(store, plan)
    assert read_plan(store, "exp-slice") == plan  # what the Tune trials read back
    s = LoraProbeAdapter().run(ProbeJob(plan, "stars_bars", 0), store)
    assert s.family_id == "stars_bars" and s.geometry.param_change > 0
    with pytest.raises(ConfigError, match="train items for"):
        build_plan(cfg.model_copy(update={"families": ["no_such_bucket"]}), str(base), store, "exp-bad")


def test_cli_build_show_rebuild_and_bad_config(tmp_path, ray_session):
    from typer.testing import CliRunner

    from squigglray.cli import app

    cfg = tmp_path / "s.yaml"
    cfg.write_text("name: cli\nsources:\n  - {kind: families, families: [crt, gcd_lcm], per_family_level: 6}\n"
                   "quotas: {train: 10, probe_a: 1, holdout: 2}\nfill: {enabled: false}\n")
    data = str(tmp_path / "data")
    runner = CliRunner()
    out = runner.invoke(app, ["slice", "build", "--config", str(cfg), "--data-dir", data])
    assert out.exit_code == 0, out.output
    slice_id = next((tmp_path / "data" / "slices").iterdir()).name
    shown = runner.invoke(app, ["slice", "show", slice_id, "--data-dir", data])
    assert shown.exit_code == 0 and "gcd_lcm" in shown.output and "divisibility" in shown.output
    manifest = tmp_path / "data" / "slices" / slice_id / "manifest.json"
    again = runner.invoke(app, ["slice", "rebuild", str(manifest), "--out", str(tmp_path / "rb")])
    assert again.exit_code == 0 and "byte-identical" in again.output
    bad = runner.invoke(app, ["slice", "build", "--config", str(cfg), "--set", "quotas.train=-1", "--data-dir", data])
    assert bad.exit_code == 2 and "quotas.train" in bad.output
    missing = runner.invoke(app, ["slice", "show", "nope", "--data-dir", data])
    assert missing.exit_code == 2 and "no slice 'nope'" in missing.output


def test_a_slice_streams_its_train_split_and_refuses_when_modified(built, tmp_path, nano_tokenizer):
    """`data.stream` on a slice: the examples are its train items with a solution (no other split's),
    and a slice whose bytes no longer match its manifest is refused before anything is trained."""
    import shutil

    from squigglray.config import build_config
    from squigglray.data.stream import local_epoch, stream_source
    from squigglray.training import BaseTrainConfig
    from squigglray.training.stream import stream_tokenizer

    store, m, items = built
    cfg = build_config(BaseTrainConfig, {}, [
        "model.preset=nano", "model.max_seq_len=4096", "data.stream=true", f"data.slice={m.slice_id}",
        "data.families=[mod_power, stars_bars]", "probes.enabled=false",
        "curriculum=[{name: all, fraction: 1.0, levels: {easy: 1, medium: 1, hard: 1}}]"])
    src = stream_source(cfg.data.slice, None, store)
    assert (src.slice_id, src.slice_hash) == (m.slice_id, m.hashes["items_sha256"])
    examples = [ids for t in local_epoch(src, stream_tokenizer(cfg, src, nano_tokenizer), 0)()
                for ids in t["ids"].to_pylist()]
    train = [x for x in items if x.split == "train" and x.provenance.reference_solution]
    assert len(examples) == len(train)
    texts = {nano_tokenizer.decode(ids[1:-1]) for ids in examples}
    assert texts == {format_prompt(x.content.problem) + x.provenance.reference_solution for x in train}
    copy = tmp_path / "modified"
    shutil.copytree(store.full(store.slice_dir(m.slice_id)), copy)
    table = pq.read_table(copy / "items.parquet")
    pq.write_table(table.slice(1), copy / "items.parquet")
    with pytest.raises(ValueError, match="does not match its manifest"):
        stream_source(str(copy), None)
