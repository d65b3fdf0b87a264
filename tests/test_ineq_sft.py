"""SFT with TRL on prompt/completion pairs: completion-only labels, loss goes down, the saved folder
loads and generates, same seed gives the same weights, clear errors, learning curve rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from squigglray.ineq.sft import SftConfig, build_trainer, run_sft, validate_examples

PROOF = "Proof: a**2 + b**2\n>= 2*sqrt(a**2*b**2) by am_gm(a**2, b**2)\n= 2*a*b by algebra\nEquality: a = b\nQED\n"


def examples(n: int, offset: int = 0) -> list[dict]:
    return [{"prompt": f"Prove: a**2 + b**2 >= 2*a*b (case {i + offset})\n", "completion": PROOF} for i in range(n)]


def nano_cfg(**kw) -> SftConfig:
    base = dict(model="nano", max_steps=15, lr=1e-2, batch_size=8, max_length=128, logging_steps=1, threads=2,
                warmup_ratio=0.1)
    return SftConfig(**{**base, **kw})


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def nano_store(nano_tokenizer, tmp_path_factory):
    """An artifact store with a freshly initialized nano model published as preset 'nano', laid out as
    `train_base` publishes one (models/nano.json -> runs/<id>/checkpoints/final). Built in under a second,
    unlike `solver_store`'s trained model, which these tests don't need: SFT from random weights still
    shows the loss going down."""
    from squigglray.models import build_model
    from squigglray.paths import ArtifactStore

    root = tmp_path_factory.mktemp("sft-store")
    model = build_model("nano", nano_tokenizer, 160, seed=0)
    model.generation_config.pad_token_id = nano_tokenizer.pad_token_id
    model.generation_config.eos_token_id = nano_tokenizer.eos_token_id
    model.save_pretrained(root / "ckpt")
    nano_tokenizer.save_pretrained(root / "ckpt")
    store = ArtifactStore(root / "data")
    store.upload_dir(root / "ckpt", "runs/sft-test/checkpoints/final")
    store.write_json(store.model_pointer("nano"), {"run_id": "sft-test", "checkpoint": "runs/sft-test/checkpoints/final"})
    return store


@pytest.fixture(scope="module")
def trained(nano_store, tmp_path_factory):
    """One short run on the store's nano model, shared by the tests that only read its results."""
    out = tmp_path_factory.mktemp("sft") / "run-a"
    summary = run_sft(nano_cfg(), examples(30), examples(6, offset=100), str(out), store=nano_store, log=quiet)
    return summary, out


def test_labels_cover_only_the_completion(nano_store, tmp_path):
    from squigglray.models import load_model

    trainer, info = build_trainer(nano_cfg(), examples(4), None, str(tmp_path / "x"), store=nano_store)
    _, tok = load_model("nano", nano_store)
    assert info["bos_prepended"]  # the project tokenizer adds no BOS; its models are trained with one
    ex = examples(1)[0]
    prompt_ids = [tok.bos_token_id, *tok(ex["prompt"])["input_ids"]]
    full_ids = [tok.bos_token_id, *tok(ex["prompt"] + ex["completion"])["input_ids"], tok.eos_token_id]
    assert full_ids[: len(prompt_ids)] == prompt_ids  # the prompt ends on a token boundary

    batch = trainer.data_collator([trainer.train_dataset[0]])  # TRL's own collator
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert ids == full_ids  # exactly one BOS and one EOS (TRL appends it; we don't)
    n = len(prompt_ids)
    assert labels[:n] == [-100] * n
    assert labels[n:] == ids[n:]
    assert labels[-1] == tok.eos_token_id  # the model learns to stop


def test_collator_pads_right_despite_left_padding_tokenizer(nano_store, tmp_path):
    data = [{"prompt": "Prove: x >= 0\n", "completion": "QED\n"}, *examples(1)]
    trainer, _ = build_trainer(nano_cfg(), data, None, str(tmp_path / "x"), store=nano_store)
    trainer.processing_class.padding_side = "left"  # as the project's generation code sets it
    rows = sorted((trainer.train_dataset[i] for i in range(2)), key=lambda r: len(r["input_ids"]))
    batch = trainer.data_collator(rows)
    short = len(rows[0]["input_ids"])
    pad = trainer.processing_class.pad_token_id
    assert batch["input_ids"][0, :short].tolist() == rows[0]["input_ids"]
    assert (batch["input_ids"][0, short:] == pad).all()
    assert (batch["attention_mask"][0, short:] == 0).all() and (batch["labels"][0, short:] == -100).all()


