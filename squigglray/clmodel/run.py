"""One CLModel training run end to end: data -> tokenizer -> staged training -> milestones -> artifacts.

Artifacts under runs/<run_id>/ (DESIGN.md layout): config.json (with provenance), scalars.parquet
(the loss curves), checkpoints/final/ (`CLModel.save_pretrained` + the tokenizer), eval.json (the
milestones) and reports/report.md with plots. run_id = clmodel-<name>-<config hash>, so the same
config and seed give the same run id and the same weights.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import torch

from squigglray import __version__
from squigglray.clmodel.config import ClmodelRunConfig, run_id
from squigglray.clmodel.data import build_examples, slice_hash
from squigglray.clmodel.evaluate import evaluate
from squigglray.clmodel.model import CLModel
from squigglray.clmodel.train import train
from squigglray.config import config_hash
from squigglray.paths import ArtifactStore


def make_tokenizer(cfg: ClmodelRunConfig):
    from squigglray.families import list_families, sample
    from squigglray.models import train_tokenizer

    texts = [x.problem for f in cfg.data.families or list_families() for x in sample(f, cfg.data.n_per_family, cfg.seed)]
    return train_tokenizer(texts, vocab_size=cfg.data.vocab_size)


def _toolbox(mode: str, timeout_s: float):
    if mode == "none":
        return None
    from squigglray.verify.tools import ToolBox

    return ToolBox(timeout_s=timeout_s)


def run_training(cfg: ClmodelRunConfig, data_dir: str | None = None, log: Callable[[str], None] = print,
                 progress: bool = True) -> dict[str, Any]:
    store = ArtifactStore(data_dir)
    rid = run_id(cfg)
    tok = make_tokenizer(cfg)
    mcfg = cfg.model_config_for(len(tok), tok.pad_token_id)
    d = cfg.data
    train_ex = build_examples(tok, mcfg.ops, d.families, d.n_per_family, cfg.seed, mcfg.steps, mcfg.max_len)
    test_ex = build_examples(tok, mcfg.ops, d.families, d.eval_per_family, cfg.seed + 10_000, mcfg.steps, mcfg.max_len)
    provenance = {"run_id": rid, "seed": cfg.seed, "dataset_slice_hash": slice_hash(train_ex),
                  "eval_slice_hash": slice_hash(test_ex), "config_hash": config_hash(cfg), "version": __version__}
    log(f"{rid}: {len(train_ex)} train / {len(test_ex)} eval examples, {len(tok)} tokens, {mcfg.num_ops} ops")
    torch.manual_seed(cfg.seed)
    model = CLModel(mcfg)
    tools = _toolbox(cfg.train.tools, cfg.train.tool_timeout_s)
    try:
        history = train(model, train_ex, cfg.train, cfg.seed, tools=tools, progress=progress,
                        on_log=lambda r: log(f"step {r['step']:4d} {r['stage']:9s} loss {r['loss']:.3f} "
                                             f"action {r['loss_action']:.3f}"))
    finally:
        if tools is not None:
            tools.close()
    eval_tools = _toolbox(cfg.eval.tools, cfg.train.tool_timeout_s)
    try:
        metrics = evaluate(model, test_ex, train_ex, tools=eval_tools, latency_n=cfg.eval.latency_examples)
        if eval_tools is not None:
            metrics["tool_stats"] = eval_tools.stats()
    finally:
        if eval_tools is not None:
            eval_tools.close()
    metrics["params"] = sum(p.numel() for p in model.parameters())
    metrics["train_seconds"] = history[-1]["seconds"] if history else 0.0
    out = {**provenance, "config": cfg.model_dump(mode="json"), "model_config": mcfg.to_dict(),
           "history": history, "eval": metrics}
    _write(store, rid, model, tok, out)
    return out


def _write(store: ArtifactStore, rid: str, model: CLModel, tok, out: dict[str, Any]) -> None:
    from squigglray.report.clmodel_report import write_report

    meta = {k: out[k] for k in ("run_id", "seed", "dataset_slice_hash", "config_hash", "version")}
    store.write_json(store.run_config(rid), {**meta, "config": out["config"], "model_config": out["model_config"]})
    rows = [{**meta, **r} for r in out["history"]]
    store.write_parquet(store.run_scalars(rid), pa.Table.from_pylist(rows))
    store.write_json(f"{store.run_dir(rid)}/eval.json", {**meta, **out["eval"]})
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        store.upload_dir(Path(tmp), f"{store.run_checkpoints(rid)}/final")
    write_report(store, rid, out)
