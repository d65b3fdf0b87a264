"""Train the base model from scratch on the family mixture and write every artifact of the run:

    runs/<run_id>/config.json, run.json, probes.json, scalars.parquet, checkpoints/final (save_pretrained)
    geometry_state/<run_id>.parquet (when geometry capture is on; probe A/B columns join the scalars)
    models/<preset>.json  -> the checkpoint that `load_model("<preset>")` resolves to

The run id carries the config hash, so an identical config finds (and may reuse) its run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from squigglray import __version__
from squigglray.config import config_hash
from squigglray.models import build_model, count_params, train_tokenizer
from squigglray.paths import ArtifactStore
from squigglray.schemas import Provenance, RunRecord
from squigglray.training.cadence import log_steps
from squigglray.training.callbacks import ProgressCallback, TrainerCallback, TrainState
from squigglray.training.config import BaseTrainConfig, run_id_for
from squigglray.training.data import CurriculumSampler, Pool, build_pool
from squigglray.data.stream import local_epoch
from squigglray.training.stream import StreamBatches, rows_per_step, stream_tokenizer
from squigglray.training.trainer import Trainer, seed_everything


def curriculum_label(cfg: BaseTrainConfig) -> str:
    return " -> ".join(f"{p.name}({p.fraction:g}: {p.levels})" for p in cfg.curriculum)


def provenance(cfg: BaseTrainConfig, pool: Pool) -> Provenance:
    return Provenance(
        run_id=run_id_for(cfg), seed=cfg.seed, config_hash=config_hash(cfg),
        dataset_slice_id=pool.slice_id, dataset_slice_hash=pool.slice_hash,
        curriculum=curriculum_label(cfg), package_version=__version__,
    )


def publish(store: ArtifactStore, name: str, run_id: str) -> None:
    store.write_json(store.model_pointer(name), {
        "run_id": run_id, "checkpoint": f"{store.run_checkpoints(run_id)}/final",
    })


def tokenizer_for(cfg: BaseTrainConfig, pool: Pool, store: ArtifactStore):
    """A fresh run's tokenizer, trained on the pool's texts. A streamed run's is kept under
    runs/<run_id>/tokenizer, so the Ray Data pipeline a trial builds and its workers' model
    tokenize alike, also after a restart."""
    if pool.source is None:
        return train_tokenizer(pool.texts(), cfg.model.vocab_size)
    rel = f"{store.run_dir(run_id_for(cfg))}/tokenizer"
    if not store.exists(f"{rel}/tokenizer.json"):
        with tempfile.TemporaryDirectory() as tmp:
            train_tokenizer(pool.texts(), cfg.model.vocab_size).save_pretrained(tmp)
            store.upload_dir(tmp, rel)
    with tempfile.TemporaryDirectory() as tmp:
        return AutoTokenizer.from_pretrained(store.download_dir(rel, tmp))


def _fresh_model(cfg: BaseTrainConfig, pool: Pool, store: ArtifactStore):
    tokenizer = tokenizer_for(cfg, pool, store)
    model = build_model(cfg.model.preset, tokenizer, cfg.model.max_seq_len, seed=cfg.seed, shape=cfg.model.shape)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def _held_out(cfg: BaseTrainConfig, pool: Pool, store: ArtifactStore) -> tuple[list, list] | None:
    """The instances of probes A and B (geometry captures on A), drawn before any model is built, so
    a slice without held-out items fails first."""
    from squigglray.eval.probes import probe_instances  # it imports training

    return probe_instances(cfg, pool.problems(), store) if cfg.probes.enabled or cfg.geometry.enabled else None


def _instruments(cfg: BaseTrainConfig, held_out: tuple[list, list] | None, tokenizer, prov: Provenance,
                 store: ArtifactStore, lead: bool = True) -> tuple[list[TrainerCallback], Any, Any]:
    """Probe A/B evaluation and geometry capture at the logging cadence, as configured; the lead
    worker writes the probe manifest (instances and hashes) once per run."""
    from squigglray.eval.probes import Generation, ProbeCallback, capture_batch, encode_probes  # they import training
    from squigglray.geometry.capture import GeometryCapture
    from squigglray.solve.equivalence import EquivalenceChecker

    if held_out is None:
        return [], None, None
    probe_a, probe_b = encode_probes(cfg, tokenizer, held_out)
    answer = cfg.probes.answer_mode(on_slice=bool(cfg.data.slice))
    generation = (Generation(tokenizer, cfg.probes.max_new_tokens, cfg.eval.code_timeout_s, EquivalenceChecker(),
                             cfg.model.max_seq_len) if answer == "generate" else None)
    probes = ProbeCallback([probe_a, probe_b], generation) if cfg.probes.enabled else None
    cbs: list[TrainerCallback] = [probes] if probes else []
    geometry = None
    manifest = {"probes": {p.name: p.manifest() for p in (probe_a, probe_b)} if cfg.probes.enabled else {},
                "source": f"slice {cfg.data.slice}" if cfg.data.slice else "synthetic families",
                "answer_acc": answer}
    if cfg.geometry.enabled:
        steps = log_steps(cfg.train.steps, cfg.train.log_dense_until, cfg.train.log_every)
        geometry = GeometryCapture(steps, capture_batch(probe_a, cfg.geometry.capture_batch_size), prov,
                                   **cfg.geometry.capture_options())
        manifest["capture_batch_hash"] = geometry.capture_batch_hash
        cbs.append(geometry)
    if lead:
        store.write_json(f"{store.run_dir(prov.run_id)}/probes.json", manifest)
    return cbs, geometry, probes


def resources(trainer: Trainer, state: TrainState, geometry, probes=None) -> dict[str, Any]:
    """What the run cost where it ran (runs/<run_id>/resources.json; timings, so outside run.json and
    the scalars, which repeat exactly). Rates are over the steps after the first logged one, which
    also waits for the model's first compile and the data pipeline's start: trained tokens per
    second, and the capture's seconds against the rest of the steps' (its overhead at the run's
    cadence); the probes' seconds (both counted in the steps' wall time); the device's peak
    allocated memory on CUDA."""
    first = trainer.history[0] if trainer.history and trainer.history[0]["step"] < state.step else None
    steady = state.wall_s - (first["wall_s"] if first else 0.0)
    capture = geometry.seconds if geometry is not None else None
    return {"device": str(trainer.device), "world_size": trainer.world, "train_seconds": state.wall_s,
            "tokens_per_s": (state.tokens_seen - (first["tokens_seen"] if first else 0)) / max(steady, 1e-9),
            "capture_seconds": capture,
            "capture_overhead": capture / max(steady - capture, 1e-9) if capture is not None else None,
            "probe_seconds": probes.seconds if probes is not None else None,
            "peak_memory_gib": (torch.cuda.max_memory_allocated(trainer.device) / 2**30
                                if trainer.device.type == "cuda" else None)}


def train_base(
    cfg: BaseTrainConfig,
    store: ArtifactStore,
    callbacks: list[TrainerCallback] | None = None,
    progress_factory=None,
    progress: bool = True,
    resume_from: str | Path | None = None,
    checkpoint_sink: Callable[[str | None, TrainState], None] | None = None,
    rank: int = 0,
    world: int = 1,
    stream_epoch: Callable[[], Iterable[pa.Table]] | None = None,
) -> RunRecord | None:
    """Train (or continue from `resume_from`, a checkpoint folder this function wrote) and write the
    run's artifacts. Every `train.checkpoint_every` steps a resumable checkpoint (save_pretrained
    weights + tokenizer + trainer_state.pt) goes to `checkpoint_sink(folder, state)`, by default to
    runs/<run_id>/checkpoints/step-<N>; the folder is temporary, so a sink copies what it keeps.

    `rank` of `world`: one data-parallel worker (torch.distributed set up by the caller, e.g. Ray
    Train): each trains its shard of every batch; worker 0 alone captures geometry, runs the probes,
    checkpoints and writes the artifacts (the others' sinks get folder None; they return None). Under
    `train.parallel: fsdp` every worker runs the probes and the capture and gathers the checkpoints'
    states with worker 0 (collectives over sharded weights), which alone keeps them.

    With `data.stream`, `stream_epoch()` gives one pass over this worker's examples (Ray Train's
    dataset shard); without it the stream is read here (`data.stream.local_epoch`)."""
    lead = rank == 0
    sharded = world > 1 and cfg.train.parallel == "fsdp"
    instrumented = lead or sharded  # who runs the probes and the capture (Trainer: FSDP's collectives)
    rid = run_id_for(cfg)
    rows = rows_per_step(cfg, world) if cfg.data.stream else 0  # a step's packed rows, checked before any work
    seed_everything(cfg.seed)
    pool = build_pool(cfg, store)
    held_out = _held_out(cfg, pool, store) if instrumented else None
    prov = provenance(cfg, pool)
    saved = None
    if resume_from is not None:
        saved = torch.load(Path(resume_from) / "trainer_state.pt", weights_only=False)
        if saved["config_hash"] != prov.config_hash or saved["dataset_slice_hash"] != pool.slice_hash:
            raise ValueError(f"checkpoint {resume_from} belongs to another config or data slice than run {rid}")
        tokenizer = AutoTokenizer.from_pretrained(resume_from)
        model = AutoModelForCausalLM.from_pretrained(resume_from)
    else:
        model, tokenizer = _fresh_model(cfg, pool, store)
    if pool.source is not None:
        sampler = None
        epoch = stream_epoch or local_epoch(
            pool.source, stream_tokenizer(cfg, pool.source, tokenizer), cfg.seed)
        next_batch = StreamBatches(epoch, rows // world, cfg.model.max_seq_len,
                                   tokenizer.pad_token_id, cfg.seed, cfg.train.micro_batch_size)
        phase_of, data_info = (lambda s: cfg.curriculum[0].name), {
            "streamed": pool.source.kind, "rows_per_step": rows,
            "token_budget": cfg.train.steps * rows * cfg.model.max_seq_len}
    else:
        sampler = CurriculumSampler(cfg, pool, tokenizer)
        if saved is not None:
            sampler.rng.bit_generator.state = saved["sampler_rng"]
        sharded = world > 1 or cfg.train.micro_batch_size
        next_batch = sampler.shard(rank, world, cfg.train.micro_batch_size) if sharded else sampler.batch
        phase_of = lambda s: sampler.phase_at(s).name  # noqa: E731
        data_info = {"dropped_over_max_seq_len": sampler.dropped, "chunked_over_max_seq_len": sampler.chunked}
    if lead:
        store.write_json(store.run_config(rid), {
            "config": cfg.model_dump(mode="json"), "provenance": prov.model_dump(), **data_info})
    instruments, geometry, probes = (_instruments(cfg, held_out, tokenizer, prov, store, lead) if instrumented
                                     else ([], None, None))

    def save_to(folder: str, weights: dict[str, torch.Tensor] | None) -> None:
        model.save_pretrained(folder, state_dict=weights)
        tokenizer.save_pretrained(folder)

    def checkpoint(state: TrainState) -> None:
        # whole states: under FSDP collectives every worker joins, received by worker 0
        weights, trainer_state = (trainer.full_weights(), trainer.trainer_state()) if sharded else (None, None)
        if not lead:
            if checkpoint_sink is not None:
                checkpoint_sink(None, state)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_to(tmp, weights)
            torch.save({"trainer": trainer_state or trainer.trainer_state(),
                        "sampler_rng": sampler and sampler.rng.bit_generator.state,
                        "run_id": rid, "config_hash": prov.config_hash, "dataset_slice_hash": pool.slice_hash},
                       Path(tmp) / "trainer_state.pt")
            if checkpoint_sink is not None:
                checkpoint_sink(tmp, state)
            else:
                store.upload_dir(tmp, f"{store.run_checkpoints(rid)}/step-{state.step:06d}")

    cbs: list[TrainerCallback] = [*instruments, *(callbacks or [])]
    if progress and lead:
        cbs.append(ProgressCallback(progress_factory, desc=f"train {rid}"))
    resume = saved["trainer"] if saved else None
    if resume is not None and not instrumented:
        resume = {**resume, "callbacks": {}}  # worker 0's instruments' state
    trainer = Trainer(model, cfg.train, next_batch, cbs, phase_of=phase_of, checkpoint=checkpoint, resume=resume)
    state = trainer.fit()
    weights = trainer.full_weights() if sharded else None
    if not lead:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        save_to(tmp, weights)
        store.upload_dir(tmp, f"{store.run_checkpoints(rid)}/final")
    table = pa.Table.from_pylist(trainer.history)
    for col, val in (("run_id", rid), ("seed", cfg.seed), ("config_hash", prov.config_hash),
                     ("dataset_slice_hash", pool.slice_hash), ("package_version", __version__)):
        table = table.append_column(col, pa.array([val] * len(table)))
    store.write_parquet(store.run_scalars(rid), table)
    if geometry is not None:
        geometry.write(store)
    record = RunRecord(
        provenance=prov, model_preset=cfg.model.preset, n_params=count_params(model),
        steps=state.step, tokens_seen=state.tokens_seen, train_seconds=round(state.wall_s, 2),
        final_loss=trainer.history[-1]["loss"], config=cfg.model_dump(mode="json"),
    )
    store.write_text(f"{store.run_dir(rid)}/run.json", record.to_json())
    store.write_json(f"{store.run_dir(rid)}/resources.json", resources(trainer, state, geometry, probes))
    publish(store, cfg.model.preset, rid)
    torch.set_grad_enabled(True)
    return record
