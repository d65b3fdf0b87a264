"""Run a generated code block in a plain subprocess with a timeout (the hardened sandbox is in
squigglray.solve.sandbox; this is the simple isolation held-out evaluation needs), and the same as
a `CodeExecutor` for the solver's loop (`SubprocessExecutor`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

MAX_OUTPUT_CHARS = 2000


@dataclass
class CodeResult:
    stdout: str
    stderr: str
    status: str  # ok | error | timeout
    duration_s: float = 0.0

    def model_output(self, max_chars: int = MAX_OUTPUT_CHARS) -> str:
        """What the model is shown after ```output: stdout, or the error's last line (at most
        MAX_OUTPUT_CHARS; the solver's RunResult.model_output, for this executor's statuses)."""
        limit = min(max_chars, MAX_OUTPUT_CHARS)
        if self.status == "timeout":
            return "TimeoutError: execution timed out"
        if self.status == "error":
            return (self.stderr.strip().splitlines() or ["error"])[-1][:limit]
        return self.stdout.strip()[:limit]

    @property
    def output(self) -> str:
        return self.model_output()


def run_python(code: str, timeout_s: float = 5.0) -> CodeResult:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return CodeResult("", "", "timeout", time.perf_counter() - t0)
    return CodeResult(p.stdout, p.stderr, "ok" if p.returncode == 0 else "error", time.perf_counter() - t0)


def run_many(codes: list[str], timeout_s: float = 5.0, workers: int = 4) -> list[CodeResult]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda c: run_python(c, timeout_s), codes))


class SubprocessExecutor:
    """A `squigglray.solve.CodeExecutor` on `run_python`: every run a fresh subprocess (no session
    state), at most `workers` at once."""

    def __init__(self, workers: int = 4, timeout_s: float = 5.0):
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=workers)

    async def run(self, code: str, session: str | None = None, timeout_s: float | None = None) -> CodeResult:
        return await asyncio.get_running_loop().run_in_executor(self._pool, run_python, code,
                                                                timeout_s or self.timeout_s)

    async def close_session(self, session: str) -> None:
        pass

    def close(self) -> None:
        self._pool.shutdown(wait=True)
