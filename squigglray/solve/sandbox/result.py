"""What a sandbox run returns, and the limits it runs under (plain data, JSON-safe)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RunStatus = Literal["ok", "error", "timeout", "memory", "killed", "output_limit"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "memory", "killed", "output_limit")
# Imported once by the zygote so that runs do not pay for them (`import sympy` alone is ~0.3 s).
PRELOAD: tuple[str, ...] = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections",
                            "heapq", "bisect", "statistics", "random", "re", "string", "operator", "numpy", "sympy")
# Run once in the zygote after the imports: sympy imports most of its machinery lazily on first use
# (the first sp.solve costs ~0.4 s), so without this every fork would pay that again.
WARMUP = """
import sympy as sp, numpy as np
x, y, n = sp.symbols('x y n')
k = sp.symbols('k', integer=True)
sp.factor(x**6 - 1); sp.expand((x + 3)**5); sp.simplify(sp.sin(x)**2 + sp.cos(x)**2)
sp.solve(x**2 - 5*x + 2, x); sp.solve([x + y - 3, x - y - 1], [x, y]); sp.solveset(x**2 - 4, x, sp.S.Reals)
sp.linsolve([x + y - 1, x - y], (x, y)); sp.nsolve(x**3 - 2, x, 1); sp.roots(x**3 - 6*x**2 + 11*x - 6)
sp.summation(k**2, (k, 1, n)); sp.summation(k, (k, 1, 10)); sp.product(k, (k, 1, 5))
sp.integrate(x**2, (x, 0, 1)); sp.diff(sp.exp(x) * x, x); sp.limit(sp.sin(x) / x, x, 0); sp.series(sp.exp(x), x, 0, 4)
sp.isprime(1000003); sp.nextprime(10**6); sp.factorint(2**32 + 1); sp.divisors(360); sp.totient(360)
sp.binomial(20, 5); sp.factorial(10); sp.gcd(12, 18); sp.lcm(4, 6); sp.mod_inverse(3, 11)
sp.Rational(1, 3) + sp.Rational(1, 6); sp.nsimplify(0.125); sp.sqrt(8); sp.N(sp.pi, 30); sp.Matrix([[1, 2], [3, 4]]).det()
sp.Poly(x**3 - 1, x).all_coeffs(); sp.latex(x**2); str(sp.sqrt(2) * x); sp.primerange(1, 50); sp.igcd(6, 9)
from sympy.ntheory.modular import crt; crt([3, 5], [2, 3]); from sympy.ntheory import n_order, discrete_log
n_order(2, 7); discrete_log(11, 9, 2)
np.linalg.det(np.eye(3)); np.arange(10).sum(); np.array([1.5]).round()
"""


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits. `memory_mb` is each process's headroom above what the pre-imported
    zygote already maps; where the cgroup tree is writable, a whole box (all its processes and its
    tmpfs) also gets `memory_mb + tmpfs_mb`. `processes` counts a box's processes (process mode: none)."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    open_files: int = 64
    processes: int = 64
    output_bytes: int = 64_000
    stderr_tail_bytes: int = 4_000
    tmpfs_mb: int = 256


@dataclass
class RunResult:
    status: RunStatus
    stdout: str = ""
    stderr: str = ""  # the tail of stderr / the traceback
    duration_s: float = 0.0  # wall time in the sandbox manager, fork to clean-up
    exec_s: float = 0.0  # time the code itself ran (what is left of duration_s is overhead)
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
