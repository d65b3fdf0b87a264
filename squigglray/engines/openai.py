"""Client for any OpenAI-compatible /v1/completions server (vLLM, SGLang, our own serve app).

One HTTP request per prompt, sent concurrently under a semaphore, so each prompt carries its own
seed (the OpenAI body has a single `seed`). aiohttp comes with ray[default]; no extra dependency.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from squigglray.engines.base import Completion, Engine, EngineError, SamplingParams, resolve_seeds


def _server_message(body: str) -> str:
    """The human part of an error body: OpenAI's error.message, FastAPI's detail, or the raw text."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if data.get("detail"):
            return str(data["detail"])[:500]
    return body.strip()[:500]


def _split_tokens(total: int, texts: list[str]) -> list[int]:
    """Share `total` out by text length: the fallback when a server reports only the usage total."""
    weights = [len(t) + 1 for t in texts]
    shares = [total * w // sum(weights) for w in weights]
    for i in range(total - sum(shares)):
        shares[i % len(shares)] += 1
    return shares


def parse_choices(data: dict[str, Any], n: int) -> list[Completion]:
    """OpenAI completion response (one prompt) -> n Completions, in choice-index order.

    Per-choice token counts come from our server's `completion_tokens` extension or vLLM's
    `token_ids`; otherwise usage.completion_tokens is exact for n=1 and shared out by length for n>1.
    """
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    if len(choices) != n:
        raise ValueError(f"{len(choices)} choices for n={n}")
    usage = data.get("usage") or {}
    texts = [c.get("text") or "" for c in choices]
    fallback = _split_tokens(int(usage.get("completion_tokens") or 0), texts)
    out = []
    for c, text, guess in zip(choices, texts, fallback):
        if "completion_tokens" in c:
            count = int(c["completion_tokens"])
        elif c.get("token_ids") is not None:
            count = len(c["token_ids"])
        else:
            count = guess
        stop_reason = c.get("stop_reason")
        finish = c.get("finish_reason") or "stop"
        if finish not in ("stop", "length"):  # e.g. vLLM's "abort": not a completion to score
            raise ValueError(f"choice {c.get('index')} has finish_reason={finish!r}")
        out.append(Completion(text, finish, stop_reason if isinstance(stop_reason, str) else None,
                              int(usage.get("prompt_tokens") or 0), count, _logprobs(c.get("logprobs"))))
    return out


def _logprobs(lp: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """A completion choice's OpenAI `logprobs` as the engines' per-token entries (no token ids)."""
    if not lp or lp.get("token_logprobs") is None:
        return None
    tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
    return [{"token": t, "logprob": v, "top_logprobs": sorted(([k, x] for k, x in (top or {}).items()),
                                                               key=lambda kv: -kv[1])}
            for t, v, top in zip(lp["tokens"], lp["token_logprobs"], tops)]


class OpenAIEngine(Engine):
    """Generation through a remote OpenAI-compatible server."""

    name = "openai"
    supports_logprobs = True  # asked of the server, which may refuse (a 400 names it)

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 request_timeout_s: float = 600, max_concurrency: int = 64):
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.max_concurrency = max_concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None

    @property
    def model_name(self) -> str:
        return self.model

    def _state(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        """Session and semaphore of the running loop (both are loop-bound; a new loop gets new ones)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=headers)
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._session, self._sem  # type: ignore[return-value]

    async def generate(self, prompts: list[str], params: SamplingParams,
                       seeds: list[int] | None = None) -> list[list[Completion]]:
        per_prompt = resolve_seeds(len(prompts), params, seeds)
        return list(await asyncio.gather(*(self._one(p, params, s) for p, s in zip(prompts, per_prompt))))

    async def _one(self, prompt: str, params: SamplingParams, seed: int | None) -> list[Completion]:
        session, sem = self._state()
        body = {"model": self.model, "prompt": prompt, "n": params.n, "temperature": params.temperature,
                "top_p": params.top_p, "max_tokens": params.max_tokens, "stop": params.stop or None, "seed": seed}
        if params.logprobs is not None:
            body["logprobs"] = params.logprobs
        async with sem:
            try:
                async with session.post(self.url, json=body) as resp:
                    text = await resp.text()
                    if resp.status >= 400:
                        raise EngineError(f"POST {self.url} -> HTTP {resp.status}: {_server_message(text)}")
            except aiohttp.ClientError as e:
                raise EngineError(f"POST {self.url} failed: {e.__class__.__name__}: {e}") from None
            except asyncio.TimeoutError:
                raise EngineError(f"POST {self.url} timed out after {self.timeout.total}s") from None
        try:
            return parse_choices(json.loads(text), params.n)
        except (ValueError, KeyError, TypeError) as e:
            raise EngineError(f"POST {self.url} -> unusable completion response ({e}): {text[:300]}") from None

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            try:
                await self._session.close()
            except RuntimeError:  # created on a loop that is gone; nothing left to close cleanly
                pass
        self._session = None
