"""DCM soft-prompt optimizer on a random-init nano model: batching changes nothing per example,
the loss covers only the target, frozen examples stop moving, a converged example decodes exactly."""

from __future__ import annotations

import pytest
import torch

from squigglray.config import ConfigError, build_config
from squigglray.dcm.config import DcmConfig
from squigglray.dcm.data import QAPair

PAIRS = [QAPair(f"p{i}", f"What is {i} + {i + 1}?", str(2 * i + 1), "test") for i in range(5)]


@pytest.fixture(scope="module")
def fz(nano_tokenizer):
    from squigglray.dcm.slots import freeze
    from squigglray.models import build_model

    torch.manual_seed(0)
    model = build_model("nano", nano_tokenizer, 128, seed=0)
    return freeze(model, nano_tokenizer, {"q": "Question", "a": "Answer"})


def cfg(**kw) -> DcmConfig:
    base = {"k": 4, "batch_size": 5, "optim": {"steps": 12, "lr": 0.05, "restarts": 0}}
    base.update(kw)
    return build_config(DcmConfig, base)


def test_batched_equals_one_at_a_time(fz):
    from squigglray.dcm.optimizer import optimize

    together = optimize(fz, cfg(), PAIRS)
    alone = [optimize(fz, cfg(batch_size=1), [p])[0] for p in PAIRS]
    for a, b in zip(together, alone):
        assert a.pair_id == b.pair_id and a.steps == b.steps
        assert a.curve == pytest.approx(b.curve, rel=1e-4, abs=1e-5)
        assert torch.allclose(a.slots, b.slots, atol=1e-4)
    assert together[0].curve[-1] < together[0].curve[0]  # it learns


def test_batched_matches_the_seed_loop(fz):
    """From the same initialization, the batched optimizer (own AdamW, losses from the target
    positions only) follows seed 001's loop: torch's AdamW and the model's labels= loss per mode."""
    from squigglray.dcm.optimizer import optimize
    from squigglray.dcm.reference import optimize_one

    c = cfg(optim={"steps": 12, "lr": 0.05, "weight_decay": 1.0, "restarts": 0})  # decay large enough to show
    for mine, pair in zip(optimize(fz, c, PAIRS), PAIRS):
        curve, slots = optimize_one(fz, c, pair)
        assert len(mine.curve) == len(curve) == 12  # no example of the random-init model converges
        assert mine.curve == pytest.approx(curve, rel=1e-4, abs=1e-5)
        assert torch.allclose(mine.slots, slots, atol=1e-4)  # the last update too
    with pytest.raises(ValueError, match="paraphrase"):
        optimize_one(fz, c, QAPair("v", "Q?", "A", "test", a_variants=("a",)))


def test_paraphrase_variants_add_to_the_loss(fz):
    """Semantic-equivalence regularization: an example's loss sums its main target and its variants;
    the reported per-mode loss is the main target's."""
    from squigglray.dcm.optimizer import init_slots, optimize
    from squigglray.dcm.slots import row_losses, slot_prompt

    pair = QAPair("v", "What is 2 + 3?", "5", "test", a_variants=("five", "2 + 3 = 5"))
    c = cfg(modes=["a"], optim={"steps": 1, "restarts": 0})
    (r,) = optimize(fz, c, [pair])
    prompt = slot_prompt(fz, "a", init_slots(fz, c, "v", 0))
    texts = [pair.answer, *pair.a_variants]
    losses, _ = row_losses(fz, [prompt] * 3, [fz.encode(t, eos=True) for t in texts])
    assert r.curve[0] == pytest.approx(float(losses.sum()), rel=1e-5)
    assert r.loss["a"] == pytest.approx(float(losses[0]), rel=1e-5)


def test_token_initialization(fz):
    """init: tokens starts each slot at a (scaled) embedding row; the same seed gives the same slots."""
    from squigglray.dcm.optimizer import init_slots

    c = cfg(init="tokens", init_scale=0.5)
    slots = init_slots(fz, c, "p0", 0)
    rows = fz.embed.float() * 0.5
    assert all(bool((rows == s).all(1).any()) for s in slots)
    assert torch.equal(slots, init_slots(fz, c, "p0", 0)) and not torch.equal(slots, init_slots(fz, c, "p0", 1))


