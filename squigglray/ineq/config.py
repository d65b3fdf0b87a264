"""The inequality pipeline's config (seed 002): data, the two LLM steps, SFT, eval.

    squigglray ineq run --config squigglray/configs/ineq.yaml --set sft.max_steps=400
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from squigglray.engines.base import EngineConfig
from squigglray.placement import MemoryClass, Placement, make_placement

# Where a step runs does not change what it computes: the placement fields added with squigglray.placement
# (memory_class, and accelerator_type where it is new) stay out of the dumps that key the cached steps.
_WHERE = {"exclude": True}


def _placement(what: str, cpus: float, gpus: float, memory_class: str | None,
               accelerator_type: str | None) -> Placement:
    return make_placement(what, cpus=cpus, gpus=gpus, memory_class=memory_class, accelerator_type=accelerator_type)


class SftConfig(BaseModel):
    """What `run_sft` trains; one config plus data and seed gives the same weights on CPU."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("tiny", description="preset name (under the artifact store), save_pretrained folder or hub id")
    epochs: float = Field(1.0, gt=0, description="passes over the training set; ignored when max_steps is set")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    lr: float = Field(5e-4, gt=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    batch_size: int = Field(8, ge=1, description="examples per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_length: int = Field(512, ge=8, description="tokens per example (prompt + completion + EOS); longer ones "
                                                   "are truncated at the end, which cuts the EOS")
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available")
    bf16: bool | Literal["auto"] = Field("auto", description="auto = bf16 mixed precision on CUDA, fp32 on CPU")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory (large models on GPU)")
    threads: int = Field(0, ge=0, description="torch CPU threads during the run; 0 = leave torch's default")
    report_to: Literal["none", "wandb"] = Field("none", description="wandb runs offline unless WANDB_MODE is set")
    run_name: str | None = Field(None, description="tracker run name; default: the output folder's name")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="held out from train when no eval set is given")
    eval_steps: int | None = Field(None, ge=1, description="also evaluate every N steps (None: only before/after)")
    eval_before: bool = Field(True, description="evaluate once before training, for the before/after comparison")
    logging_steps: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SftConfig:
        if self.device != "cuda":
            return self  # reading a config imports no torch; asking for CUDA checks that it is there
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device='cuda' but torch sees no CUDA device (torch {torch.__version__})")
        return self

    def use_cuda(self) -> bool:
        import torch

        return self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())

    def use_bf16(self) -> bool:
        return self.use_cuda() if self.bf16 == "auto" else bool(self.bf16)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Strict):
    families: list[str] | None = Field(None, description="None = every family")
    n_per_family: int = Field(60, ge=1)
    variants: dict[str, float] = Field(default_factory=lambda: {"proof": 0.6, "bound": 0.2, "relation": 0.2})
    test_fraction: float = Field(0.2, gt=0, lt=1)
    near_dup_threshold: float | None = Field(0.6, gt=0, le=1)


class LLMStep(_Strict):
    engine: EngineConfig | None = Field(None, description="None = skip this LLM step")
    shots: int = Field(2, ge=0)
    max_problems: int | None = Field(None, ge=1, description="run the step on the first N problems only")
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(200, ge=1)
    concurrency: int = Field(1, ge=1, description="actors in the pool")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor")
    accelerator_type: str | None = Field(None, description="e.g. A100, H100: the actors land on those nodes")
    memory_class: MemoryClass | None = Field(None, description="minimum GPU memory per actor (16g, 32g, 40g, 80g); "
                                                              "bigger GPUs also qualify", **_WHERE)
    batch_size: int = Field(16, ge=1)
    use_vllm: bool = Field(False, description="run through ray.data.llm.build_processor (vLLM on GPUs)")

    def placement(self, threads: int = 1) -> Placement:
        """One actor of the step: its GPUs (then no CPU of its own, as before), or `threads` CPUs. With
        use_vllm, one vLLM engine worker (vLLM takes a GPU per worker; num_gpus does not apply)."""
        if self.use_vllm:
            return _placement("the LLM step's placement", 1, 1, self.memory_class, self.accelerator_type)
        return _placement("the LLM step's placement", 0 if self.num_gpus else threads, self.num_gpus,
                          self.memory_class, self.accelerator_type)

    @model_validator(mode="after")
    def _valid_placement(self):
        self.placement()
        return self


class VerifySection(LLMStep):
    shots: int = Field(8, ge=0, description="many-shot: worked verdicts, half of them incorrect proofs")
    max_tokens: int = Field(8, ge=1)
    timeout_s: float = Field(2.0, gt=0, description="mechanical verifier: per solver call")


class EvalSection(_Strict):
    max_problems: int | None = Field(None, ge=1)
    k_shots: int = Field(1, ge=0)
    max_prompt_chars: int | None = Field(1200, ge=100)
    max_new_tokens: int = Field(160, ge=1)
    llm_judge: EngineConfig | None = Field(None, description="None = the base model judges (weak on CPU)")
    judge_max_tokens: int = Field(48, ge=1)
    timeout_s: float = Field(2.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_class: MemoryClass | None = Field(None, description="minimum GPU memory of the eval task", **_WHERE)
    accelerator_type: str | None = Field(None, description="GPU type of the eval task, e.g. A100", **_WHERE)

    def placement(self) -> Placement:
        return _placement("eval placement", 1, self.num_gpus, self.memory_class, self.accelerator_type)

    @model_validator(mode="after")
    def _valid_placement(self):
        self.placement()
        return self


class IneqConfig(_Strict):
    name: str = Field("ineq", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    base_model: str = Field("tiny", description="the model evaluated few-shot and fine-tuned")
    data: DataSection = Field(default_factory=DataSection)
    generation: LLMStep = Field(default_factory=LLMStep)
    verification: VerifySection = Field(default_factory=VerifySection)
    sft: SftConfig = Field(default_factory=SftConfig)
    sft_num_gpus: float = Field(0.0, ge=0)
    sft_memory_class: MemoryClass | None = Field(None, description="minimum GPU memory of the SFT task", **_WHERE)
    sft_accelerator_type: str | None = Field(None, description="GPU type of the SFT task, e.g. H100", **_WHERE)
    eval: EvalSection = Field(default_factory=EvalSection)
    learning_curve: list[int] = Field(default_factory=list, description="training-set sizes (empty = skip)")
    wandb: bool = Field(False, description="log SFT to wandb (offline unless WANDB_MODE says otherwise)")

    def sft_placement(self) -> Placement:
        return _placement("SFT placement", 1, self.sft_num_gpus, self.sft_memory_class, self.sft_accelerator_type)

    @model_validator(mode="after")
    def _different_models(self) -> IneqConfig:
        g, v = self.generation.engine, self.verification.engine
        if g is not None and v is not None and g.model == v.model:
            raise ValueError(f"generation and verification use the same model {g.model!r}; seed 002 asks for a "
                             f"different verifier (shared blind spots)")
        self.sft_placement()
        return self
