"""ProbeSummary objects built by hand for the DIS, cluster and aggregation tests."""

from __future__ import annotations

import math

from squigglray.schemas.probes import (
    CONTROL_PREFIX, MicroFinetune, ProbeGeometry, ProbeMetric, ProbeMetrics, ProbeProvenance, ProbeSummary,
    ProbeTimings, probe_id_for,
)

SKETCH_DIM = 8


def unit(vec: list[float]) -> list[float]:
    n = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / n for v in vec]


def make_summary(family_id: str, seed: int, direction: list[float] | None = None, *, param_change: float = 0.02,
                 repr_change: float = 0.01, step_coherence: float = 0.5, config_hash: str = "c" * 64,
                 experiment_id: str = "exp-test", events: list[dict] | None = None) -> ProbeSummary:
    """A summary of family `family_id` (or 'control:<kind>') at `seed`; `direction` fills dir.* (unit)."""
    role = "control" if family_id.startswith(CONTROL_PREFIX) else "family"
    direction = unit(direction or [1.0] + [0.0] * (SKETCH_DIM - 1))
    metric = ProbeMetric(n=4, loss_before=1.0, loss_after=0.9, token_acc_before=0.5, token_acc_after=0.55,
                         answer_acc_before=0.25, answer_acc_after=0.25)
    probe_id = probe_id_for(family_id, seed)
    return ProbeSummary(
        probe_id=probe_id, experiment_id=experiment_id, run_id=f"{experiment_id}.{probe_id}", family_id=family_id,
        role=role, seed=seed,
        provenance=ProbeProvenance(
            base_checkpoint="/ckpt", base_checkpoint_sha256="b" * 64, dataset_slice_id=f"probe-{family_id}",
            dataset_slice_hash="d" * 64, config_hash=config_hash, curriculum=f"lora on {family_id}",
            package_version="0.1.0", library_versions={"torch": "2.13.0"}),
        finetune=MicroFinetune(level="medium", n_instances=32, instance_seed=3, steps=8, batch_size=4, lr=1e-3,
                               warmup_steps=0, weight_decay=0.0, grad_clip=1.0, lora_r=4, lora_alpha=8.0,
                               lora_dropout=0.0, target_modules=["q_proj"], max_seq_len=320, device="cpu",
                               precision="fp32"),
        metrics=ProbeMetrics(probe_a=metric, probe_b=metric, train_loss_first=1.2, train_loss_last=0.8),
        geometry=ProbeGeometry(param_change=param_change, repr_change=repr_change, step_coherence=step_coherence,
                               sketch_dim=len(direction), sketch_seed=0),
        signature={"delta.L0.self_attn.q_proj": param_change, "drift.L0": repr_change,
                   **{f"dir.{j}": v for j, v in enumerate(direction)}},
        events=events or [],
        timings=ProbeTimings(load_s=0.1, eval_before_s=0.1, finetune_s=1.0, eval_after_s=0.1, analysis_s=0.1,
                             total_s=1.4),
        artifacts={"adapter": f"runs/{experiment_id}.{probe_id}/adapter"},
    )
