"""Names that moved between the transformers versions this project runs on.

The lock pins transformers 5.25, where a causal LM's KV cache argument is `cache` (`past_key_values`
still works but warns, and goes away in 5.40); the `vllm` extra pins transformers < 5.21, where only
`past_key_values` exists. Call sites ask here instead of guessing.
"""

from __future__ import annotations

import functools
import inspect


@functools.lru_cache(maxsize=None)
def _takes_cache(forward) -> bool:
    return "cache" in inspect.signature(forward).parameters


def cache_kwargs(model, cache) -> dict:
    """{"cache": cache} on transformers that name it so, else {"past_key_values": cache}."""
    return {"cache" if _takes_cache(type(model).forward) else "past_key_values": cache}

