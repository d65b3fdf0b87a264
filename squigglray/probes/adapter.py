"""Probe adapters: how one (target, seed) probe is run. `LoraProbeAdapter` is the real one.

A probe loads the base checkpoint, wraps it with peft LoRA (the adapters' init follows the seed),
evaluates probes A/B, micro-finetunes on the target's instances for `finetune.steps` steps (the
plain training loop of squigglray.training, packed batches, the seed's instance order) with the
LoRA geometry capture at every step, evaluates again and writes, besides the returned summary:
runs/<run_id>/adapter (peft save_pretrained), runs/<run_id>/scalars.parquet and
geometry_state/<run_id>.parquet. Works on CPU with the tiny model and on CUDA with a hub model
(bf16 autocast; the base is loaded in bf16, the adapters stay fp32).
"""

from __future__ import annotations

import platform
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Protocol

import numpy as np
import pyarrow as pa
import torch

from squigglray import __version__
from squigglray.eval.probes import capture_batch, encode_probe, evaluate_probe
from squigglray.events.changepoints import EventConfig, detect_run_events, series_event_rows
from squigglray.paths import ArtifactStore
from squigglray.probes.plan import ProbePlan, Target
from squigglray.probes.signature import (
    LoraGeometryCapture, StepCoherence, base_sq_norms, drift_by_layer, hidden_states, signature,
)
from squigglray.schemas.probes import (
    MicroFinetune, ProbeEvent, ProbeGeometry, ProbeMetric, ProbeMetrics, ProbeProvenance, ProbeSummary, ProbeTimings,
    probe_id_for,
)
from squigglray.training.callbacks import ProgressCallback, TrainerCallback
from squigglray.training.config import TrainSection
from squigglray.training.data import collate_packed, encode
from squigglray.training.trainer import Trainer, autocast_for, resolve_device, seed_everything

LIBRARIES = ("torch", "transformers", "peft", "pyarrow", "numpy", "ray")


@dataclass
class ProbeJob:
    plan: ProbePlan
    target: str  # a key of plan.targets: a family id or 'control:<kind>'
    seed: int
    progress: bool = False
    callbacks: tuple[TrainerCallback, ...] = ()  # extra trainer callbacks (the Ray layer's reporter)

    @property
    def probe_id(self) -> str:
        return probe_id_for(self.target, self.seed)

    @property
    def run_id(self) -> str:
        return f"{self.plan.experiment_id}.{self.probe_id}"


class ProbeAdapter(Protocol):
    """Runs one probe and returns its summary (DIS still empty); writes its run-scoped artifacts."""

    method: str

    def run(self, job: ProbeJob, store: ArtifactStore) -> ProbeSummary: ...


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


class InstanceSampler:
    """Batches from a fixed instance list: shuffled epochs, the order set by the probe seed."""

    def __init__(self, rows, batch_size: int, seed: int, pad_id: int, row_len: int):
        self.rows, self.batch_size, self.pad_id, self.row_len = rows, batch_size, pad_id, row_len
        self.rng = np.random.default_rng([seed, 7919])
        self.queue: list[int] = []

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        picked = []
        while len(picked) < self.batch_size:
            if not self.queue:
                self.queue = self.rng.permutation(len(self.rows)).tolist()
            picked.append(self.rows[self.queue.pop()])
        return collate_packed(picked, self.pad_id, self.row_len)


def _metric(before: dict, after: dict, n: int) -> ProbeMetric:
    return ProbeMetric(n=n, **{f"{k}_{when}": float(d[k]) for k in ("loss", "token_acc", "answer_acc")
                               for when, d in (("before", before), ("after", after))})


def _events(geometry: pa.Table, losses: list[float], steps: int, prov: dict) -> list[ProbeEvent]:
    """Change-point candidates of the capture's series and of the training loss (ruptures backend)."""
    cfg = EventConfig(method="ruptures")
    rows = detect_run_events(geometry, steps, cfg).to_pylist()
    rows += series_event_rows(list(range(1, len(losses) + 1)), losses, metric="loss", layer=-1, module="scalar",
                              max_steps=steps, provenance=prov, config=cfg)
    keys = ProbeEvent.model_fields
    return [ProbeEvent(**{k: r[k] for k in keys}) for r in rows]


