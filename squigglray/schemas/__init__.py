"""Versioned contracts shared by every layer. Each model carries a `schema` string `<name>@<major.minor>`."""

from squigglray.schemas.base import Provenance, SchemaMismatch, VersionedModel
from squigglray.schemas.problems import STEP_TYPES, TARGET_TYPES, OutlineStep, ProblemInstance
from squigglray.schemas.runs import EvalRow, RunRecord

__all__ = [
    "EvalRow",
    "OutlineStep",
    "ProblemInstance",
    "Provenance",
    "RunRecord",
    "SchemaMismatch",
    "STEP_TYPES",
    "TARGET_TYPES",
    "VersionedModel",
]
