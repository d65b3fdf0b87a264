"""CLModel training on the project's families: examples from op traces, staged warm-up, it learns,
and the run's artifacts (config with provenance, scalars, checkpoint, eval, report) are deterministic."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from squigglray.clmodel.config import DEFAULT_OPS, CLModelConfig
from squigglray.clmodel.data import IGNORE, build_examples, collate, tool_input
from squigglray.clmodel.evaluate import ping_pongs
from squigglray.clmodel.model import CLModel
from squigglray.clmodel.run import ClmodelRunConfig, run_id, run_training
from squigglray.clmodel.train import TrainSection, stage_at, train

FAMILIES = ["arithmetic", "gcd_lcm", "quadratic_roots", "stars_bars", "crt", "divisor_count"]


def small_run(**train) -> ClmodelRunConfig:
    return ClmodelRunConfig.model_validate({
        "name": "test", "seed": 0,
        "model": {"d_model": 32, "n_heads": 2, "cond_heads": 2, "rvq_dim": 16, "codebook_size": 16,
                  "num_quantizers": 2, "steps": 6, "d_state": 32, "skim_layers": 1, "heavy_layers": 1},
        "data": {"families": FAMILIES, "n_per_family": 24, "eval_per_family": 8, "vocab_size": 320},
        "train": {"batch_size": 24, "warmup_steps": 15, "joint_steps": 90, "lr": 0.008, "log_every": 5, **train},
        "eval": {"tools": "none", "latency_examples": 4},
    })


def test_examples_follow_the_traces(nano_tokenizer):
    ex = build_examples(nano_tokenizer, DEFAULT_OPS, FAMILIES, 3, seed=0, steps=6, max_len=64)
    assert len(ex) == 3 * len(FAMILIES)
    arith = [e for e in ex if e.family == "arithmetic"][0]
    assert [DEFAULT_OPS[i] for i in arith.ops] == ["parse", "compute", "compute", "conclude"]
    b = collate(ex, steps=6, num_ops=len(DEFAULT_OPS), pad_id=nano_tokenizer.pad_token_id)
    assert b["ids"].shape[0] == len(ex) and (b["ops"][:, 0] != IGNORE).all()
    assert ((b["stop"] == 1).sum(1) == 1).all(), "exactly one STOP target per trace"
    assert tool_input("Compute 9 * 6 + 7 * 1 - 45.") == "9 * 6 + 7 * 1 - 45"
    assert tool_input("Find x such that 3x + 64 = 9x + 16.") == "3*x + 64 - (9*x + 16)"
    assert tool_input("What is gcd(44, 16)?") is None
    with pytest.raises(ValueError, match="not reasoner ops"):
        build_examples(nano_tokenizer, ("parse",), ["arithmetic"], 1, 0, 6, 64)


def test_stages_run_l1_then_deeper_levels_then_joint():
    cfg, t = CLModelConfig.nano(num_quantizers=3), TrainSection(warmup_steps=2, joint_steps=3)
    assert [stage_at(s, cfg, t) for s in range(9)] == [("warmup", 1)] * 2 + [("warmup", 2)] * 2 + \
        [("warmup", 3)] * 2 + [("joint", 3)] * 3


def test_ping_pong_counter():
    assert ping_pongs(torch.tensor([[0, 1, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1]]), window=2) == 1
    assert ping_pongs(torch.tensor([[0, 1, 1, 1, 0]]), window=2) == 0


def test_training_learns_the_op_traces(nano_tokenizer):
    cfg = small_run()
    mcfg = cfg.model_config_for(len(nano_tokenizer), nano_tokenizer.pad_token_id)
    ex = build_examples(nano_tokenizer, mcfg.ops, FAMILIES, 24, 0, mcfg.steps, mcfg.max_len)
    torch.manual_seed(0)
    model = CLModel(mcfg)
    hist = train(model, ex, cfg.train, seed=0, progress=False)
    assert [h["stage"] for h in hist][0] == "warmup-L1" and hist[-1]["stage"] == "joint-L2"
    first, last = hist[0], hist[-1]
    assert last["loss_action"] < 0.5 * first["loss_action"], (first["loss_action"], last["loss_action"])
    assert last["loss"] < first["loss"]
    from squigglray.clmodel.evaluate import evaluate

    test = build_examples(nano_tokenizer, mcfg.ops, FAMILIES, 8, 99, mcfg.steps, mcfg.max_len)
    m = evaluate(model, test, ex, latency_n=3)
    acc = m["accuracy"]
    assert acc["action_teacher_forced"] > max(4 * acc["action_chance"], acc["action_majority"] + 0.1), acc
    assert m["quantizer"]["L1"]["used_codes"] >= 3, "codebook collapsed"
    assert m["routing"]["ping_pong"] == 0
    sm = m["split_merge"]
    assert sm["old_ids_resolve_live"] and sm["moved"] < 0.25, sm


def test_run_writes_deterministic_artifacts(store):
    cfg = small_run(warmup_steps=3, joint_steps=6, tools="inprocess")
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"tools": "inprocess"})})
    a = run_training(cfg, store.location, log=lambda m: None, progress=False)
    rid = run_id(cfg)
    assert a["run_id"] == rid
    conf = store.read_json(store.run_config(rid))
    for key in ("run_id", "seed", "dataset_slice_hash", "config_hash", "version"):
        assert conf[key] == a[key]
    scalars = pq.read_table(store.local_path(store.run_scalars(rid)))
    assert {"loss", "loss_action", "stage", "run_id", "dataset_slice_hash"} <= set(scalars.column_names)
    report = store.read_text(store.run_report(rid))
    assert "Quantizer health" in report and "Tools" in report and "Latency" in report
    assert store.exists(f"{store.run_dir(rid)}/plots/losses.png")
    ck = store.local_path(f"{store.run_checkpoints(rid)}/final")
    model = CLModel.from_pretrained(ck)
    assert model.cfg.to_dict() == a["model_config"]
    assert a["eval"]["tools"]["calls_per_example"] >= 0
    b = run_training(cfg, store.location, log=lambda m: None, progress=False)
    assert b["history"][-1]["loss"] == a["history"][-1]["loss"], "same config and seed, same run"
    assert b["dataset_slice_hash"] == a["dataset_slice_hash"]
