"""Geometry capture: rows per capture step, metric presence, Parquet round-trip, hashing, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from squigglray.geometry import GEOMETRY_SCHEMA, METRICS, GeometryCapture, batch_hash, watched_weights
from squigglray.geometry.capture import DEFAULT_MODULES, HIDDEN_MODULE
from squigglray.models.presets import build_model
from squigglray.training.callbacks import TrainerCallback
from squigglray.training.config import TrainSection
from squigglray.training.trainer import Trainer

STEPS = {1, 2, 4}
SEQ = 24
PROV = {"run_id": "geo-test", "seed": 3, "dataset_slice_hash": "slice-abc", "config_hash": "cfg-def",
        "package_version": "0.0.test"}


def _batch(vocab: int, n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, SEQ), generator=g)
    mask = torch.ones_like(ids)
    mask[0, SEQ - 5:] = 0  # a padded row, so the masked-token selection is exercised
    return {"input_ids": ids, "attention_mask": mask}


def _run(tok, seed: int = 3, steps=STEPS, extra: list[TrainerCallback] | None = None):
    model = build_model("nano", tok, max_seq_len=64, seed=seed)
    vocab = model.config.vocab_size
    cap = _batch(vocab, 3, 999)
    cb = GeometryCapture(steps, cap, {**PROV, "seed": seed})

    def next_batch(step):
        b = _batch(vocab, 4, 1000 + step)
        labels = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
        return {**b, "labels": labels}

    cfg = TrainSection(steps=5, batch_size=4, lr=1e-2, warmup_steps=1, log_dense_until=0, log_every=1)
    Trainer(model, cfg, next_batch, callbacks=[cb, *(extra or [])]).fit()
    return cb, model


@pytest.fixture(scope="module")
def run(nano_tokenizer):
    return _run(nano_tokenizer)


def test_rows_per_step_and_metrics(run):
    cb, model = run
    rows = cb.rows()
    watch = watched_weights(model)
    n_layers = model.config.num_hidden_layers
    assert len(watch) == n_layers * len(DEFAULT_MODULES)
    assert {r["step"] for r in rows} == STEPS  # nothing at the non-capture steps 3 and 5
    assert all(r["metric"] in METRICS for r in rows)
    assert all(isinstance(r["value"], float) and math.isfinite(r["value"]) for r in rows)

    def metrics(step, layer, module):
        return {r["metric"] for r in rows if (r["step"], r["layer"], r["module"]) == (step, layer, module)}

    base_w = {"gradient_norm", "frobenius_norm", "spectral_norm", "stable_rank_fro_spec"}
    later_w = {"gradient_cosine", "update_norm", "relative_update"}
    for layer, module in watch.values():
        assert metrics(1, layer, module) == base_w
        for s in (2, 4):
            assert metrics(s, layer, module) == base_w | later_w
    for layer in range(-1, n_layers):  # embeddings (-1) + one per block
        assert metrics(1, layer, HIDDEN_MODULE) == {"effective_rank_entropy", "activation_anisotropy"}
        for s in (2, 4):
            assert metrics(s, layer, HIDDEN_MODULE) == {"effective_rank_entropy", "activation_anisotropy",
                                                        "representation_drift"}
    # no duplicate (step, layer, module, metric) keys
    keys = [(r["step"], r["layer"], r["module"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    # weights actually moved, and model mode was restored (Trainer.fit ends in eval mode)
    upd = [r["value"] for r in rows if r["metric"] == "update_norm"]
    assert all(v > 0 for v in upd)
    assert not model.training


def test_model_mode_restored_during_training(nano_tokenizer):
    modes = []

    class Mode(TrainerCallback):
        def on_step_end(self, state, model, batch):
            modes.append(model.training)

    _run(nano_tokenizer, steps={1, 2}, extra=[Mode()])
    assert modes == [True] * 5


def test_parquet_roundtrip(run, store):
    cb, _ = run
    t = cb.to_table()
    assert t.schema == GEOMETRY_SCHEMA
    path = cb.write(store)
    assert path == store.full("geometry_state/geo-test.parquet")
    back = store.read_parquet(store.geometry_state("geo-test"))
    assert back.schema.equals(GEOMETRY_SCHEMA, check_metadata=False)
    assert back.to_pylist() == cb.rows()
    for col in ("run_id", "seed", "dataset_slice_hash", "config_hash", "package_version", "capture_batch_hash"):
        assert len(set(back.column(col).to_pylist())) == 1
    assert back.column("run_id")[0].as_py() == "geo-test"
    assert back.column("seed")[0].as_py() == 3
    assert back.column("capture_batch_hash")[0].as_py() == cb.capture_batch_hash


def test_batch_hash():
    b = _batch(300, 3, 1)
    h = batch_hash(b["input_ids"], b["attention_mask"])
    assert h == batch_hash(b["input_ids"].clone(), b["attention_mask"].clone()) and len(h) == 64
    assert h == batch_hash(b["input_ids"].to(torch.int32), b["attention_mask"])  # dtype-independent
    ids = b["input_ids"].clone()
    ids[0, 0] += 1
    assert batch_hash(ids, b["attention_mask"]) != h
    mask = b["attention_mask"].clone()
    mask[1, -1] = 0
    assert batch_hash(b["input_ids"], mask) != h
    assert batch_hash(b["input_ids"].reshape(SEQ, 3), b["attention_mask"].reshape(SEQ, 3)) != h


def test_provenance_required():
    b = _batch(300, 2, 1)
    with pytest.raises(ValueError):
        GeometryCapture({1}, b, {"run_id": "x"})


def test_determinism_same_seed(run, nano_tokenizer):
    cb, _ = run
    again, _ = _run(nano_tokenizer)
    assert again.rows() == cb.rows()


def test_different_seed_differs(run, nano_tokenizer):
    cb, _ = run
    other, _ = _run(nano_tokenizer, seed=4)
    a = {(r["step"], r["layer"], r["module"], r["metric"]): r["value"] for r in cb.rows()}
    b = {(r["step"], r["layer"], r["module"], r["metric"]): r["value"] for r in other.rows()}
    assert a.keys() == b.keys() and a != b
