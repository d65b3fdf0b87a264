"""What the equivalence checker's worker process runs (imported there at start, so loading
math-verify never counts against a call's deadline). math-verify's own timeouts are disabled:
they use signal.alarm; the parent's deadline kills a stuck worker instead."""

from __future__ import annotations

import logging

from math_verify import parse, verify

logging.disable(logging.WARNING)  # "timeout is disabled" warnings: intended here


def _parse(s: str):
    return parse("\\boxed{" + s + "}", parsing_timeout=None)


def equivalent(a: str, b: str) -> bool:
    """Equivalent = verify holds in both directions (math-verify's verify(gold, pred) is not symmetric)."""
    ga, gb = _parse(a), _parse(b)
    return bool(ga and gb) and bool(verify(ga, gb, timeout_seconds=None)) and bool(verify(gb, ga, timeout_seconds=None))
