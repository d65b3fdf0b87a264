"""HTTP helpers the Serve apps share (solver, verifiers): OpenAI-shaped error responses and a JSON
body read with a size limit."""

# no `from __future__ import annotations`: like the apps, keep the real `Request` class in signatures
import json
from typing import Any, Optional

from fastapi import Request
from fastapi.responses import JSONResponse

from squigglray.engines.openai_api import error_body


def error(status: int, message: str, kind: str = "invalid_request_error", param: Optional[str] = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, kind, param), status_code=status)


async def read_json(request: Request, limit: int) -> tuple[Any, Optional[JSONResponse]]:
    """The parsed body, or a 413 (over `limit` bytes, checked before reading it all) / 400 response."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None, error(413, f"request body is {int(declared)} bytes; the limit is {limit} bytes", "request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None, error(413, f"request body is over the limit of {limit} bytes", "request_too_large")
    if not body.strip():
        return None, error(400, "the request body is empty; send a JSON object")
    try:
        return json.loads(body), None
    except (ValueError, UnicodeDecodeError) as e:
        return None, error(400, f"the request body is not valid JSON ({e})")
