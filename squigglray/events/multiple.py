"""Benjamini-Hochberg over a report's tests and over event families: q-values, not raw p.

A report that prints ten p-values, or a table of hundreds of families, finds something at 0.05 by
chance. `bh_qvalues` turns p-values into BH q-values (the smallest FDR at which each would be
rejected); None (untested) stays None and is not counted in the number of tests.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def bh_qvalues(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg q-values in input order; None entries pass through and are not tests."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if not idx:
        return out
    p = np.asarray([p_values[i] for i in idx], dtype=np.float64)
    if np.any((p < 0) | (p > 1) | ~np.isfinite(p)):
        raise ValueError("p-values must lie in [0, 1]")
    m = len(p)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    q = np.empty(m)
    q[order] = q_sorted
    for i, v in zip(idx, q):
        out[i] = float(v)
    return out


def bh_by_key(p_values: Mapping[str, float | None]) -> dict[str, float | None]:
    """`bh_qvalues` over a mapping (names kept)."""
    keys = list(p_values)
    return dict(zip(keys, bh_qvalues([p_values[k] for k in keys])))
