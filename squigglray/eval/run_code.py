"""Run a generated code block in a plain subprocess with a timeout (the hardened sandbox is in
squigglray.solve.sandbox; this is the simple isolation held-out evaluation needs)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

MAX_OUTPUT_CHARS = 2000


@dataclass
class CodeResult:
    stdout: str
    stderr: str
    status: str  # ok | error | timeout

    @property
    def output(self) -> str:
        """What the model is shown after ```output: stdout, or the error's last line."""
        if self.status == "timeout":
            return "TimeoutError: execution timed out"
        if self.status == "error":
            return (self.stderr.strip().splitlines() or ["error"])[-1][:MAX_OUTPUT_CHARS]
        return self.stdout.strip()[:MAX_OUTPUT_CHARS]


def run_python(code: str, timeout_s: float = 5.0) -> CodeResult:
    try:
        p = subprocess.run(
            [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return CodeResult("", "", "timeout")
    return CodeResult(p.stdout, p.stderr, "ok" if p.returncode == 0 else "error")


def run_many(codes: list[str], timeout_s: float = 5.0, workers: int = 4) -> list[CodeResult]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda c: run_python(c, timeout_s), codes))
