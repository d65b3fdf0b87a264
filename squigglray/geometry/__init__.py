"""Geometry capture for squiggle research (issue 4, seed 000 §4).

`metrics` holds the pure metric functions on torch tensors (no Ray, no trainer coupling);
the capture callback that applies them per layer/matrix and writes
`geometry_state/<run_id>.parquet` builds on top of them.
"""

from squigglray.geometry.capture import GEOMETRY_SCHEMA, GeometryCapture, batch_hash, watched_weights
from squigglray.geometry.metrics import (
    METRICS,
    activation_anisotropy,
    effective_rank_entropy,
    frobenius_norm,
    gradient_cosine,
    gradient_norm,
    linear_cka,
    relative_update,
    representation_drift,
    spectral_norm,
    stable_rank_fro_spec,
    update_norm,
)

__all__ = [
    "GEOMETRY_SCHEMA",
    "GeometryCapture",
    "batch_hash",
    "watched_weights",
    "METRICS",
    "activation_anisotropy",
    "effective_rank_entropy",
    "frobenius_norm",
    "gradient_cosine",
    "gradient_norm",
    "linear_cka",
    "relative_update",
    "representation_drift",
    "spectral_norm",
    "stable_rank_fro_spec",
    "update_norm",
]
