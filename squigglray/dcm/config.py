"""The DCM phase 1a config (seed 001): model, slots, optimizer, stopping, dataset.

    squigglray dcm run --config squigglray/configs/dcm_smoke.yaml --set k=16

Defaults follow the anchors: AdamW with lr 1e-2 on the trainable vectors ("Cramming 1568 tokens
into a single vector", Kuratov et al. 2025), stop an example once its teacher-forced token
accuracy is 1.0 on every mode (their capacity criterion; greedy exact match is checked after).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from squigglray.config import config_hash
from squigglray.placement import Placement

MODES = ("q", "a")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimSection(_Strict):
    steps: int = Field(300, ge=1, le=100_000, description="steps per restart")
    lr: float = Field(1e-2, gt=0, lt=10)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    restarts: int = Field(1, ge=0, le=100, description="re-initializations of examples that did not converge")
    stop_accuracy: float = Field(1.0, gt=0, le=1, description="freeze an example once every mode reaches this "
                                                              "teacher-forced token accuracy")


class DcmConfig(_Strict):
    name: str = Field("dcm", pattern=r"^[A-Za-z0-9_.-]+$")
    model: str = Field("tiny", description="trained preset under the data dir, a save_pretrained folder, or a hub id")
    k: int = Field(16, ge=1, le=4096, description="content slots per example")
    modes: list[Literal["q", "a"]] = Field(default_factory=lambda: ["q", "a"], min_length=1,
                                           description="[q, a] = joint Q-A; [q] or [a] = single-target diagnostic")
    init: Literal["scaled_random", "tokens"] = Field("scaled_random", description="scaled_random: Gaussian at the "
                                                     "embedding matrix's per-dimension std; tokens: embeddings of "
                                                     "random vocabulary tokens")
    init_scale: float = Field(1.0, gt=0)
    mode_words: dict[str, str] = Field(default_factory=lambda: {"q": "Question", "a": "Answer"},
                                       description="each mode's (frozen) embedding is the mean embedding of this word")
    eos: bool = Field(True, description="targets end with EOS, so greedy decoding knows where to stop")
    seed: int = Field(0, ge=0)
    batch_size: int = Field(16, ge=1, le=4096, description="examples optimized together as one [B, K, d] tensor")
    optim: OptimSection = Field(default_factory=OptimSection)
    dataset: dict = Field(default_factory=lambda: {"kind": "arithmetic", "n": 32},
                          description="squigglray.dcm.data.load_pairs spec")
    paraphrases: str | None = Field(None, description="JSONL of q_variants/a_variants: loss summed over variants")
    max_target_tokens: int = Field(256, ge=1)
    stages: list[Literal["diagnostic", "joint", "spot_check"]] = Field(
        default_factory=lambda: ["diagnostic", "joint", "spot_check"],
        description="seed 001's stages: Q-only and A-only diagnostics, joint Q-A, greedy spot check")
    gates: dict[str, float] = Field(default_factory=lambda: {"diagnostic": 0.7, "joint": 0.3},
                                    description="a stage below this convergence rate stops the run (seed 001)")
    spot_check: int = Field(5, ge=0, description="converged examples whose greedy decodes the report shows")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 model on CUDA, fp32 on CPU; "
                                                                            "slots stay fp32")
    threads: int = Field(0, ge=0, description="torch threads; 0 = leave torch's default")
    placement: Placement | None = Field(
        None, exclude=True,  # where a sweep trial runs, not what it computes: outside the config hash
        description="a sweep trial's placement, e.g. {gpus: 1, memory_class: 16g} (squigglray.placement); "
                    "null = --cpus-per-trial / --gpus-per-trial")

    @field_validator("modes")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"modes listed twice in {v}")
        return v

    @field_validator("mode_words")
    @classmethod
    def _words(cls, v: dict[str, str]) -> dict[str, str]:
        if set(v) != set(MODES) or not all(w.strip() for w in v.values()):
            raise ValueError(f"mode_words needs a non-empty word for each of {list(MODES)}, got {v}")
        return v


def experiment_id(cfg: DcmConfig) -> str:
    """A DCM run's id: name, K, seed and config hash (the same config finds the same run)."""
    return f"dcm-{cfg.name}-k{cfg.k}-s{cfg.seed}-{config_hash(cfg)[:10]}"
