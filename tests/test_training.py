import math

import pytest

from squigglray.config import build_config
from squigglray.training import BaseTrainConfig, TrainerCallback, find_reusable, run_id_for, train_base
from squigglray.training.cadence import log_steps
from squigglray.training.trainer import lr_at

FAST = [
    "model.preset=nano", "train.steps=12", "train.batch_size=8", "data.pool_per_family_level=8",
    "data.families=[arithmetic, mod_power, stair_climb]", "train.log_dense_until=8", "train.log_every=4",
]


def cfg_with(*extra):
    return build_config(BaseTrainConfig, {}, [*FAST, *extra])


def curve(store, cfg):
    rec = train_base(cfg, store, progress=False)
    rows = store.read_parquet(store.run_scalars(rec.provenance.run_id)).to_pylist()
    return [r["loss"] for r in rows], rec


def test_same_seed_same_curve_different_seed_differs(tmp_path):
    from squigglray.paths import ArtifactStore

    a, _ = curve(ArtifactStore(tmp_path / "a"), cfg_with("seed=5"))
    b, _ = curve(ArtifactStore(tmp_path / "b"), cfg_with("seed=5"))
    c, _ = curve(ArtifactStore(tmp_path / "c"), cfg_with("seed=6"))
    assert a == b
    assert a != c
    assert all(math.isfinite(x) for x in a) and a[-1] < a[0]


def test_run_artifacts_and_provenance(store):
    cfg = cfg_with("train.checkpoint_every=6")
    seen = []

    class Spy(TrainerCallback):
        def on_after_backward(self, state, model):
            seen.append(("grad", state.step, any(p.grad is not None for p in model.parameters())))

        def on_log(self, state, row):
            seen.append(("log", state.step))

    rec = train_base(cfg, store, callbacks=[Spy()], progress=False)
    rid = run_id_for(cfg)
    assert rec.provenance.run_id == rid and rid.startswith("base-nano-")
    t = store.read_parquet(store.run_scalars(rid))
    for col in ("step", "loss", "lr", "tokens_seen", "phase", "run_id", "seed", "config_hash",
                "dataset_slice_hash", "package_version"):
        assert col in t.column_names
    assert t.column("step").to_pylist() == log_steps(12, 8, 4)
    assert [s for k, s, *_ in seen if k == "log"] == t.column("step").to_pylist()
    assert all(has for k, _, has in [x for x in seen if x[0] == "grad"])
    assert store.exists(f"runs/{rid}/checkpoints/step-000006/model.safetensors")
    assert store.exists(f"runs/{rid}/checkpoints/final/tokenizer.json")
    conf = store.read_json(store.run_config(rid))
    assert conf["provenance"]["config_hash"] == rec.provenance.config_hash
    assert store.read_json(store.model_pointer("nano"))["run_id"] == rid
    assert find_reusable(cfg, store).provenance.run_id == rid
    assert find_reusable(cfg_with("seed=9"), store) is None


def test_loss_is_on_trace_only(nano_tokenizer):
    from squigglray.families import sample
    from squigglray.training.data import collate, encode

    x = sample("arithmetic", 1, 0)[0]
    e = encode(nano_tokenizer, x)
    batch = collate([e], nano_tokenizer.pad_token_id)
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert nano_tokenizer.decode(labelled) == x.trace + nano_tokenizer.eos_token


def test_long_solutions_are_chunked_not_dropped(nano_tokenizer):
    """Each chunk fits, starts with BOS and the prompt (no loss), and every solution token is trained
    exactly once across the chunks, in order; a sampler at a short max_seq_len drops nothing."""
    from squigglray.families import sample
    from squigglray.models import train_tokenizer
    from squigglray.data.stream import MIN_WINDOW, chunks
    from squigglray.training.data import CurriculumSampler, build_pool, collate, encode

    e = encode(nano_tokenizer, sample("mod_power", 2, 0)[0])
    head = e.ids[:e.n_prompt]
    max_len = e.n_prompt + 24
    assert len(e.ids) > max_len + 24  # at least three chunks
    parts = chunks(e, max_len)
    assert len(parts) >= 3 and all(len(c.ids) <= max_len and c.ids[:len(head)] == head for c in parts)
    trained = []
    for c in parts:
        labels = collate([c], nano_tokenizer.pad_token_id)["labels"][0]
        trained += labels[labels != -100].tolist()
        assert c.n_prompt == len(head) or c.n_prompt > len(head) + 1  # later chunks keep context
    assert trained == e.ids[e.n_prompt:]
    assert chunks(e, len(e.ids)) == [e] and chunks(e, e.n_prompt + 8) == []  # fits as is; no room at all

    cfg = build_config(BaseTrainConfig, {}, [*FAST, "model.max_seq_len=96"])
    pool = build_pool(cfg)
    tok = train_tokenizer(pool.texts(), 400)
    s = CurriculumSampler(cfg, pool, tok)
    enc = [encode(tok, x) for xs in pool.items.values() for x in xs]
    fits = [x for x in enc if x.n_prompt + MIN_WINDOW <= 96]  # the only ones dropped: no room after the prompt
    assert s.dropped == len(enc) - len(fits) and s.chunked == sum(len(x.ids) > 96 for x in fits) > 0
    assert max(len(c.ids) for cs in s.encoded.values() for c in cs) <= 96
    assert sum(len(c.ids) - c.n_prompt for cs in s.encoded.values() for c in cs) == sum(
        len(x.ids) - x.n_prompt for x in fits)  # every solution token of every kept example, once


