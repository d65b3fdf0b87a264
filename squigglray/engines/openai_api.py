"""An OpenAI-compatible /v1/completions surface over any Engine.

The same request model, `complete` and `build_app` back a local test server and the Ray Serve app,
so OpenAI clients (and our own OpenAIEngine) can talk to whichever backend is configured.
Defaults follow OpenAI (temperature 1, max_tokens 16); errors use OpenAI's {"error": {...}} shape.
"""

import time  # no `from __future__ import annotations`: FastAPI must see the real `Request` class below
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from squigglray.engines.base import Engine, EngineError, EngineUnavailable, SamplingParams


class CompletionRequest(BaseModel):
    """The subset of OpenAI's completion body we honour; unknown fields are ignored, as servers do."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | list[str]
    n: int = Field(1, ge=1, le=256)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(16, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("prompt must be a string or a non-empty list of strings")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if v is not None and any(not s for s in ([v] if isinstance(v, str) else v)):
            raise ValueError("stop strings must be non-empty")
        return v

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v: bool) -> bool:
        if v:
            raise ValueError("streaming is not supported; send stream=false")
        return v

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def sampling_params(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens, stop=stop, seed=self.seed)


async def complete(engine: Engine, req: CompletionRequest, model_name: str | None = None) -> dict[str, Any]:
    """Run one request; choice index = prompt_index * n + k, as OpenAI numbers them.

    Each choice also carries `completion_tokens` (an extension, like vLLM's `stop_reason`), since
    usage alone cannot say how many tokens each of n samples took.
    """
    results = await engine.generate(req.prompts, req.sampling_params())
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for i, samples in enumerate(results):
        prompt_tokens += samples[0].prompt_tokens if samples else 0
        for k, c in enumerate(samples):
            completion_tokens += c.completion_tokens
            choices.append({"index": i * req.n + k, "text": c.text, "finish_reason": c.finish_reason,
                            "stop_reason": c.stop_reason, "logprobs": None,
                            "completion_tokens": c.completion_tokens})
    return {
        "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
        "model": req.model or model_name or engine.model_name, "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


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


async def respond(engine: Engine, body: Any, model_name: str) -> tuple[int, dict[str, Any]]:
    """A parsed /v1/completions body -> (HTTP status, JSON body), errors in OpenAI's shape."""
    try:
        req = CompletionRequest.model_validate(body)
    except ValidationError as e:
        message, param = describe(e)
        return 400, error_body(400, message, "invalid_request_error", param)
    if req.model is not None and req.model != model_name:
        return 404, error_body(404, f"The model `{req.model}` does not exist; this server serves `{model_name}`.",
                               "NotFoundError", "model")
    try:
        return 200, await complete(engine, req, model_name)
    except ValueError as e:
        return 400, error_body(400, str(e), "invalid_request_error")
    except EngineUnavailable as e:
        return 503, error_body(503, str(e), "service_unavailable")
    except EngineError as e:
        return 500, error_body(500, str(e), "engine_error")


def build_app(engine: Engine, model_name: str):
    """FastAPI app with POST /v1/completions and GET /v1/models for `engine` served as `model_name`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title=f"squigglray completions: {model_name}")
    created = int(time.time())

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return models_body(model_name, created)

    @app.post("/v1/completions")
    async def completions(request: Request):
        try:
            body = await request.json()
        except ValueError:
            status, payload = 400, error_body(400, "the request body is not valid JSON", "invalid_request_error")
        else:
            status, payload = await respond(engine, body, model_name)
        return JSONResponse(payload, status_code=status)

    return app
