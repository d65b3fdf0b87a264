"""An optional API key for the project's Serve apps (serve_apps/solver.py, serve_apps/verifiers.py).

The app's config names an environment variable (`require_api_key_env`), never the key itself. Each
replica reads the key from its own environment when it starts (`read_api_key`) and fails right
there when the variable is unset or empty, so a deployment configured for a key never serves open.
With a key, every HTTP request except OPEN_PATHS (the health check, for load balancers and probes)
needs `Authorization: Bearer <key>` (`BearerAuth`); anything else gets 401 in OpenAI's error shape,
which the `openai` client raises as AuthenticationError. Deployment-handle calls inside the cluster
are not HTTP and are not checked.

No Ray import here: an app hands `BearerAuth` a function that finds its replica's key.
"""

from __future__ import annotations

import hmac
import os
import re
from typing import Any, Awaitable, Callable, Optional

from pydantic import BaseModel, Field, field_validator
from starlette.responses import JSONResponse

from squigglray.engines.openai_api import error_body

OPEN_PATHS = frozenset({"/healthz"})
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ApiKeyArgs(BaseModel):
    """The API-key field of the Serve apps' args (SolverAppArgs, VerifierAppArgs)."""

    require_api_key_env: Optional[str] = Field(
        None, description="name of the environment variable holding the key that clients of this app must send "
                          "(Authorization: Bearer <key>; every route but /healthz, 401 otherwise); the variable "
                          "must be set in each replica's environment (runtime_env env_vars or the node's), else "
                          "the replica fails at start. null: no key, the app is open")

    @field_validator("require_api_key_env")
    @classmethod
    def _is_a_name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not ENV_NAME.fullmatch(v):
            raise ValueError("must be the NAME of an environment variable (letters, digits, _); "
                             "the key itself goes in that variable, never in the config")
        return v


def read_api_key(env: Optional[str]) -> Optional[str]:
    """The key held by environment variable `env` (None when no variable is named). Raises when the
    variable is unset or empty: called as a replica starts, that fails the deployment."""
    if env is None:
        return None
    key = os.environ.get(env, "").strip()
    if not key:
        raise RuntimeError(f"require_api_key_env names the environment variable {env!r}, which is not set (or is "
                           f"empty) in this replica's environment: set it through the application's runtime_env "
                           f"env_vars or the node's environment, or drop require_api_key_env to serve without a key")
    return key


def refusal(authorization: Optional[bytes], key: Optional[str]) -> Optional[str]:
    """Why a request with this Authorization header is refused; None lets it through (also: no key)."""
    if key is None:
        return None
    if not authorization:
        return "this server needs an API key: send the header `Authorization: Bearer <key>`"
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), key.encode()):
        return "invalid API key: send the header `Authorization: Bearer <key>` with this server's key"
    return None


def _route_path(scope: dict[str, Any]) -> str:
    """The path below the app's route prefix (Serve puts the prefix in both root_path and path)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root + "/") else path


class BearerAuth:
    """ASGI middleware: 401 for an HTTP request outside OPEN_PATHS without the key that `key()`
    returns (checked per request; `key()` returning None means no key is required)."""

    def __init__(self, app: Callable[..., Awaitable[None]], key: Callable[[], Optional[str]]):
        self.app = app
        self.key = key

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and _route_path(scope) not in OPEN_PATHS:
            authorization = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
            why = refusal(authorization, self.key())
            if why is not None:
                response = JSONResponse(error_body(401, why, "authentication_error"), status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
