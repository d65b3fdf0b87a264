"""Train the base model from scratch on the family mixture and write every artifact of the run:

    runs/<run_id>/config.json, run.json, scalars.parquet, checkpoints/final (save_pretrained)
    models/<preset>.json  -> the checkpoint that `load_model("<preset>")` resolves to

The run id carries the config hash, so an identical config finds (and may reuse) its run.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import pyarrow as pa
import torch

from squigglray import __version__
from squigglray.config import config_hash
from squigglray.models import build_model, count_params, train_tokenizer
from squigglray.paths import ArtifactStore
from squigglray.schemas import Provenance, RunRecord
from squigglray.training.callbacks import ProgressCallback, TrainerCallback
from squigglray.training.config import BaseTrainConfig
from squigglray.training.data import CurriculumSampler, Pool, build_pool
from squigglray.training.trainer import Trainer, seed_everything


def run_id_for(cfg: BaseTrainConfig) -> str:
    return f"{cfg.name}-{cfg.model.preset}-{config_hash(cfg)[:10]}"


def curriculum_label(cfg: BaseTrainConfig) -> str:
    return " -> ".join(f"{p.name}({p.fraction:g}: {p.levels})" for p in cfg.curriculum)


def provenance(cfg: BaseTrainConfig, pool: Pool) -> Provenance:
    return Provenance(
        run_id=run_id_for(cfg), seed=cfg.seed, config_hash=config_hash(cfg),
        dataset_slice_id=pool.slice_id, dataset_slice_hash=pool.slice_hash,
        curriculum=curriculum_label(cfg), package_version=__version__,
    )


def find_reusable(cfg: BaseTrainConfig, store: ArtifactStore, slice_hash: str | None = None) -> RunRecord | None:
    """The finished run of exactly this config and training data, if one exists under the store.

    The data check matters: a change to a family's code changes the pool but not the config."""
    rid = run_id_for(cfg)
    rel = f"{store.run_dir(rid)}/run.json"
    if not (store.exists(rel) and store.exists(f"{store.run_checkpoints(rid)}/final/config.json")):
        return None
    rec = RunRecord.model_validate(store.read_json(rel))
    slice_hash = slice_hash or build_pool(cfg).slice_hash
    same = rec.provenance.config_hash == config_hash(cfg) and rec.provenance.dataset_slice_hash == slice_hash
    return rec if same else None


class _ScalarRows(TrainerCallback):
    def __init__(self):
        self.rows: list[dict[str, Any]] = []

    def on_log(self, state, row):
        self.rows.append(dict(row))


class _PeriodicCheckpoint(TrainerCallback):
    def __init__(self, every: int, save):
        self.every, self.save = every, save

    def on_step_end(self, state, model, batch):
        if self.every and state.step % self.every == 0 and state.step < state.max_steps:
            self.save(f"step-{state.step:06d}")


def publish(store: ArtifactStore, name: str, run_id: str) -> None:
    store.write_json(store.model_pointer(name), {
        "run_id": run_id, "checkpoint": f"{store.run_checkpoints(run_id)}/final",
    })


def train_base(
    cfg: BaseTrainConfig,
    store: ArtifactStore,
    callbacks: list[TrainerCallback] | None = None,
    progress_factory=None,
    progress: bool = True,
) -> RunRecord:
    rid = run_id_for(cfg)
    seed_everything(cfg.seed)
    pool = build_pool(cfg)
    prov = provenance(cfg, pool)
    tokenizer = train_tokenizer(pool.texts(), cfg.model.vocab_size)
    model = build_model(cfg.model.preset, tokenizer, cfg.model.max_seq_len, seed=cfg.seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    sampler = CurriculumSampler(cfg, pool, tokenizer)
    store.write_json(store.run_config(rid), {
        "config": cfg.model_dump(mode="json"), "provenance": prov.model_dump(),
        "dropped_over_max_seq_len": sampler.dropped,
    })

    def save(tag: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            rel = f"{store.run_checkpoints(rid)}/{tag}"
            store.upload_dir(tmp, rel)
        return rel

    scalars = _ScalarRows()
    cbs: list[TrainerCallback] = [scalars, _PeriodicCheckpoint(cfg.train.checkpoint_every, save), *(callbacks or [])]
    if progress:
        cbs.append(ProgressCallback(progress_factory, desc=f"train {rid}"))
    trainer = Trainer(model, cfg.train, sampler.batch, cbs, phase_of=lambda s: sampler.phase_at(s).name)
    t0 = time.perf_counter()
    state = trainer.fit()
    seconds = time.perf_counter() - t0
    save("final")
    table = pa.Table.from_pylist(scalars.rows)
    for col, val in (("run_id", rid), ("seed", cfg.seed), ("config_hash", prov.config_hash),
                     ("dataset_slice_hash", pool.slice_hash), ("package_version", __version__)):
        table = table.append_column(col, pa.array([val] * len(table)))
    store.write_parquet(store.run_scalars(rid), table)
    record = RunRecord(
        provenance=prov, model_preset=cfg.model.preset, n_params=count_params(model),
        steps=state.step, tokens_seen=state.tokens_seen, train_seconds=round(seconds, 2),
        final_loss=scalars.rows[-1]["loss"], config=cfg.model_dump(mode="json"),
    )
    store.write_text(f"{store.run_dir(rid)}/run.json", record.to_json())
    publish(store, cfg.model.preset, rid)
    torch.set_grad_enabled(True)
    return record
