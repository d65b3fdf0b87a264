import pytest
import torch

from squigglray.models import (
    ModelNotFound, UnknownPreset, build_model, count_params, load_model, resolve_spec, train_tokenizer,
)
from squigglray.families.trace import TRACE_MARKERS


@pytest.mark.parametrize(
    "text",
    [
        "Problem: What is 12345 mod 97?\nSolution:\n",
        "```python\nprint(pow(7, 123, 1000))\n```\n```output\n343\n```\nThe answer is \\boxed{343}.",
        "unicode: ∑ x² ≥ 0 — and\ttabs  and   spaces\n\n",
        "",
    ],
)
def test_tokenizer_round_trip(nano_tokenizer, text):
    ids = nano_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert nano_tokenizer.decode(ids) == text


def test_tokenizer_splits_digits_and_keeps_markers(nano_tokenizer):
    toks = nano_tokenizer.tokenize("x = 90817")
    assert [t for t in toks if t.isdigit()] == list("90817")
    for m in TRACE_MARKERS:
        assert nano_tokenizer.tokenize(m) == [m]
    assert nano_tokenizer.pad_token and nano_tokenizer.eos_token and nano_tokenizer.bos_token


def test_tokenizer_save_load(nano_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    nano_tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    s = "```python\nprint(3)\n```"
    assert again(s)["input_ids"] == nano_tokenizer(s)["input_ids"]


def test_model_is_llama_style(nano_tokenizer):
    m = build_model("nano", nano_tokenizer, max_seq_len=64, seed=0)
    cfg = m.config
    assert cfg.model_type == "llama" and cfg.tie_word_embeddings and cfg.hidden_act == "silu"
    assert m.get_input_embeddings().weight.data_ptr() == m.get_output_embeddings().weight.data_ptr()
    assert type(m.model.norm).__name__ == "LlamaRMSNorm"
    assert count_params(m) < sum(p.numel() for p in m.parameters()) + m.config.vocab_size * 32 + 1
    with pytest.raises(UnknownPreset, match="unknown model preset 'huge'"):
        build_model("huge", nano_tokenizer)


def test_same_seed_same_init(nano_tokenizer):
    a = build_model("nano", nano_tokenizer, seed=3)
    b = build_model("nano", nano_tokenizer, seed=3)
    c = build_model("nano", nano_tokenizer, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_save_load_round_trip(nano_tokenizer, tmp_path):
    m = build_model("nano", nano_tokenizer, seed=1)
    m.save_pretrained(tmp_path)
    nano_tokenizer.save_pretrained(tmp_path)
    m2, tok2 = load_model(str(tmp_path))
    ids = torch.tensor([nano_tokenizer("Problem: 1 + 2")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(m.eval()(ids).logits, m2.eval()(ids).logits, atol=0, rtol=0)
    assert len(tok2) == len(nano_tokenizer)


def test_load_model_errors(tmp_path, store):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_spec(str(tmp_path / "empty"))
    with pytest.raises(ModelNotFound, match="squigglray train-base --preset tiny"):
        resolve_spec("tiny", store)
    with pytest.raises(ModelNotFound, match="hf download someone/some-model"):
        load_model("someone/some-model")  # HF_HUB_OFFLINE=1 in conftest