def test_activation_checkpointing_trains_the_same_steps(store, nano_tokenizer):
    """Recomputing each block in backward changes memory, not the result."""
    from squigglray.models import build_model
    from squigglray.training import Trainer

    cfg = cfg_with("train.steps=6", "train.activation_checkpointing=true")
    model = build_model("nano", nano_tokenizer, 64)
    Trainer(model, cfg.train, next_batch=None)
    assert model.is_gradient_checkpointing
    plain, _ = curve(store, cfg_with("train.steps=6"))
    ckpt, _ = curve(store, cfg)
    assert ckpt == pytest.approx(plain, rel=1e-5)


def test_micro_batches_accumulate_to_the_same_steps(store):
    """8 examples a step as micro-batches of 3, 3 and 2, gradients accumulated: the steps of one pass."""
    plain, rec = curve(store, cfg_with("train.steps=6"))
    micro, rec_micro = curve(store, cfg_with("train.steps=6", "train.micro_batch_size=3"))
    assert micro == pytest.approx(plain, rel=1e-4) and rec_micro.tokens_seen == rec.tokens_seen


def test_curriculum_phases_and_schedule():
    cfg = build_config(BaseTrainConfig, {}, [*FAST, "train.steps=100", "train.warmup_steps=10"])
    from squigglray.training.data import CurriculumSampler, build_pool
    from squigglray.models import train_tokenizer

    pool = build_pool(cfg)
    s = CurriculumSampler(cfg, pool, train_tokenizer(pool.texts(), 400))
    assert [s.phase_at(i).name for i in (1, 30, 31, 100)] == ["easy", "easy", "mixed", "mixed"]
    assert lr_at(5, cfg.train) == pytest.approx(cfg.train.lr / 2)
    assert lr_at(100, cfg.train) == pytest.approx(cfg.train.lr * cfg.train.min_lr_ratio)


def test_log_cadence_is_dense_early():
    steps = log_steps(1000, 100, 50)
    early = [s for s in steps if s <= 100]
    assert steps[:4] == [1, 2, 3, 4] and len(early) >= 12 and steps[-1] == 1000
    assert all(b - a == 50 for a, b in zip(steps[len(early):], steps[len(early) + 1:]))


def test_packed_rows_match_unpacked_forward(nano_tokenizer):
    """Packing is a speed trick only: each example's logits and loss terms are unchanged."""
    import torch

    from squigglray.families import sample
    from squigglray.models import build_model
    from squigglray.training.data import collate_packed, encode

    xs = sample("arithmetic", 3, 1) + sample("mod_power", 3, 1)
    enc = [encode(nano_tokenizer, x) for x in xs]
    model = build_model("nano", nano_tokenizer, seed=0).eval()
    packed = collate_packed(enc, nano_tokenizer.pad_token_id, row_len=max(len(e.ids) for e in enc) * 3)
    assert packed["input_ids"].shape[0] < len(enc)  # several examples share a row
    with torch.no_grad():
        logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits
        expected = {tuple(e.ids): model(torch.tensor([e.ids])).logits[0] for e in enc}
        found = 0
        for b, (row, pos) in enumerate(zip(packed["input_ids"].tolist(), packed["position_ids"].tolist())):
            starts = [s for s, p in enumerate(pos) if p == 0] + [len(row)]
            for s, end in zip(starts, starts[1:]):  # one segment per example, then the padding
                if tuple(row[s:end]) in expected:
                    assert torch.allclose(logits[b, s:end], expected[tuple(row[s:end])], atol=1e-5)
                    found += 1
        assert found == len(enc)
    n_labels = sum(len(e.ids) - e.n_prompt for e in enc)
    assert int((packed["labels"] != -100).sum()) == n_labels


def test_reuse_requires_the_same_training_data(store):
    cfg = cfg_with()
    train_base(cfg, store, progress=False)
    assert find_reusable(cfg, store) is not None
    assert find_reusable(cfg, store, slice_hash="0" * 64) is None  # e.g. a family's code changed
