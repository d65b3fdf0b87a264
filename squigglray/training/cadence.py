"""Logging cadence: dense early (log-spaced steps), then every `every` steps (seed 000 §2.2)."""

from __future__ import annotations

import math


def log_steps(max_steps: int, dense_until: int, every: int, per_decade: int = 8) -> list[int]:
    """Steps 1..max_steps at which to log: ~per_decade log-spaced points below dense_until,
    multiples of `every` after it, and always the last step."""
    steps: set[int] = set()
    if dense_until > 0:
        n = max(1, int(math.ceil(per_decade * math.log10(max(dense_until, 10)))))
        for i in range(n + 1):
            steps.add(int(round(dense_until ** (i / n))))
    steps.update(range(every * max(1, math.ceil(dense_until / every)), max_steps + 1, every))
    steps.add(max_steps)
    return sorted(s for s in steps if 1 <= s <= max_steps)
