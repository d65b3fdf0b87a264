"""Generation engines behind one async protocol: local HF, an OpenAI-compatible server, in-process vLLM.

    engine = make_engine(EngineConfig(model="tiny"), store)
    results = await engine.generate(prompts, SamplingParams(n=4, temperature=0.8, stop=["```output"]), seeds)

Backends are imported on first use, so `import squigglray.engines` stays cheap (and never imports ray).
"""

from __future__ import annotations

import importlib
from typing import Any

from squigglray.engines.base import (
    Completion, Engine, EngineConfig, EngineError, EngineUnavailable, SamplingParams, derive_seed, make_engine,
)

_LAZY = {
    "HFEngine": "squigglray.engines.hf",
    "OpenAIEngine": "squigglray.engines.openai",
    "VLLMEngine": "squigglray.engines.vllm",
    "CompletionRequest": "squigglray.engines.openai_api",
    "build_app": "squigglray.engines.openai_api",
    "complete": "squigglray.engines.openai_api",
}

__all__ = [
    "Completion", "Engine", "EngineConfig", "EngineError", "EngineUnavailable", "SamplingParams", "derive_seed",
    "make_engine", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'squigglray.engines' has no attribute {name!r}")
