"""The config of from-scratch base-model training (and of the quickstart that wraps it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from squigglray.config import config_hash
from squigglray.families import LEVELS, list_families
from squigglray.models.presets import PRESETS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    preset: str = "tiny"
    max_seq_len: int = Field(320, ge=32, le=8192)
    vocab_size: int = Field(512, ge=300, le=65536)
    shape: dict[str, int] = Field(default_factory=dict, description="sizes that replace the preset's (hidden_size, "
                                                                    "num_hidden_layers, num_attention_heads, "
                                                                    "num_key_value_heads, intermediate_size): a "
                                                                    "real-scale preset's smoke at reduced width")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; presets are {sorted(PRESETS)}")
        return v

    @field_validator("shape")
    @classmethod
    def _known_sizes(cls, v: dict[str, int]) -> dict[str, int]:
        known = set(PRESETS["nano"])
        if set(v) - known or any(n < 1 for n in v.values()):
            raise ValueError(f"model.shape takes positive {sorted(known)}; got {v}")
        return v


def _check_families(names) -> None:
    known = set(list_families())
    bad = [f for f in names if f not in known]
    if bad:
        raise ValueError(f"unknown families {bad}; known families are {sorted(known)}")


def _check_levels(names) -> None:
    bad = [lv for lv in names if lv not in LEVELS]
    if bad:
        raise ValueError(f"unknown difficulty levels {bad}; levels are {list(LEVELS)}")


class DataSection(_Strict):
    families: list[str] = Field(default_factory=list, description="empty = every registered family")
    pool_per_family_level: int = Field(400, ge=1, description="training instances drawn per (family, level)")
    seed: int = Field(0, ge=0, description="instance seed of the training pool (the dataset slice)")
    slice: str | None = Field(None, description="train on a built slice's train split (`squigglray slice build`: "
                                                "its id under the data dir, or its folder) instead of sampling "
                                                "the families; `families` then names the evaluation families")
    parquet: str | None = Field(None, description="train on OpenMathReasoning Parquet shards (a file, folder or URI) "
                                                  "streamed as they are (needs data.stream)")
    stream: bool = Field(False, description="stream data.slice or data.parquet through Ray Data (training/stream.py): "
                                            "tokenized and packed a few rows at a time, never loaded whole; the "
                                            "curriculum is one phase, whose levels (and families) select the rows")
    stream_memory_mb: int = Field(512, ge=1, description="object-store memory the streaming pipeline may hold "
                                                         "(Ray Data's resource limit), whatever the data's size")

    @field_validator("families")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        _check_families(v)
        return v

    def resolved_families(self) -> list[str]:
        return sorted(self.families) if self.families else list_families()


class Phase(_Strict):
    """One curriculum phase: a share of the steps, and how levels and families are mixed in it."""

    name: str
    fraction: float = Field(gt=0, le=1)
    levels: dict[str, float] = Field(default_factory=lambda: {"easy": 1.0})
    families: dict[str, float] = Field(default_factory=dict, description="weights; empty = uniform")

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: dict[str, float]) -> dict[str, float]:
        _check_levels(v)
        if not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("level weights must be non-negative with a positive sum")
        return v

    @field_validator("families")
    @classmethod
    def _families(cls, v: dict[str, float]) -> dict[str, float]:
        _check_families(v)
        if any(w < 0 for w in v.values()) or (v and sum(v.values()) <= 0):
            raise ValueError("family weights must be non-negative with a positive sum")
        return v


class TrainSection(_Strict):
    steps: int = Field(700, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0, lt=1)
    warmup_steps: int = Field(30, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    log_dense_until: int = Field(64, ge=0, description="log-spaced logging before this step")
    log_every: int = Field(25, ge=1, description="regular logging after log_dense_until")
    checkpoint_every: int = Field(0, ge=0, description="0 = only the final checkpoint")
    threads: int = Field(0, ge=0, description="torch threads; 0 = leave torch's default")
    pack: bool = Field(True, description="pack whole examples into rows of model.max_seq_len tokens")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto = cuda when available")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 autocast on CUDA, fp32 on CPU")
    micro_batch_size: int = Field(0, ge=0, description="examples per forward/backward on a worker; 0 = its whole "
                                                       "share of the batch at once; fewer accumulate gradients "
                                                       "(the same steps, less activation memory)")
    global_batch_tokens: int = Field(0, ge=0, description="data.stream: token slots trained per step over all "
                                                          "workers (packed rows of model.max_seq_len; a multiple of "
                                                          "it); 0 = batch_size rows. steps x this = the token budget")
    activation_checkpointing: bool = Field(False, description="recompute each block's activations in backward: "
                                                              "far less memory (models/sizing.py), more compute")
    parallel: Literal["ddp", "fsdp"] = Field("ddp", description="how several workers hold the model: ddp = each "
                                                                 "all of it; fsdp = FSDP2, weights, gradients and "
                                                                 "AdamW states sharded per decoder layer (the 1.3B "
                                                                 "class); one worker trains alone either way")


class EvalSection(_Strict):
    n_per_family: int = Field(24, ge=1)
    levels: list[str] = Field(default_factory=lambda: ["easy"])
    seed: int = Field(1_000_003, ge=0, description="instance seed of held-out problems")
    max_new_tokens: int = Field(200, ge=8)
    batch_size: int = Field(48, ge=1)
    code_timeout_s: float = Field(5.0, gt=0)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[str]) -> list[str]:
        _check_levels(v)
        return v


class GeometrySection(_Strict):
    """Geometry capture (seed 000 §4.1) at the logging cadence, on a fixed, hashed capture batch."""

    enabled: bool = True
    capture_batch_size: int = Field(16, ge=2, le=512, description="probe-A instances in the capture batch")
    modules: list[str] = Field(
        default_factory=lambda: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
        description="matrices watched in every block")
    spectral: Literal["exact", "power"] = Field(
        "exact", description="spectral norm (and stable rank) by an exact float64 decomposition, or by power "
                             "iteration warm-started from the previous capture (float32, on the weights' device; "
                             "for 125M+ models)")
    power_iterations: int = Field(4, ge=1, le=100, description="power-iteration steps per capture (spectral=power)")
    layer_stride: int = Field(1, ge=1, description="watch blocks 0, k, 2k, ... and the last one")
    lag_copies: Literal["cpu_float32", "device_bfloat16"] = Field(
        "cpu_float32", description="lag-1 copies on the CPU in float32, or on the weights' device with gradients "
                                   "and hidden states in bfloat16 (weights stay float32)")

    def capture_options(self) -> dict:
        """The GeometryCapture keyword arguments this section sets."""
        return {"modules": self.modules, "spectral": self.spectral, "power_iterations": self.power_iterations,
                "layer_stride": self.layer_stride, "lag_copies": self.lag_copies}


class ProbeSection(_Strict):
    """Probes A (training families, held-out instances) and B (holdout: other families or harder
    levels), fixed per run and evaluated at the logging cadence (seed 000 §5.1). With `data.slice`
    both come from the slice's own held-out splits (probe_a and holdout, contamination-checked when
    the slice was built) and the seed, levels and families below other than `a/b_per_family` do not
    apply."""

    enabled: bool = True
    seed: int = Field(2_000_003, ge=0, description="instance seed of both probes (synthetic families)")
    a_per_family: int = Field(3, ge=1, le=64)
    b_per_family: int = Field(3, ge=1, le=64)
    b_levels: list[str] = Field(default_factory=lambda: ["hard"], description="levels of probe B (synthetic families)")
    b_families: list[str] = Field(default_factory=list, description="families of probe B; empty = training families")
    answer: Literal["auto", "exact", "generate"] = Field(
        "auto", description="how answer_acc is measured: `exact` = greedy decoding reproduces the reference "
                            "solution (one teacher-forced pass, a lower bound of solving); `generate` = free greedy "
                            "tool-integrated generation, its answer judged against the reference answer by "
                            "math-verify (eval/probes.py); `auto` = generate on a slice's items, exact on the "
                            "synthetic families")
    max_new_tokens: int = Field(256, ge=8, description="tokens a `generate` probe may write before its code runs "
                                                       "(and 48 more after it)")

    def answer_mode(self, on_slice: bool) -> str:
        return ("generate" if on_slice else "exact") if self.answer == "auto" else self.answer

    @field_validator("b_levels")
    @classmethod
    def _levels(cls, v: list[str]) -> list[str]:
        _check_levels(v)
        if not v:
            raise ValueError("probe B needs at least one level")
        return v

    @field_validator("b_families")
    @classmethod
    def _families(cls, v: list[str]) -> list[str]:
        _check_families(v)
        return v


class BaseTrainConfig(_Strict):
    name: str = Field("base", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    curriculum: list[Phase] = Field(
        default_factory=lambda: [
            Phase(name="easy", fraction=0.3, levels={"easy": 1.0}),
            Phase(name="mixed", fraction=0.7, levels={"easy": 0.5, "medium": 0.5}),
        ]
    )
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    geometry: GeometrySection = Field(default_factory=GeometrySection)
    probes: ProbeSection = Field(default_factory=ProbeSection)

    @model_validator(mode="after")
    def _curriculum(self) -> "BaseTrainConfig":
        if not self.curriculum:
            raise ValueError("curriculum needs at least one phase")
        total = sum(p.fraction for p in self.curriculum)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"curriculum fractions must sum to 1, got {total:g}")
        fams = set(self.data.resolved_families())
        for p in self.curriculum:
            extra = set(p.families) - fams
            if extra:
                raise ValueError(f"curriculum phase {p.name!r} weights families not in data.families: {sorted(extra)}")
        self._stream_settings()
        if self.eval.seed == self.data.seed:
            raise ValueError("eval.seed must differ from data.seed so held-out problems are not training problems")
        if self.probes.enabled and not self.data.slice:  # a slice's held-out splits are disjoint from train by build
            if self.probes.seed == self.data.seed:
                raise ValueError("probes.seed must differ from data.seed so probe instances are held out")
            b_fams = set(self.probes.b_families or self.data.resolved_families())
            if b_fams & fams and set(self.probes.b_levels) & set(self.levels_used()):
                raise ValueError(
                    "probe B must be a holdout: give probes.b_families outside data.families, or probes.b_levels "
                    f"outside the curriculum's levels {self.levels_used()}")
        return self

    def _stream_settings(self) -> None:
        d, t = self.data, self.train
        if d.slice and d.parquet:
            raise ValueError("give data.slice or data.parquet, not both")
        if d.parquet and not d.stream:
            raise ValueError("data.parquet is read as a stream: set data.stream: true")
        if d.stream and not (d.slice or d.parquet):
            raise ValueError("data.stream needs data.slice or data.parquet to stream")
        if d.stream and len(self.curriculum) > 1:
            raise ValueError(f"data.stream reads the data once in order, so the curriculum must be one phase (its "
                             f"levels select rows); got {[p.name for p in self.curriculum]}")
        if t.global_batch_tokens and not d.stream:
            raise ValueError("train.global_batch_tokens needs data.stream (the curriculum path counts "
                             "train.batch_size examples)")
        if t.global_batch_tokens % self.model.max_seq_len:
            raise ValueError(f"train.global_batch_tokens ({t.global_batch_tokens}) must be a multiple of "
                             f"model.max_seq_len ({self.model.max_seq_len}): a step trains whole packed rows")

    def levels_used(self) -> list[str]:
        return [lv for lv in ("easy", "medium", "hard") if any(p.levels.get(lv, 0) > 0 for p in self.curriculum)]


def run_id_for(cfg: BaseTrainConfig) -> str:
    """A training run's id: its name, preset and config hash (the same config finds the same run)."""
    return f"{cfg.name}-{cfg.model.preset}-{config_hash(cfg)[:10]}"
