"""ProbeSummary `probe_summary@2.0`: the output contract of one micro-finetune probe (seed 000 Step 1).

One JSON per probe under `experiments/<EXP_ID>/summaries/<probe_id>.json`. A probe fine-tunes a
base checkpoint on one family's instances (or on a control set) for a few steps under one seed and
records what changed. The `dis` block is empty when the trial writes the file and is filled by the
experiment's scoring pass, because each DIS factor compares the probe with others (controls, other
seeds, other families). `squigglray/schemas/probe_summary.schema.json` is the exported JSON Schema
(`python -m squigglray.schemas.probes` rewrites it; a test keeps it in step with this module).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from squigglray.schemas.base import VersionedModel

PROBE_SUMMARY_SCHEMA = "probe_summary@2.0"
JSON_SCHEMA_FILE = Path(__file__).with_name("probe_summary.schema.json")
CONTROL_PREFIX = "control:"  # family_id of a control probe, e.g. "control:shuffled_labels"
CORPUS_PREFIX = "corpus:"  # family_id of a confirmation fine-tune on a curated or random corpus


def probe_id_for(family_id: str, seed: int) -> str:
    """The file name of a probe's summary: `<family>.seed<N>`, controls as `control-<kind>.seed<N>`."""
    return f"{family_id.replace(CONTROL_PREFIX, 'control-').replace(CORPUS_PREFIX, 'corpus-')}.seed{seed}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProbeProvenance(_Strict):
    """Where the probe came from: base weights, its own training slice, config, software."""

    base_checkpoint: str = Field(description="checkpoint folder or hub id the probe started from")
    base_checkpoint_sha256: str = Field(description="sha256 over the checkpoint's files (relative path + bytes)")
    base_run_id: str | None = Field(None, description="squigglray run that trained the base, when known")
    dataset_slice_id: str = Field(description="the probe's fine-tuning instances")
    dataset_slice_hash: str
    config_hash: str = Field(description="hash of the experiment's probe settings and base sha256 "
                                         "(not of family or seed: every probe of one sweep shares it)")
    curriculum: str = Field(description="what the micro-finetune trained on, in words")
    package_version: str
    library_versions: dict[str, str] = Field(default_factory=dict, description="torch, transformers, peft, ...")
    eval_probe_hashes: dict[str, str] = Field(default_factory=dict, description="probe name -> ProbeSet.hash")
    capture_batch_hash: str = ""


class MicroFinetune(_Strict):
    """The micro-finetune's settings as run."""

    method: str = "lora"
    level: str
    knobs: dict[str, int] = Field(default_factory=dict, description="family knob overrides (empty = the level's)")
    n_instances: int
    instance_seed: int
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    target_modules: list[str]
    max_seq_len: int
    device: str
    precision: str


class ProbeMetric(_Strict):
    """One evaluation probe (teacher-forced, `eval.probes.evaluate_probe`) before and after."""

    n: int
    loss_before: float
    loss_after: float
    token_acc_before: float
    token_acc_after: float
    answer_acc_before: float
    answer_acc_after: float


class ProbeMetrics(_Strict):
    probe_a: ProbeMetric = Field(description="in-distribution: every eval family at the base's training levels")
    probe_b: ProbeMetric = Field(description="holdout: harder levels")
    train_loss_first: float
    train_loss_last: float


class ProbeGeometry(_Strict):
    """Raw per-probe quantities that DIS is built from (see squigglray/probes/dis.py)."""

    param_change: float = Field(description="sqrt(sum ||dW||_F^2 / sum ||W0||_F^2) over the LoRA-adapted matrices")
    repr_change: float = Field(description="mean over layers of 1 - linear CKA(base, after) on the capture batch")
    step_coherence: float = Field(description="||sum_t g_t|| / sum_t ||g_t|| of the LoRA gradients, in [0, 1]")
    sketch_dim: int
    sketch_seed: int


class DisScore(_Strict):
    """DIS = magnitude x coherence x novelty, each in [0, 1], and the raw numbers behind them."""

    dis: float = Field(ge=0, le=1)
    magnitude: float = Field(ge=0, le=1)
    coherence: float = Field(ge=0, le=1)
    novelty: float = Field(ge=0, le=1)
    param_ratio: float = Field(description="param_change / the same seed's controls' mean")
    repr_ratio: float = Field(description="repr_change / the same seed's controls' mean")
    control_param_change: float
    control_repr_change: float
    step_coherence: float
    seed_coherence: float | None = Field(None, description="mean pairwise cosine of dW across the family's seeds")
    n_seeds: int
    max_similarity: float = Field(description="largest cosine of the family's mean direction to another family's")
    nearest: str | None = Field(None, description="family (or baseline entry) with that similarity")
    baseline_id: str | None = None
    baseline_similarity: float | None = None
    scoring_set_hash: str = Field(description="hash of the probe ids and config hash scored together")


class ProbeEvent(_Strict):
    """A change-point candidate inside the probe window (events_candidates semantics, one probe)."""

    event_id: str
    metric: str
    layer: int
    module: str
    kind: str
    step: int
    step_start: int
    step_end: int
    magnitude: float
    score: float


class ProbeTimings(_Strict):
    load_s: float
    eval_before_s: float
    finetune_s: float
    eval_after_s: float
    analysis_s: float
    total_s: float


class ProbeSummary(VersionedModel):
    """One probe's identity, provenance, settings, metrics, signature, DIS, events and timings."""

    SCHEMA = PROBE_SUMMARY_SCHEMA
    probe_id: str = Field(pattern=r"^[A-Za-z0-9_.@=-]+$")
    experiment_id: str
    run_id: str = Field(description="run-scoped artifacts: runs/<run_id>/adapter, geometry_state/<run_id>.parquet")
    family_id: str = Field(description="the family, 'control:<kind>' for a control probe, 'corpus:<arm>' for a "
                                       "confirmation fine-tune")
    role: Literal["family", "control", "corpus"]
    seed: int
    provenance: ProbeProvenance
    finetune: MicroFinetune
    metrics: ProbeMetrics
    geometry: ProbeGeometry
    signature: dict[str, float] = Field(
        description="named vector: delta.L<i>.<module> (||dW||/||W0||), drift.L<i> (1 - CKA), "
                    "dir.<j> (unit sketch of the whole dW: its update direction)")
    dis: DisScore | None = None
    events: list[ProbeEvent] = Field(default_factory=list)
    timings: ProbeTimings
    artifacts: dict[str, str] = Field(default_factory=dict, description="name -> path relative to the store root")

    def direction(self) -> list[float]:
        """The dir.* block of the signature in index order."""
        keys = sorted((k for k in self.signature if k.startswith("dir.")), key=lambda k: int(k[4:]))
        return [self.signature[k] for k in keys]


def json_schema() -> dict:
    """pydantic's JSON Schema with the version pinned: a validator rejects another schema string too."""
    schema = ProbeSummary.model_json_schema(by_alias=True)
    schema["properties"]["schema"] = {"const": PROBE_SUMMARY_SCHEMA, "type": "string", "title": "Schema"}
    schema["required"] = sorted({*schema.get("required", []), "schema"})
    schema["$id"] = f"https://squigglray.dev/schemas/{PROBE_SUMMARY_SCHEMA}.json"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    JSON_SCHEMA_FILE.write_text(json_schema_text())
    print(f"wrote {JSON_SCHEMA_FILE}")
