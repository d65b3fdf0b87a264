"""An OpenAI-compatible surface over any Engine: /v1/completions, /v1/chat/completions, streaming.

The same request models, `respond` and `sse_events` back a local test server (`build_app`) and the
Ray Serve app, so OpenAI clients (and our own OpenAIEngine) can talk to whichever backend is
configured. Defaults follow OpenAI (temperature 1, max_tokens 16); errors use OpenAI's
{"error": {...}} shape. A field this server does not honour is refused with a 400 that names it
(at its "off" value it is accepted: `NEUTRAL`), never silently ignored. Streaming (`stream: true`)
sends each choice whole as one delta, since the engines return whole completions.

    python -m pytest tests/test_engines.py tests/test_serve_solver.py -k "v1 or openai or chat"
"""

import json
import time  # no `from __future__ import annotations`: FastAPI must see the real `Request` class below
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from squigglray.engines.base import Engine, EngineError, EngineUnavailable, SamplingParams, raw_chat_prompt


# OpenAI fields this server does not implement, with the values that mean "off" (accepted, since
# harnesses send them at their defaults); any other value, or a field OpenAI does not have, is a 400
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "echo": (None, False), "best_of": (None, 1),
    "presence_penalty": (None, 0), "frequency_penalty": (None, 0), "logit_bias": (None, {}), "suffix": (None, ""),
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}), "parallel_tool_calls": (None,), "service_tier": (None,),
}
IGNORED = {"user"}  # the end user's id: nothing to honour, nothing to refuse


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class _Sampling(BaseModel):
    """The sampling fields both routes honour."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    n: int = Field(1, ge=1, le=256)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(16, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if v is not None and any(not s for s in ([v] if isinstance(v, str) else v)):
            raise ValueError("stop strings must be non-empty")
        return v

    def top_k(self) -> int | None:
        """Log-probabilities asked for: None, or how many alternatives per token."""
        return None

    def sampling_params(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens, stop=stop, seed=self.seed, logprobs=self.top_k())


class CompletionRequest(_Sampling):
    """OpenAI's /v1/completions body, as far as this server honours it (`parse` refuses the rest)."""

    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5, description="each token's log-probability and its k alternatives")

    def top_k(self) -> int | None:
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("prompt must be a string or a non-empty list of strings")
        return v

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampling):
    """OpenAI's /v1/chat/completions body (text messages), rendered into one prompt by the model's
    chat template (`Engine.render_chat`), or else the project's raw format (`raw_chat_prompt`)."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("top_logprobs")
    @classmethod
    def _with_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v and not info.data.get("logprobs"):
            raise ValueError("needs logprobs: true")
        return v

    @model_validator(mode="after")
    def _one_budget(self) -> "ChatCompletionRequest":
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self

    def top_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def dialog(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text} for m in self.messages]


def parse(cls: type[_Sampling], body: Any) -> _Sampling:
    """A request body as `cls`; a ValueError names every field this server cannot honour (an OpenAI
    field at a value other than its "off" value, or a field OpenAI does not have) or fails on."""
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    fields = set(cls.model_fields)
    bad = sorted(k for k, v in body.items()
                 if k not in fields and k not in IGNORED and not (k in NEUTRAL and v in NEUTRAL[k]))
    if bad:
        raise ValueError(f"{', '.join(bad)}: not supported by this server (it honours {', '.join(sorted(fields))})")
    return cls.model_validate({k: v for k, v in body.items() if k in fields})


async def complete(engine: Engine, req: CompletionRequest | ChatCompletionRequest,
                   model_name: str | None = None) -> dict[str, Any]:
    """Run one request; choice index = prompt_index * n + k, as OpenAI numbers them.

    Each choice also carries `completion_tokens` (an extension, like vLLM's `stop_reason`), since
    usage alone cannot say how many tokens each of n samples took.
    """
    chat = isinstance(req, ChatCompletionRequest)
    if req.top_k() is not None and not engine.supports_logprobs:
        raise ValueError(f"logprobs: not supported by the {engine.name} backend")
    if chat:
        dialog = req.dialog()
        prompts = [await engine.render_chat(dialog) or raw_chat_prompt(dialog, engine.model_name)]
    else:
        prompts = req.prompts
    results = await engine.generate(prompts, req.sampling_params())
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for i, samples in enumerate(results):
        prompt_tokens += samples[0].prompt_tokens if samples else 0
        for k, c in enumerate(samples):
            completion_tokens += c.completion_tokens
            out = ({"message": {"role": "assistant", "content": c.text}} if chat else {"text": c.text})
            choices.append({"index": i * req.n + k, **out, "finish_reason": c.finish_reason,
                            "stop_reason": c.stop_reason, "logprobs": openai_logprobs(c.logprobs, chat),
                            "completion_tokens": c.completion_tokens})
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
        "model": req.model or model_name or engine.model_name, "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def openai_logprobs(entries: list[dict[str, Any]] | None, chat: bool) -> dict[str, Any] | None:
    """An engine's per-token log-probabilities in OpenAI's shape for chat, or for completions."""
    if entries is None:
        return None
    if chat:
        def tok(t: str, lp: float) -> dict[str, Any]:
            return {"token": t, "logprob": lp, "bytes": list(t.encode())}

        return {"content": [{**tok(e["token"], e["logprob"]),
                             "top_logprobs": [tok(t, lp) for t, lp in e["top_logprobs"]]} for e in entries]}
    offsets = [0]
    for e in entries[:-1]:
        offsets.append(offsets[-1] + len(e["token"]))
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [dict(e["top_logprobs"]) for e in entries] if any(e["top_logprobs"] for e in entries)
            else None, "text_offset": offsets}


def sse_events(payload: dict[str, Any], include_usage: bool = False) -> Iterator[str]:
    """A finished response as server-sent events, in OpenAI's chunk format: each choice's text as one
    delta (the engines generate whole completions), then its finish reason, the usage when asked,
    and `[DONE]`."""
    chat = payload["object"] == "chat.completion"
    head = {"id": payload["id"], "object": "chat.completion.chunk" if chat else "text_completion",
            "created": payload["created"], "model": payload["model"]}

    def event(choices: list[dict], **extra) -> str:
        return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

    for c in payload["choices"]:
        if chat:
            yield event([{"index": c["index"], "delta": {"role": "assistant", "content": c["message"]["content"]},
                          "finish_reason": None, "logprobs": c["logprobs"]}])
            yield event([{"index": c["index"], "delta": {}, "finish_reason": c["finish_reason"], "logprobs": None}])
        else:
            yield event([{"index": c["index"], "text": c["text"], "finish_reason": c["finish_reason"],
                          "logprobs": c["logprobs"]}])
    if include_usage:
        yield event([], usage=payload["usage"])
    yield "data: [DONE]\n\n"


def error_body(status: int, message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def describe(e: ValidationError) -> tuple[str, str | None]:
    """A validation error as one readable line, and the first offending field."""
    errs = e.errors()
    message = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg'].removeprefix('Value error, ')}"
                        for err in errs)
    return message, (str(errs[0]["loc"][0]) if errs and errs[0]["loc"] else None)


def models_body(model_name: str, created: int) -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "squigglray"}]}


ROUTES = {"completions": CompletionRequest, "chat": ChatCompletionRequest}


def validated(route: str, body: Any) -> tuple[_Sampling | None, tuple[int, dict[str, Any]] | None]:
    """(the request, None), or (None, a 400 in OpenAI's shape naming the offending fields)."""
    try:
        return parse(ROUTES[route], body), None
    except ValidationError as e:
        message, param = describe(e)
    except ValueError as e:
        message, param = str(e), str(e).split(":", 1)[0].split(",")[0]
    return None, (400, error_body(400, message, "invalid_request_error", param))


async def respond(engine: Engine, body: Any, model_name: str, route: str = "completions") -> tuple[int, dict[str, Any]]:
    """A parsed /v1/completions (route "completions") or /v1/chat/completions ("chat") body -> (HTTP
    status, JSON body), errors in OpenAI's shape. A streamed request gets the same body here; the
    HTTP layer sends it as `sse_events`."""
    req, bad = validated(route, body)
    if bad is not None:
        return bad
    if req.model is not None and req.model != model_name:
        return 404, error_body(404, f"The model `{req.model}` does not exist; this server serves `{model_name}`.",
                               "NotFoundError", "model")
    try:
        return 200, await complete(engine, req, model_name)
    except ValueError as e:
        return 400, error_body(400, str(e), "invalid_request_error", "logprobs" if str(e).startswith("logprobs") else None)
    except EngineUnavailable as e:
        return 503, error_body(503, str(e), "service_unavailable")
    except EngineError as e:
        return 500, error_body(500, str(e), "engine_error")


def http_response(status: int, payload: dict[str, Any], body: Any):
    """JSON, or server-sent events for a successful request that asked to stream."""
    from fastapi.responses import JSONResponse, StreamingResponse

    if status == 200 and isinstance(body, dict) and body.get("stream"):
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(sse_events(payload, usage), media_type="text/event-stream")
    return JSONResponse(payload, status_code=status)


def build_app(engine: Engine, model_name: str):
    """FastAPI app with POST /v1/completions, POST /v1/chat/completions and GET /v1/models for
    `engine` served as `model_name`."""
    from fastapi import FastAPI, Request

    app = FastAPI(title=f"squigglray completions: {model_name}")
    created = int(time.time())

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return models_body(model_name, created)

    async def answer(request: Request, route: str):
        try:
            body = await request.json()
        except ValueError:
            body, (status, payload) = None, (400, error_body(400, "the request body is not valid JSON",
                                                              "invalid_request_error"))
        else:
            status, payload = await respond(engine, body, model_name, route)
        return http_response(status, payload, body)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, "completions")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await answer(request, "chat")

    return app