def test_loss_is_on_the_target_only(fz):
    """Changing the prompt's content changes the loss; appending garbage after the target does not
    change the target positions' loss (right padding is invisible to a causal model)."""
    from squigglray.dcm.slots import row_losses, slot_prompt

    slots = torch.randn(4, fz.dim) * fz.emb_std
    prompt = slot_prompt(fz, "a", slots)
    tgt = fz.encode("17", eos=True)
    (short,), _ = row_losses(fz, [prompt], [tgt])
    (again, longer), _ = row_losses(fz, [prompt, prompt], [tgt, tgt + fz.encode(" and more words", eos=False)])
    assert float(short) == pytest.approx(float(again), rel=1e-5)
    manual = torch.nn.functional.cross_entropy(
        fz.model(inputs_embeds=torch.cat([prompt, fz.embed[torch.tensor(tgt)]])[None]).logits[0, prompt.shape[0] - 1: -1],
        torch.tensor(tgt))
    assert float(short) == pytest.approx(float(manual), rel=1e-5)


def test_frozen_examples_stop_moving(fz):
    from squigglray.dcm.optimizer import _attempt, targets_for

    c = cfg(k=8, modes=["a"], optim={"steps": 40, "lr": 0.1, "restarts": 0, "stop_accuracy": 0.5})
    res = _attempt(fz, c, PAIRS[:3], [targets_for(fz, p, c) for p in PAIRS[:3]], 0)
    done = [r for r in res if r.converged]
    assert done, "at stop_accuracy 0.5 some example converges"
    for r in done:
        assert len(r.curve) == r.converged_step and min(r.token_acc.values()) >= 0.5
        # Re-running with more steps leaves a converged example's slots exactly where they froze.
    more = _attempt(fz, c.model_copy(update={"optim": c.optim.model_copy(update={"steps": 60})}), PAIRS[:3],
                    [targets_for(fz, p, c) for p in PAIRS[:3]], 0)
    for a, b in zip(res, more):
        if a.converged:
            assert torch.equal(a.slots, b.slots) and a.converged_step == b.converged_step


def test_converged_example_decodes_exactly(solver_store):
    """On a trained model (a random-init one can hardly be steered) an answer is memorized exactly."""
    from squigglray.dcm.optimizer import optimize
    from squigglray.dcm.slots import freeze, greedy_decode, slot_prompt
    from squigglray.models import load_model

    fz = freeze(*load_model("nano", solver_store), {"q": "Question", "a": "Answer"})
    c = cfg(k=8, modes=["a"], optim={"steps": 150, "lr": 0.05, "restarts": 1})
    res = optimize(fz, c, PAIRS[:2])
    for r, p in zip(res, PAIRS[:2]):
        assert r.converged and r.token_acc["a"] == 1.0, r
        target = fz.encode(p.answer, eos=True)
        (out,) = greedy_decode(fz, [slot_prompt(fz, "a", r.slots)], [len(target) + 2])
        assert out == target


def test_baselines_and_criteria(fz):
    from squigglray.dcm.criteria import baselines, dataset_table, health, seed_converged

    base = baselines(fz, cfg(), PAIRS[:2])
    assert set(base[0]) == {"q", "a"} and set(base[0]["a"]) == {"random", "single_token", "full_context"}
    assert all(v > 0 for m in base[0].values() for v in m.values())
    assert seed_converged({"q": 0.1, "a": 0.1}, {m: {"random": 1.0, "full_context": 5.0} for m in "qa"})
    assert not seed_converged({"q": 0.5, "a": 0.1}, {m: {"random": 1.0, "full_context": 0.2} for m in "qa"})
    assert health([5, 4, 3, 2, 1.5, 1.2]) == "healthy"
    assert health([5, 4.99, 4.98, 4.99, 4.98, 4.97]) == "flat"
    assert health([5, 5, 5, 4.99, 5, 5, 1, 0.5]) == "plateau_then_drop"
    assert health([5, 2, 4, 1.5, 4, 1, 3.5, 1]) == "oscillation"
    assert health([5, 3, 1, 2, 4, 5]) == "diverging"
    row = {"seed_converged": True, "loss": {"q": 0.1, "a": 0.1},
           "baselines": {m: {"random": 1.0, "full_context": 0.09} for m in "qa"}}
    table = dataset_table([row, {**row, "seed_converged": False}])
    assert table["seed_rule_convergence_rate"]["value"] == 0.5
    assert table["seed_rule_convergence_rate"]["level"] == "minimum viable"
    assert table["mean_loss_ratio_vs_random"]["level"] == "excellent"


