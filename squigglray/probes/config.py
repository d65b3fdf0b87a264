"""The probe experiment's config: which families and seeds, the LoRA micro-finetune, the fixed
evaluation probes and the signature sketch.

`shared_hash(base_sha256)` is the summaries' config hash: it covers everything that makes two probes
comparable (settings, eval probes, controls, base weights) but not the family list or the seeds,
so widening a sweep reuses the probes already run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from squigglray.config import Seeds, config_hash
from squigglray.families import LEVELS, list_families

CONTROLS = ("shuffled_labels", "random_family")
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _known_families(names: list[str]) -> list[str]:
    known = set(list_families())
    bad = [f for f in names if f not in known]
    if bad:
        raise ValueError(f"unknown families {bad}; known families are {sorted(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"families listed twice in {names}")
    return names


def _levels(names: list[str]) -> list[str]:
    bad = [lv for lv in names if lv not in LEVELS]
    if bad or not names:
        raise ValueError(f"levels must be a non-empty subset of {list(LEVELS)}, got {names}")
    return names


class ProbeData(_Strict):
    level: str = Field("medium", description="difficulty of the fine-tuning instances")
    n_instances: int = Field(64, ge=2, le=100_000, description="fine-tuning instances per probe (fixed per family)")
    instance_seed: int = Field(3_000_017, ge=0, description="instance seed of the fine-tuning sets")
    slice: str | None = Field(None, description="a built slice (id under the data dir, or folder): fine-tune on its "
                                                "train items per family, evaluate probe A on its probe_a split and "
                                                "probe B on its holdout; families are then the slice's family ids")

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        return _levels([v])[0]


class LoraSection(_Strict):
    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1)
    init_seed: int | None = Field(
        0, ge=0, description="seed of the adapters' random init, shared by every probe so their updates live in "
                             "the same subspace and can be compared; null = the probe seed")


class FinetuneSection(_Strict):
    steps: int = Field(24, ge=2, le=100_000)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0, lt=1)
    warmup_steps: int = Field(2, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    capture_every: int = Field(2, ge=1, description="geometry capture cadence in the probe window (and the last step)")
    max_seq_len: int = Field(320, ge=32, le=32768, description="longer instances are dropped")
    threads: int = Field(0, ge=0, description="torch threads; 0 = leave torch's default")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    precision: Literal["auto", "fp32", "bf16"] = "auto"


class ProbeEval(_Strict):
    """Probe A (in-distribution) and probe B (harder levels), fixed for the whole experiment."""

    families: list[str] = Field(default_factory=list, description="empty = every registered family")
    seed: int = Field(2_000_003, ge=0)
    a_per_family: int = Field(2, ge=1, le=64)
    b_per_family: int = Field(2, ge=1, le=64)
    a_levels: list[str] = Field(default_factory=lambda: ["easy", "medium"])
    b_levels: list[str] = Field(default_factory=lambda: ["hard"])
    capture_batch_size: int = Field(16, ge=2, le=512)

    @field_validator("families")
    @classmethod
    def _families(cls, v: list[str]) -> list[str]:
        return _known_families(v)

    @field_validator("a_levels", "b_levels")
    @classmethod
    def _level_lists(cls, v: list[str]) -> list[str]:
        return _levels(v)

    def resolved_families(self) -> list[str]:
        return sorted(self.families) if self.families else list_families()


class SignatureSection(_Strict):
    sketch_dim: int = Field(256, ge=4, le=4096, description="length of the dir.* update-direction sketch")
    sketch_seed: int = Field(0, ge=0)


class ProbeConfig(_Strict):
    name: str = Field("probe", pattern=r"^[A-Za-z0-9_.-]+$")
    families: list[str] = Field(default_factory=list, description="families to probe; empty = every family")
    seeds: Seeds = Field(default_factory=lambda: [0, 1])
    controls: list[Literal["shuffled_labels", "random_family"]] = Field(
        default_factory=lambda: list(CONTROLS), min_length=1,
        description="control probes per seed: Magnitude is measured against them")
    data: ProbeData = Field(default_factory=ProbeData)
    lora: LoraSection = Field(default_factory=LoraSection)
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    eval: ProbeEval = Field(default_factory=ProbeEval)
    signature: SignatureSection = Field(default_factory=SignatureSection)
    events: bool = Field(True, description="change-point candidates inside each probe window")
    baseline_id: str | None = Field(None, description="scoring_baselines/<id>.json of earlier family directions "
                                                             "(novelty), e.g. directions-<EXP_ID> of a previous sweep")

    @model_validator(mode="after")
    def _families(self):
        if self.data.slice is None:
            _known_families(self.families)  # a slice's family ids are checked against the slice
        elif len(set(self.families)) != len(self.families):
            raise ValueError(f"families listed twice in {self.families}")
        return self

    def resolved_families(self) -> list[str]:
        return list(self.families) if self.families else list_families()

    def shared_hash(self, base_sha256: str) -> str:
        shared = self.model_dump(mode="json", exclude={"families", "seeds", "baseline_id", "name"})
        return config_hash({"probe": shared, "base_sha256": base_sha256})
