"""What a tool call returns, and the one method a tool caller needs (`ToolClient`).

Shared by the in-process `ToolBox`, the Serve verifier app's handle client and the CLModel
reasoner's tool ops, so the reasoner does not care where a tool ran.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

ErrorType = Literal["bad_input", "unknown_op", "too_large", "timeout", "budget", "error"]


@dataclass
class ToolResult:
    """ok=True: `result` holds the answer (JSON-able: str, bool, list, dict).
    ok=False: `error_type` says why and `error` says it in words."""

    op: str
    ok: bool
    result: Any = None
    error_type: ErrorType | None = None
    error: str | None = None
    cached: bool = False
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ToolResult:
        return cls(**{k: d[k] for k in ("op", "ok", "result", "error_type", "error", "cached", "elapsed_s") if k in d})


class ToolClient(Protocol):
    def call(self, op: str, args: dict) -> ToolResult: ...
