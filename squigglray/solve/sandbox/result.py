"""What a sandbox run returns, and the limits it runs under (plain data, JSON-safe)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RunStatus = Literal["ok", "error", "timeout", "memory", "killed", "output_limit"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "memory", "killed", "output_limit")
# Imported once by the zygote so that runs do not pay for them (`import sympy` alone is ~0.3 s).
PRELOAD: tuple[str, ...] = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections",
                            "heapq", "bisect", "statistics", "random", "re", "string", "operator", "numpy", "sympy")


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits. Memory is headroom above what the pre-imported zygote already maps."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    open_files: int = 64
    processes: int = 64
    output_bytes: int = 64_000
    stderr_tail_bytes: int = 4_000
    tmpfs_mb: int = 256

    def cpu_seconds(self, timeout_s: float) -> int:
        """CPU-time rlimit: a backstop just above the wall clock (SIGXCPU, then SIGKILL)."""
        return int(timeout_s) + 2


@dataclass
class RunResult:
    status: RunStatus
    stdout: str = ""
    stderr: str = ""  # the tail of stderr / the traceback
    duration_s: float = 0.0
    peak_memory_mb: float = 0.0
    isolation: list[str] = field(default_factory=list)  # what was in force, e.g. ["pid-namespace", ...]
    session: str | None = None
    session_reset: bool = False  # the session's earlier state was gone before this run started

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def model_output(self, max_chars: int = 2000) -> str:
        """What a model is shown after ```output: stdout, or the error's last line."""
        if self.status == "timeout":
            return "TimeoutError: execution timed out"
        if self.status == "memory":
            return "MemoryError: out of memory"
        if self.status == "output_limit":
            return self.stdout.strip()[:max_chars] + "\n... (output truncated)"
        if self.status in ("error", "killed"):
            lines = self.stderr.strip().splitlines() or [self.status]
            return lines[-1][:max_chars]
        return self.stdout.strip()[:max_chars]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        return cls(**d)
