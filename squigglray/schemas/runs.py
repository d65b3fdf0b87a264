"""Records of training runs and their evaluations."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from squigglray.schemas.base import Provenance, VersionedModel


class RunRecord(VersionedModel):
    """runs/<run_id>/run.json: what was trained, from what, and how it went."""

    SCHEMA = "run_record@1.0"
    provenance: Provenance
    model_preset: str
    n_params: int
    steps: int
    tokens_seen: int
    train_seconds: float
    final_loss: float
    config: dict[str, Any]


class EvalRow(BaseModel):
    """One family's held-out accuracy; a table of these is the quickstart's headline."""

    model_config = ConfigDict(extra="forbid")
    family_id: str
    n: int
    code_acc: float
    boxed_acc: float
    format_acc: float
