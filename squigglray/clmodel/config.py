"""`CLModelConfig`: every size and switch of CLModel (seed 003) in one plain dataclass.

The defaults are a CPU-sized model (d_model 64, 3 quantizers of 64 codes, 6 reasoning steps) that
trains on the project's families in a couple of minutes; `CLModelConfig.nano()` is the unit-test size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from squigglray.config import config_hash
from squigglray.schemas.problems import STEP_TYPES

# Reasoner operators: one per step_type of the families' traces (seed 000 §3.1), so traces supervise
# the action head directly. Ops named in TOOL_BACKED also have a tool path (SymPy/Z3, no grad).
DEFAULT_OPS: tuple[str, ...] = STEP_TYPES
TOOL_BACKED: dict[str, str] = {
    "simplify": "simplify",
    "expand": "expand",
    "factor": "factor",
    "differentiate": "diff",
    "integrate": "integrate",
    "compute": "evaluate",
    "verify": "equivalent",
}


@dataclass
class CLModelConfig:
    # tokens and outputs
    vocab_size: int = 512
    num_classes: int | None = None  # C of logits_tok/logits_seq; None: vocab_size (one vocabulary)
    pad_id: int = 0
    max_len: int = 256
    # encoder (Llama-style causal blocks: RMSNorm, RoPE, SwiGLU)
    d_model: int = 64
    n_heads: int = 4
    ffn_mult: float = 2.75
    skim_layers: int = 1  # run on every row
    heavy_layers: int = 2  # stacked on the skim layers, run only on rows routed to branch >= heavy_from_branch
    heavy_from_branch: int = 1
    rope_theta: float = 10000.0
    # residual VQ (concept inventory)
    rvq_dim: int = 32
    codebook_size: int = 64  # codes at init
    codebook_capacity: int | None = None  # room for appended (split) codes; None: 2 * codebook_size
    num_quantizers: int = 3
    ema_decay: float = 0.9
    commitment_weight: float = 0.25
    diversity_weight: float = 0.05
    dead_code_threshold: float = 0.05  # EMA cluster size under which a code is recycled
    # conditioning: cross-attention over K concept slots (one per quantizer level, plus a null slot)
    cond_heads: int = 4
    cond_gate_init: float = 0.1  # tanh(gate) starts small: conditioning starts weak but nonzero
    # reasoner
    ops: tuple[str, ...] = DEFAULT_OPS
    steps: int = 6
    d_state: int = 64
    n_bool: int = 4
    stack_depth: int = 4
    scratch_slots: int = 4
    num_branches: int = 3  # branch b reads VQ levels 1..min(b+1, num_quantizers)
    hysteresis: int = 2  # steps after a promotion/demotion during which the branch cannot change
    max_promotions: int = 2
    tool_budget: int = 4  # tool calls per example per forward
    gumbel_tau: float = 1.0
    lambda_cost: float = 0.1  # step router: a promotion must pay V_{b+1} - V_b - lambda_cost
    # decoder
    rationale_head: bool = False
    extra: dict = field(default_factory=dict)  # free-form notes carried into saved configs

    def __post_init__(self):
        self.ops = tuple(self.ops)
        if self.num_classes is None:
            self.num_classes = self.vocab_size
        if self.codebook_capacity is None:
            self.codebook_capacity = 2 * self.codebook_size
        checks = {
            "d_model % n_heads": self.d_model % self.n_heads == 0,
            "d_model % cond_heads": self.d_model % self.cond_heads == 0,
            "(d_model // n_heads) even (RoPE)": (self.d_model // self.n_heads) % 2 == 0,
            "codebook_capacity >= codebook_size": self.codebook_capacity >= self.codebook_size,
            "num_quantizers >= 1": self.num_quantizers >= 1,
            "num_branches >= 1": self.num_branches >= 1,
            "steps >= 1": self.steps >= 1,
            "ops not empty and unique": len(self.ops) > 0 and len(set(self.ops)) == len(self.ops),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"CLModelConfig: violated {', '.join(bad)}")

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @property
    def num_slots(self) -> int:
        """K concept slots: one per quantizer level plus a learned null slot (never masked)."""
        return self.num_quantizers + 1

    def levels_for_branch(self, branch: int) -> int:
        return min(branch + 1, self.num_quantizers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ops"] = list(self.ops)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CLModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"CLModelConfig: unknown fields {unknown}")
        return cls(**d)

    @classmethod
    def nano(cls, **over) -> CLModelConfig:
        """Unit-test size: builds and runs a forward in milliseconds."""
        base = dict(vocab_size=97, d_model=32, n_heads=2, cond_heads=2, skim_layers=1, heavy_layers=1,
                    rvq_dim=16, codebook_size=16, num_quantizers=3, d_state=32, steps=4, max_len=64)
        base.update(over)
        return cls(**base)


# ------------------------------------------------------------------ a run: data, training, evaluation
# (here, beside the model's sizes, so a job validates its config without importing torch)

LOSS_NAMES = ("tok", "seq", "vq", "action", "stop", "arg", "invalid", "branch", "value", "tool", "index")


class TrainSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(60, ge=0, description="steps per RVQ level in the staged warm-up")
    joint_steps: int = Field(240, ge=0)
    joint_lr_mult: float = Field(0.3, gt=0)
    entry_lr_mult: float = Field(0.1, gt=0)
    mask_prob: float = Field(0.15, ge=0, lt=1)
    tool_dropout: float = Field(0.5, ge=0, le=1)
    tools: Literal["none", "inprocess"] = "inprocess"
    tool_timeout_s: float = Field(2.0, gt=0)
    loss_weights: dict[str, float] = Field(default_factory=dict, description=f"override of {LOSS_NAMES}")
    log_every: int = Field(20, ge=1)
    threads: int | None = Field(None, ge=1)

    @field_validator("loss_weights")
    @classmethod
    def _known_losses(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {LOSS_NAMES}")
        return v


class DataSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    families: list[str] | None = Field(None, description="None: every registered family")
    n_per_family: int = Field(48, ge=1)
    eval_per_family: int = Field(16, ge=1)
    vocab_size: int = Field(512, ge=300, description="BPE tokenizer trained on the families' text")


class EvalSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tools: Literal["none", "inprocess"] = "inprocess"
    latency_examples: int = Field(32, ge=2)


class ClmodelRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "clmodel"
    seed: int = 0
    model: dict[str, Any] = Field(default_factory=dict, description="CLModelConfig fields")
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @field_validator("model")
    @classmethod
    def _model_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        CLModelConfig.from_dict(v)  # a bad size or unknown field fails here, before any work
        return v

    def model_config_for(self, vocab_size: int, pad_id: int) -> CLModelConfig:
        return CLModelConfig.from_dict({**self.model, "vocab_size": vocab_size, "pad_id": pad_id})


def run_id(cfg: ClmodelRunConfig) -> str:
    return f"clmodel-{cfg.name}-{config_hash(cfg)[:10]}"
