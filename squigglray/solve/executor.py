"""The code-execution protocol the solver needs, and a Ray-free implementation of it.

The TIR loop only sees `CodeExecutor`; `actors.sandbox_pool.SandboxPool` implements it on Ray actors,
`LocalExecutor` on Sandboxes in this process (threads), for a laptop without Ray or for tests.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Protocol

from squigglray.solve.sandbox import Limits, RunResult, Sandbox


class CodeExecutor(Protocol):
    async def run(self, code: str, session: str | None = None, timeout_s: float | None = None) -> RunResult: ...

    async def close_session(self, session: str) -> None: ...


def worker_for(session: str, n: int) -> int:
    """A session's state lives in one worker's zygote: route it there every time (stable hash)."""
    return int.from_bytes(hashlib.sha1(session.encode()).digest()[:4], "big") % n


class LocalExecutor:
    """n Sandboxes driven from threads; a session always goes to the same Sandbox."""

    def __init__(self, n: int = 1, limits: Limits | None = None, **sandbox_options):
        """`sandbox_options`: keyword arguments of `Sandbox` (isolation, allow_weak_isolation, ...)."""
        self.sandboxes = [Sandbox(limits, **sandbox_options) for _ in range(n)]
        self._next = 0

    def _pick(self, session: str | None) -> Sandbox:
        if session is not None:
            return self.sandboxes[worker_for(session, len(self.sandboxes))]
        self._next = (self._next + 1) % len(self.sandboxes)
        return self.sandboxes[self._next]

    async def run(self, code: str, session: str | None = None, timeout_s: float | None = None) -> RunResult:
        return await asyncio.to_thread(self._pick(session).run, code, timeout_s, session)

    async def close_session(self, session: str) -> None:
        await asyncio.to_thread(self._pick(session).close_session, session)

    def close(self) -> None:
        for sb in self.sandboxes:
            sb.close()