class LoraProbeAdapter:
    method = "lora"

    def run(self, job: ProbeJob, store: ArtifactStore) -> ProbeSummary:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        plan, cfg = job.plan, job.plan.config
        ft, target = cfg.finetune, plan.targets[job.target]
        t0 = time.perf_counter()
        section = TrainSection(steps=ft.steps, batch_size=ft.batch_size, lr=ft.lr, warmup_steps=ft.warmup_steps,
                               weight_decay=ft.weight_decay, grad_clip=ft.grad_clip, log_dense_until=0, log_every=1,
                               threads=ft.threads, device=ft.device, precision=ft.precision)
        if ft.threads:
            torch.set_num_threads(ft.threads)
        device = resolve_device(section)
        bf16 = device.type == "cuda" and ft.precision != "fp32"
        tokenizer = AutoTokenizer.from_pretrained(plan.base.path)
        model = AutoModelForCausalLM.from_pretrained(plan.base.path,
                                                     dtype=torch.bfloat16 if bf16 else torch.float32)
        seed_everything(job.seed if cfg.lora.init_seed is None else cfg.lora.init_seed)
        with warnings.catch_warnings():  # peft reads the attribute transformers 5.25 renamed; not ours to fix
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                                     lora_dropout=cfg.lora.dropout,
                                                     target_modules=list(cfg.lora.target_modules), bias="none"))
        model.to(device)
        seed_everything(job.seed)  # data order, dropout
        probe_a = encode_probe("a", plan.pairs("a"), tokenizer, ft.max_seq_len)
        probe_b = encode_probe("b", plan.pairs("b"), tokenizer, ft.max_seq_len)
        batch = capture_batch(probe_a, cfg.eval.capture_batch_size)
        t_load = time.perf_counter()

        with autocast_for(section, device):
            before = [evaluate_probe(model, p) for p in (probe_a, probe_b)]
            h_before = hidden_states(model, batch)
        w0 = base_sq_norms(model)
        t_before = time.perf_counter()

        prov = self._provenance(job, target, probe_a.hash, probe_b.hash)
        capture_steps = {*range(ft.capture_every, ft.steps + 1, ft.capture_every), ft.steps}
        capture = LoraGeometryCapture(capture_steps, batch, {
            "run_id": job.run_id, "seed": job.seed, "dataset_slice_hash": prov.dataset_slice_hash,
            "config_hash": plan.config_hash, "package_version": __version__})
        prov.capture_batch_hash = capture.capture_batch_hash
        coherence = StepCoherence()
        rows = [e for e in (encode(tokenizer, x) for x in target.instances) if len(e.ids) <= ft.max_seq_len]
        if not rows:
            raise ValueError(f"probe {job.probe_id}: no instance of {job.target} fits max_seq_len={ft.max_seq_len}")
        sampler = InstanceSampler(rows, ft.batch_size, job.seed, tokenizer.pad_token_id, ft.max_seq_len)
        callbacks: list[TrainerCallback] = [capture, coherence, *job.callbacks]
        if job.progress:
            callbacks.append(ProgressCallback(desc=f"probe {job.probe_id}"))
        trainer = Trainer(model, section, sampler.batch, callbacks)
        trainer.fit()
        t_ft = time.perf_counter()

        with autocast_for(section, device):
            after = [evaluate_probe(model, p) for p in (probe_a, probe_b)]
            drift = drift_by_layer(h_before, hidden_states(model, batch))
        t_after = time.perf_counter()

        sig, param_change = signature(model, w0, drift, cfg.signature.sketch_dim, cfg.signature.sketch_seed)
        geometry = capture.to_table()
        losses = [r["loss"] for r in trainer.history]
        events = _events(geometry, losses, ft.steps, capture.provenance) if cfg.events else []
        artifacts = self._write(job, store, model, geometry, trainer.history, prov)
        t_end = time.perf_counter()
        return ProbeSummary(
            probe_id=job.probe_id, experiment_id=plan.experiment_id, run_id=job.run_id, family_id=target.family_id,
            role=target.role, seed=job.seed, provenance=prov,
            finetune=MicroFinetune(
                level=target.level, n_instances=len(rows), instance_seed=cfg.data.instance_seed, steps=ft.steps,
                batch_size=ft.batch_size, lr=ft.lr, warmup_steps=ft.warmup_steps, weight_decay=ft.weight_decay,
                grad_clip=ft.grad_clip, lora_r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                target_modules=list(cfg.lora.target_modules), max_seq_len=ft.max_seq_len, device=str(device),
                precision="bf16" if bf16 else "fp32"),
            metrics=ProbeMetrics(probe_a=_metric(before[0], after[0], len(probe_a.items)),
                                 probe_b=_metric(before[1], after[1], len(probe_b.items)),
                                 train_loss_first=losses[0], train_loss_last=losses[-1]),
            geometry=ProbeGeometry(param_change=param_change, repr_change=float(np.mean(drift)) if drift else 0.0,
                                   step_coherence=coherence.value(), sketch_dim=cfg.signature.sketch_dim,
                                   sketch_seed=cfg.signature.sketch_seed),
            signature=sig, events=events,
            timings=ProbeTimings(load_s=t_load - t0, eval_before_s=t_before - t_load, finetune_s=t_ft - t_before,
                                 eval_after_s=t_after - t_ft, analysis_s=t_end - t_after, total_s=t_end - t0),
            artifacts=artifacts,
        )

    @staticmethod
    def _provenance(job: ProbeJob, target: Target, hash_a: str, hash_b: str) -> ProbeProvenance:
        plan, d = job.plan, job.plan.config
        return ProbeProvenance(
            base_checkpoint=plan.base.spec, base_checkpoint_sha256=plan.base.sha256, base_run_id=plan.base.run_id,
            dataset_slice_id=target.slice_id, dataset_slice_hash=target.slice_hash, config_hash=plan.config_hash,
            curriculum=(f"lora micro-finetune on {target.family_id} ({target.level}, {len(target.instances)} "
                        f"instances), {d.finetune.steps} steps x {d.finetune.batch_size}"
                        + (f"; base: {plan.base.curriculum}" if plan.base.curriculum else "")),
            package_version=__version__, library_versions=library_versions(),
            eval_probe_hashes={"a": hash_a, "b": hash_b})

    @staticmethod
    def _write(job: ProbeJob, store: ArtifactStore, model, geometry: pa.Table, history, prov: ProbeProvenance
               ) -> dict[str, str]:
        adapter = f"{store.run_dir(job.run_id)}/adapter"
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            store.upload_dir(tmp, adapter)
        table = pa.Table.from_pylist(history)
        for col, val in (("run_id", job.run_id), ("seed", job.seed), ("config_hash", prov.config_hash),
                         ("dataset_slice_hash", prov.dataset_slice_hash), ("package_version", __version__)):
            table = table.append_column(col, pa.array([val] * len(table)))
        store.write_parquet(store.run_scalars(job.run_id), table)
        store.write_parquet(store.geometry_state(job.run_id), geometry)
        return {"adapter": adapter, "scalars": store.run_scalars(job.run_id),
                "geometry": store.geometry_state(job.run_id)}
