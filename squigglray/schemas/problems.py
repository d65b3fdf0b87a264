"""Problem instances produced by the synthetic families (seed 000 §3.0, §3.1)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from squigglray.schemas.base import VersionedModel

# Seed 000 §3.1: the step_type vocabulary of solution traces.
STEP_TYPES: tuple[str, ...] = (
    "parse", "rewrite", "simplify", "substitute", "expand", "factor", "differentiate",
    "integrate", "apply_identity", "apply_theorem", "case_split", "introduce_variable",
    "bound_estimate", "compute", "verify", "conclude",
)
StepType = Literal[
    "parse", "rewrite", "simplify", "substitute", "expand", "factor", "differentiate",
    "integrate", "apply_identity", "apply_theorem", "case_split", "introduce_variable",
    "bound_estimate", "compute", "verify", "conclude",
]

# Seed 000 §3.1 target types, plus the plain types the issue adds.
TARGET_TYPES: tuple[str, ...] = (
    "modular_arithmetic_invariants",
    "discrete_log_order_cyclic",
    "bijections_counting",
    "graph_path_recurrence",
    "functional_equations",
    "invariant_monovariant",
    "arithmetic",
    "equations",
    "divisibility",
    "inequality_amgm",
)


class OutlineStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step_type: StepType
    text: str


class ProblemInstance(VersionedModel):
    """One sampled instance: problem text, exact answer, labelled outline, tool-integrated trace."""

    SCHEMA = "problem_instance@1.0"
    instance_id: str
    family_id: str
    target_type: str
    knobs: dict[str, int]
    seed: int
    index: int
    params: dict[str, Any]
    problem: str
    answer: int
    answer_modulus: int | None = None
    outline: list[OutlineStep]
    code: str
    code_output: str
    trace: str
