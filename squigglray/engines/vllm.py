"""In-process vLLM (v1 `AsyncLLM`, exported as `vllm.AsyncLLMEngine`) behind the Engine protocol.

vLLM is an optional, GPU-only extra that pins its own torch, so it is imported only here, lazily.
Prompts are tokenized with the model's HF tokenizer and `encode_prompt` (BOS exactly once, as
HFEngine does), and each (prompt, sample k) is its own n=1 request seeded with derive_seed(seed, k),
so seeds mean the same thing as in HFEngine; vLLM's prefix cache shares the prompt's KV across them.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

from squigglray.engines.base import (
    Completion, Engine, EngineError, EngineUnavailable, SamplingParams, derive_seed, encode_prompt, resolve_seeds,
    template_prompt,
)

INSTALL_HINT = ("the vllm backend needs the optional extra: pip install 'squigglray[vllm]' "
                "(GPU only; it pins its own torch)")


def require_vllm():
    """The vllm module, or EngineUnavailable with the install hint."""
    try:
        import vllm
    except ImportError:
        raise EngineUnavailable(INSTALL_HINT) from None
    return vllm


class VLLMEngine(Engine):
    """vLLM's async engine in this process; `engine_args` go to vllm.AsyncEngineArgs (dtype, max_model_len, ...)."""

    name = "vllm"

    def __init__(self, model: str, **engine_args: Any):
        vllm = require_vllm()
        from transformers import AutoTokenizer
        from vllm.sampling_params import RequestOutputKind

        self._model = model
        self._vllm = vllm
        self._final_only = RequestOutputKind.FINAL_ONLY
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(model=model, **engine_args))

    @property
    def model_name(self) -> str:
        return self._model

    async def render_chat(self, messages: list[dict[str, str]]) -> str | None:
        return template_prompt(self.tokenizer, messages)

    async def generate(self, prompts: list[str], params: SamplingParams,
                       seeds: list[int] | None = None) -> list[list[Completion]]:
        per_prompt = [s if s is not None else secrets.randbits(63) for s in resolve_seeds(len(prompts), params, seeds)]
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        jobs = [self._one(ids, params, derive_seed(s, k))
                for ids, s in zip(encoded, per_prompt) for k in range(params.n)]
        flat = await asyncio.gather(*jobs)
        return [list(flat[i * params.n : (i + 1) * params.n]) for i in range(len(prompts))]

    async def _one(self, ids: list[int], params: SamplingParams, seed: int) -> Completion:
        sp = self._vllm.SamplingParams(
            n=1, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
            stop=list(params.stop) or None, seed=seed, output_kind=self._final_only,
        )
        final = None
        try:
            async for out in self.engine.generate({"prompt_token_ids": ids}, sp, uuid.uuid4().hex):
                final = out
        except Exception as e:  # vLLM wraps its failures in several classes; keep the cause readable
            raise EngineError(f"vLLM ({self._model}) failed: {e.__class__.__name__}: {e}") from e
        if final is None or not final.outputs:
            raise EngineError(f"vLLM ({self._model}) returned no output")
        c = final.outputs[0]
        stop_reason = c.stop_reason if isinstance(c.stop_reason, str) else None
        finish = "length" if c.finish_reason == "length" else "stop"
        return Completion(c.text, finish, stop_reason, len(final.prompt_token_ids or ids), len(c.token_ids))

    async def aclose(self) -> None:
        self.engine.shutdown()