def test_tokenizer_without_pad_token_uses_eos(nano_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    from squigglray.models import build_model

    folder = tmp_path / "nopad"
    build_model("nano", nano_tokenizer, 160, seed=0).save_pretrained(folder)
    nano_tokenizer.save_pretrained(folder)
    again = AutoTokenizer.from_pretrained(folder)
    again.pad_token = None
    again.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).pad_token is None

    data = [{"prompt": "Prove: x >= 0\n", "completion": "QED\n"}, *examples(1)]
    trainer, _ = build_trainer(nano_cfg(model=str(folder)), data, None, str(tmp_path / "x"))
    eos = trainer.processing_class.eos_token_id
    assert trainer.processing_class.pad_token_id == eos
    rows = sorted((trainer.train_dataset[i] for i in range(2)), key=lambda r: len(r["input_ids"]))
    batch = trainer.data_collator(rows)
    short = len(rows[0]["input_ids"])
    assert batch["labels"][0, short - 1] == eos  # the completion's EOS is trained ...
    assert (batch["labels"][0, short:] == -100).all()  # ... the padding EOS copies are not
    s = run_sft(nano_cfg(model=str(folder), max_steps=2), data, None, str(tmp_path / "out"), log=quiet)
    assert s["steps"] == 2
    assert AutoTokenizer.from_pretrained(tmp_path / "out").pad_token_id == eos  # saved with the pad it trained with


def test_short_run_lowers_train_and_eval_loss(trained):
    s, out = trained
    curve = s["loss_curve"]
    assert s["steps"] == 15 and len(curve) == 15 and curve[0]["step"] == 1
    assert curve[-1]["loss"] < curve[0]["loss"] - 0.5
    assert s["eval_loss"] < s["eval_loss_before"] - 0.5
    assert s["examples"] == 30 and s["eval_examples"] == 6 and s["truncated"] == 0 and s["dropped"] == 0
    assert s["tokens"] > 0 and s["tokens_per_s"] > 0 and s["seconds"] > 0
    assert set(s["versions"]) == {"trl", "transformers", "torch"}
    assert s["device"] == "cpu" and s["bf16"] is False
    assert (out / "sft_summary.json").is_file()


def test_saved_folder_loads_and_generates(trained):
    from squigglray.engines.base import encode_prompt
    from squigglray.models import load_model

    _, out = trained
    model, tok = load_model(str(out))
    assert tok.pad_token_id is not None
    ids = torch.tensor([encode_prompt(tok, examples(1)[0]["prompt"])])
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > ids.shape[1]
    assert isinstance(tok.decode(gen[0, ids.shape[1]:]), str)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_same_seed_same_weights(trained, nano_store, tmp_path):
    _, out_a = trained
    run_sft(nano_cfg(), examples(30), examples(6, offset=100), str(tmp_path / "b"), store=nano_store, log=quiet)
    a, b = _weights(out_a), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    run_sft(nano_cfg(seed=1, max_steps=3), examples(30), None, str(tmp_path / "c"), store=nano_store, log=quiet)
    c = _weights(tmp_path / "c")
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("bad, where", [
    ([{"prompt": "p", "completion": "c"}, {"prompt": "p"}], "train[1]['completion']"),
    ([{"prompt": "", "completion": "c"}], "train[0]['prompt']"),
    ([{"prompt": "p", "completion": 3}], "train[0]['completion']"),
    (["just a string"], "train[0] must be a dict"),
    ([], "train is empty"),
])
def test_bad_examples_give_clear_errors(bad, where, tmp_path):
    with pytest.raises(ValueError) as e:
        run_sft(nano_cfg(), bad, None, str(tmp_path), log=quiet)
    assert where in str(e.value)


def test_overlong_examples_are_truncated_or_dropped(nano_store, tmp_path):
    logs = []
    short = {"prompt": "Prove: x >= 0\n", "completion": "QED\n"}
    data = [short, short, {"prompt": "Prove: " + "x + " * 200 + "x >= 0\n", "completion": "QED\n"},
            {"prompt": "Prove: y >= 0\n", "completion": "= y " * 200}]
    trainer, info = build_trainer(nano_cfg(max_length=64), data, None, str(tmp_path), store=nano_store,
                                  log=logs.append)
    assert info["examples"] == 3 and info["dropped"] == 1 and info["truncated"] == 2
    assert all(len(r["input_ids"]) <= 64 for r in trainer.train_dataset)
    assert any("truncated" in m for m in logs) and any("dropped" in m for m in logs)


def test_bad_eval_and_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"eval\[0\]\['prompt'\]"):
        run_sft(nano_cfg(), examples(2), [{"prompt": " ", "completion": "c"}], str(tmp_path), log=quiet)
    with pytest.raises(ValueError, match="not both"):
        run_sft(nano_cfg(eval_fraction=0.2), examples(5), examples(2), str(tmp_path), log=quiet)
    with pytest.raises(ValueError, match="extra"):
        SftConfig(lora_rank=8)
    assert validate_examples([{"prompt": "p", "completion": "c", "id": 1}]) == [{"prompt": "p", "completion": "c"}]


def test_wandb_without_wandb_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # the import system's "not importable", installed or not
    assert importlib.util.find_spec("wandb") is None
    with pytest.raises(ValueError, match="wandb is not installed"):
        run_sft(nano_cfg(report_to="wandb"), examples(2), None, str(tmp_path), log=quiet)
