"""One async generation protocol shared by every backend (local HF, an OpenAI-compatible server, vLLM).

The solver, evaluators and the serve app only see `Engine.generate`, so a backend can be swapped by
config. Seeds are per prompt and the k-th sample of a prompt depends on (seed, k) only, so a
candidate's text does not change with whatever else happens to share its batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["stop", "length"]
_MASK64 = (1 << 64) - 1


class EngineError(RuntimeError):
    """Generation failed; the message says where (URL, model) and why."""


class EngineUnavailable(EngineError):
    """The backend cannot run in this environment (a missing optional extra, no GPU)."""


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None  # each generated token's log-probability and its k most likely alternatives

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # a lone string is a common slip; OpenAI accepts it too
            self.stop = [self.stop]
        self.stop = list(self.stop)
        checks = [
            ("n", self.n >= 1, "must be >= 1"),
            ("temperature", self.temperature >= 0, "must be >= 0 (0 means greedy)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("max_tokens", self.max_tokens >= 1, "must be >= 1"),
            ("stop", all(isinstance(s, str) and s for s in self.stop), "must hold non-empty strings"),
            ("logprobs", self.logprobs is None or 0 <= self.logprobs <= 20, "must be None or 0..20 alternatives"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"SamplingParams.{name}={getattr(self, name)!r} {why}")


@dataclass
class Completion:
    text: str  # generated text, without a matched stop string (as OpenAI and vLLM return it)
    finish_reason: FinishReason
    stop_reason: str | None  # the stop string that matched; None for EOS or length
    prompt_tokens: int
    completion_tokens: int
    # with SamplingParams.logprobs: one {"token", "id" (where known), "logprob", "top_logprobs": [[token, logprob], ...]}
    # per generated token (completion_tokens of them: an EOS, or a stop string's tokens, included),
    # under the model's own distribution (before temperature and top_p)
    logprobs: list[dict[str, Any]] | None = None


def derive_seed(seed: int, k: int) -> int:
    """The RNG seed of sample k of a prompt seeded with `seed` (SplitMix64 mix, 63 bits).

    Mixing rather than `seed + k` keeps (seed=1, k=1) and (seed=2, k=0) unrelated.
    """
    z = (seed * 0x9E3779B97F4A7C15 + (k + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def resolve_seeds(n_prompts: int, params: SamplingParams, seeds: list[int] | None) -> list[int | None]:
    """One seed (or None: unseeded) per prompt; explicit `seeds` override params.seed."""
    if seeds is None:
        return [params.seed] * n_prompts
    if len(seeds) != n_prompts:
        raise ValueError(f"seeds has {len(seeds)} entries but there are {n_prompts} prompts")
    return list(seeds)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids with the tokenizer's BOS in front exactly once.

    The project's tokenizer never adds BOS itself but its models are trained with it (see
    eval/heldout.py); hub tokenizers usually add it already.
    """
    bos_text = getattr(tokenizer, "bos_token", None)
    written = bool(bos_text) and text.startswith(bos_text)  # a chat template writes BOS itself
    ids = list(tokenizer(text, add_special_tokens=not written)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


class Engine(ABC):
    """Batched text completion: one list of `params.n` completions per prompt."""

    name: str = "engine"
    supports_logprobs: bool = False  # SamplingParams.logprobs honoured (else a ValueError)

    @abstractmethod
    async def generate(
        self, prompts: list[str], params: SamplingParams, seeds: list[int] | None = None
    ) -> list[list[Completion]]: ...

    async def aclose(self) -> None:
        """Release connections, threads or GPU memory; the engine is unusable afterwards."""

    async def render_chat(self, messages: list[dict[str, str]]) -> str | None:
        """A chat as one prompt through the model's chat template, or None when the model has none
        (then `raw_chat_prompt`). Engines whose tokenizer is at hand use `template_prompt`."""
        return None

    @property
    @abstractmethod
    def model_name(self) -> str: ...

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def template_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str | None:
    """The tokenizer's chat template around `messages` (developer messages as system ones), or None
    without a template. A final assistant message is continued, not closed (assistant-prefix
    continuation: the TIR loop appends the model's text and the tool's output to such a prompt)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    dialog = [{"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]}
              for m in messages]
    cont = dialog[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(dialog, tokenize=False, add_generation_prompt=not cont,
                                         continue_final_message=cont)


def raw_chat_prompt(messages: list[dict[str, str]], model_name: str = "this model") -> str:
    """A chat in the project's raw format, for models without a chat template: system messages as
    leading lines, the one user message as a problem (`format_prompt`), then an optional assistant
    message, which the completion continues."""
    from squigglray.families.trace import format_prompt

    roles = [m["role"] for m in messages]
    users = [i for i, r in enumerate(roles) if r == "user"]
    last = users[-1] if users else -1
    if len(users) != 1 or any(r not in ("system", "developer") for r in roles[:last]) or len(roles) > last + 2:
        raise ValueError(f"{model_name} has no chat template: send system messages, one user message and at most "
                         f"one assistant message after it (got roles {roles})")
    head = "".join(m["content"].rstrip() + "\n" for m in messages[:last])
    tail = messages[last + 1]["content"] if len(roles) == last + 2 else ""
    return head + format_prompt(messages[last]["content"].strip()) + tail


class EngineConfig(BaseModel):
    """Which backend serves which model; the one config the solver and the serve app take."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["hf", "openai", "vllm"] = "hf"
    # checkpoint folder, preset name resolved through an ArtifactStore, hub id, or the served name (openai)
    model: str
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # openai: name of the env var holding the key (never the key itself)
    device: str = "auto"
    dtype: str | None = None
    max_batch_size: int = Field(64, ge=1)
    request_timeout_s: float = Field(600, gt=0)
    max_concurrency: int = Field(64, ge=1)
    vllm_args: dict[str, Any] = Field(default_factory=dict)


def make_engine(cfg: EngineConfig, store: Any = None) -> Engine:
    """Build the configured backend; heavy imports happen only for the backend chosen."""
    if cfg.backend == "hf":
        from squigglray.engines.hf import HFEngine

        return HFEngine.from_pretrained(cfg.model, store=store, device=cfg.device, dtype=cfg.dtype,
                                        max_batch_size=cfg.max_batch_size)
    if cfg.backend == "openai":
        import os

        from squigglray.engines.openai import OpenAIEngine

        if not cfg.base_url:
            raise ValueError("EngineConfig.base_url is required for backend 'openai' (e.g. http://127.0.0.1:8000/v1)")
        api_key = None
        if cfg.api_key_env:
            api_key = os.environ.get(cfg.api_key_env)
            if not api_key:
                raise ValueError(f"EngineConfig.api_key_env names {cfg.api_key_env!r}, which is not set or empty")
        return OpenAIEngine(cfg.base_url, cfg.model, api_key=api_key, request_timeout_s=cfg.request_timeout_s,
                            max_concurrency=cfg.max_concurrency)
    from squigglray.engines.vllm import VLLMEngine, require_vllm
    from squigglray.models.loading import resolve_spec

    require_vllm()  # say "install the extra" before any model lookup can fail
    args = dict(cfg.vllm_args)
    if cfg.dtype:
        args.setdefault("dtype", cfg.dtype)
    return VLLMEngine(resolve_spec(cfg.model, store), **args)
