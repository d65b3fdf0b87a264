"""Instrumented training: probe A/B scalars, geometry per run, determinism, and exact resume."""

from __future__ import annotations

import shutil

import pytest
import torch

from squigglray.config import build_config
from squigglray.eval.probes import PROBE_COLUMNS, build_probes, encode_probe, evaluate_probe, tool_spans
from squigglray.paths import ArtifactStore
from squigglray.training import BaseTrainConfig, run_id_for, train_base
from squigglray.training.cadence import log_steps

FAST = [
    "model.preset=nano", "train.steps=12", "train.batch_size=8", "data.pool_per_family_level=8",
    "data.families=[arithmetic, mod_power, stair_climb]", "train.log_dense_until=8", "train.log_every=4",
    "probes.a_per_family=2", "probes.b_per_family=2", "geometry.capture_batch_size=4",
]


def cfg_with(*extra):
    return build_config(BaseTrainConfig, {}, [*FAST, *extra])


def artifacts(store, cfg):
    rid = run_id_for(cfg)
    scalars = store.read_parquet(store.run_scalars(rid)).drop_columns(["wall_s"]).to_pylist()
    geometry = store.read_parquet(store.geometry_state(rid)).to_pylist()
    return scalars, geometry


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    store = ArtifactStore(tmp_path_factory.mktemp("ref"))
    cfg = cfg_with("seed=3")
    train_base(cfg, store, progress=False)
    return store, cfg


def test_probe_columns_geometry_and_manifest(reference):
    store, cfg = reference
    scalars, geometry = artifacts(store, cfg)
    steps = log_steps(12, 8, 4)
    assert [r["step"] for r in scalars] == steps
    for r in scalars:
        for col in PROBE_COLUMNS:
            assert 0 <= r[col] < float("inf")
        assert 0 <= r["probe_a_answer_acc"] <= 1
    assert sorted({r["step"] for r in geometry}) == steps
    assert {r["run_id"] for r in geometry} == {run_id_for(cfg)}
    manifest = store.read_json(f"runs/{run_id_for(cfg)}/probes.json")
    assert set(manifest["probes"]) == {"a", "b"}
    assert {x["level"] for x in manifest["probes"]["b"]["instances"]} == {"hard"}  # not trained on
    assert {r["capture_batch_hash"] for r in geometry} == {manifest["capture_batch_hash"]}


def test_same_seed_same_geometry_other_seed_differs(reference, tmp_path):
    store, cfg = reference
    again = ArtifactStore(tmp_path / "again")
    train_base(cfg, again, progress=False)
    assert artifacts(again, cfg) == artifacts(store, cfg)
    other = cfg_with("seed=4")
    train_base(other, again, progress=False)
    g_ref = [(r["step"], r["layer"], r["module"], r["metric"], r["value"]) for r in artifacts(store, cfg)[1]]
    g_other = [(r["step"], r["layer"], r["module"], r["metric"], r["value"]) for r in artifacts(again, other)[1]]
    assert [k[:4] for k in g_ref] == [k[:4] for k in g_other] and g_ref != g_other


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(reference, tmp_path):
    store, _ = reference
    cfg = cfg_with("seed=3", "train.checkpoint_every=5")
    kept = {}

    def sink(folder, state):
        kept[state.step] = shutil.copytree(folder, tmp_path / f"ckpt-{state.step}")

    full = ArtifactStore(tmp_path / "full")
    train_base(cfg, full, progress=False, checkpoint_sink=sink)
    assert sorted(kept) == [5, 10]
    resumed = ArtifactStore(tmp_path / "resumed")
    train_base(cfg, resumed, progress=False, resume_from=kept[5])
    a, b = artifacts(full, cfg), artifacts(resumed, cfg)
    assert a == b  # same rows, none twice (geometry keys are unique)
    keys = [(r["step"], r["layer"], r["module"], r["metric"]) for r in b[1]]
    assert len(keys) == len(set(keys))
    # the instrumentation is the same as without checkpoints: the weights do not depend on checkpointing
    ref_scalars, _ = artifacts(store, cfg_with("seed=3"))
    assert [r["loss"] for r in ref_scalars] == [r["loss"] for r in a[0]]
    with pytest.raises(ValueError, match="another config"):
        train_base(cfg_with("seed=4", "train.checkpoint_every=5"), resumed, progress=False, resume_from=kept[5])


def test_answer_acc_needs_every_model_written_token(nano_tokenizer):
    from squigglray.families import sample
    from squigglray.models import build_model

    xs = [("easy", x) for x in sample("arithmetic", 3, 7)]
    probe = encode_probe("a", xs, nano_tokenizer, 320)
    trace = xs[0][1].trace
    (start, end), = tool_spans(trace)
    assert trace[start:end].strip().startswith(str(xs[0][1].answer)) and trace[end - 4:end] == "```\n"
    # the tool's output tokens are not required, everything else on the trace is
    n_label = int((probe.labels[0] != -100).sum())
    assert 0 < int(probe.required[0].sum()) < n_label
    model = build_model("nano", nano_tokenizer, seed=0)
    out = evaluate_probe(model, probe)
    assert out["answer_acc"] == 0.0 and 0 <= out["token_acc"] < 0.5 and out["loss"] > 1

    class Oracle(torch.nn.Module):  # puts all mass on the reference token: exact answers
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None, use_cache=False):
            logits = torch.full((*input_ids.shape, len(nano_tokenizer)), -1e4)
            nxt = torch.roll(input_ids, -1, dims=1)
            logits.scatter_(2, nxt[..., None], 0.0)
            return type("Out", (), {"logits": logits})

    assert evaluate_probe(Oracle(), probe)["answer_acc"] == 1.0


def test_probe_b_must_be_a_holdout():
    from squigglray.config import ConfigError

    with pytest.raises(ConfigError, match="holdout"):
        cfg_with("probes.b_levels=[easy]")
    cfg = cfg_with("probes.b_levels=[easy]", "probes.b_families=[gcd_lcm]")
    assert cfg.probes.b_families == ["gcd_lcm"]


def test_probes_exclude_training_problems(reference, nano_tokenizer):
    from squigglray.training.data import build_pool

    _, cfg = reference
    pool = build_pool(cfg)
    a, b = build_probes(cfg, nano_tokenizer, pool.problems())
    assert not {x.problem for _, x in a.items + b.items} & pool.problems()
    assert a.hash != b.hash and len(a.hash) == 64