def test_bad_configs_are_clear():
    with pytest.raises(ConfigError, match="modes"):
        build_config(DcmConfig, {"modes": ["q", "q"]})
    with pytest.raises(ConfigError, match="k"):
        build_config(DcmConfig, {"k": 0})
    with pytest.raises(ConfigError, match="mode_words"):
        build_config(DcmConfig, {"mode_words": {"q": "Question"}})


def test_model_without_bos_or_pad_token(nano_tokenizer):
    """Qwen-style tokenizers have no BOS and may have no pad token: rows start at the mode embedding."""
    import copy

    from squigglray.dcm.criteria import baselines
    from squigglray.dcm.optimizer import optimize
    from squigglray.dcm.slots import freeze
    from squigglray.models import build_model

    tok = copy.deepcopy(nano_tokenizer)
    tok.bos_token, tok.pad_token = None, None
    assert tok.bos_token_id is None and tok.pad_token_id is None
    fz = freeze(build_model("nano", nano_tokenizer, 128, seed=0), tok, {"q": "Question", "a": "Answer"})
    assert fz.prefix().shape[0] == 0 and fz.pad_id == tok.eos_token_id
    res = optimize(fz, cfg(optim={"steps": 3, "restarts": 0}), PAIRS[:2])
    assert all(len(r.curve) == 3 for r in res)
    assert set(baselines(fz, cfg(), PAIRS[:1])[0]["a"]) == {"random", "single_token", "full_context"}


def test_bf16_model_keeps_fp32_slots(solver_store):
    """precision bf16 (the GPU default) loads a bf16 model; the slots stay fp32, and the trained
    model still steers toward an answer."""
    from squigglray.dcm.optimizer import optimize
    from squigglray.dcm.run import load_frozen

    fz = load_frozen(cfg(model="nano", precision="bf16", device="cpu"), solver_store)
    assert next(fz.model.parameters()).dtype == torch.bfloat16
    res = optimize(fz, cfg(k=8, modes=["a"], optim={"steps": 40, "lr": 0.05, "restarts": 0}), PAIRS[:2])
    for r in res:
        assert r.slots.dtype == torch.float32 and all(torch.isfinite(torch.tensor(r.curve)))
        assert r.curve[-1] < 0.5 * r.curve[0], r.curve


HUB_ARCHITECTURES = {  # the families of the hub models DCM targets, at toy size
    "Qwen2": dict(num_key_value_heads=1, max_window_layers=2),  # Qwen2.5, DeepSeek-R1-Distill-Qwen
    "Phi3": dict(num_key_value_heads=2, pad_token_id=None),
    "Phi": dict(partial_rotary_factor=0.5),  # phi-2: LayerNorm, partial rotary, dense attention
}


@pytest.mark.parametrize("arch", sorted(HUB_ARCHITECTURES))
def test_hub_architectures_from_a_saved_folder(arch, nano_tokenizer, tmp_path):
    """A save_pretrained folder of each architecture loads through the job's loader (the hub-id path
    without the download); batching still changes nothing per example and the loss falls."""
    import copy

    import transformers

    from squigglray.dcm.optimizer import optimize
    from squigglray.dcm.run import load_frozen
    from squigglray.paths import ArtifactStore

    tok = copy.deepcopy(nano_tokenizer)
    if arch == "Qwen2":
        tok.bos_token = None  # Qwen tokenizers have no BOS
    config = getattr(transformers, f"{arch}Config")(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=128, **HUB_ARCHITECTURES[arch])
    torch.manual_seed(0)
    getattr(transformers, f"{arch}ForCausalLM")(config).save_pretrained(tmp_path / arch)
    tok.save_pretrained(tmp_path / arch)
    fz = load_frozen(cfg(model=str(tmp_path / arch), device="cpu"), ArtifactStore(str(tmp_path / "data")))
    assert type(fz.model).__name__ == f"{arch}ForCausalLM" and (fz.bos_id is None) == (arch == "Qwen2")
    c = cfg(optim={"steps": 6, "lr": 0.05, "restarts": 0})
    together = optimize(fz, c, PAIRS[:3])
    alone = [optimize(fz, c.model_copy(update={"batch_size": 1}), [p])[0] for p in PAIRS[:3]]
    for a, b in zip(together, alone):
        assert a.curve == pytest.approx(b.curve, rel=1e-4, abs=1e-5)
        assert a.curve[-1] < a.curve[0]
