"""PoolItem (seed 000 §3.1): one candidate training problem of a dataset slice, and its Parquet form.

The five fields of the seed, as the seed gives them:
- `item_id`: stable, `<prefix>:<split>:<source_id>` (e.g. `omr:cot:1f3a…` for OpenMathReasoning);
- `source`: dataset name, split, source_id and the source-side tags (e.g. `problem_source`);
- `content`: `problem` and `final_answer` (null when the source has none);
- `trace`: the solution-trace scaffold: `steps` (empty in a first slice), `max_steps` (8–30), and
  steps typed from the `step_type` vocabulary (`STEP_TYPES`);
- `provenance`: the reference solution text (OMR's `generated_solution`), kept as provenance and
  never converted into `trace.steps`.

The slice builder adds its annotations next to them: the family and the rule that assigned it, the
target type, the reasoning style (cot / tir / short / none), difficulty, the split (train / probe_a
/ holdout), whether the item is a synthetic fill, content hashes, the sampling rank and a token count.

Arrow schema of `items.parquet` (`POOL_ITEM_SCHEMA`, written by `items_table`):

    item_id            string  not null
    source             struct<dataset: string, split: string, source_id: string,
                              tags: map<string, string>>
    content            struct<problem: string not null, final_answer: string>
    trace              struct<steps: list<struct<step_type: string, text: string>>, max_steps: int32>
    provenance         struct<reference_solution: string, solution_field: string>
    family_id          string  ("unassigned" when no rule matched)
    family_rule        string  rule id, or "synthetic_fill" / "synthetic_source"
    target_type        string  null outside the seed's target types
    reasoning_style    string  cot | tir | short | none
    difficulty         string  easy | medium | hard
    split              string  train | probe_a | holdout
    synthetic          bool
    problem_sha256     string  sha256 of the problem text as given
    normalized_sha256  string  sha256 of its normalized text (squigglray.data.dedup)
    rank               string  hex sha256(seed, item_id): the sampling order
    n_tokens           int32   tokens of problem + reference solution (the manifest says which tokenizer)

The schema metadata carries the schema version and the step_type vocabulary.
"""

from __future__ import annotations

import json
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from squigglray.schemas.base import SchemaMismatch, VersionedModel
from squigglray.schemas.problems import STEP_TYPES, StepType

POOL_ITEM_VERSION = "pool_item@1.0"
SPLITS: tuple[str, ...] = ("train", "probe_a", "holdout")
STYLES: tuple[str, ...] = ("cot", "tir", "short", "none")
UNASSIGNED = "unassigned"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    dataset: str
    split: str
    source_id: str
    tags: dict[str, str] = Field(default_factory=dict)


class Content(_Strict):
    problem: str = Field(min_length=1)
    final_answer: str | None = None


class TraceStep(_Strict):
    step_type: StepType
    text: str


class Trace(_Strict):
    steps: list[TraceStep] = Field(default_factory=list)
    max_steps: int = Field(ge=8, le=30)


class ItemProvenance(_Strict):
    reference_solution: str | None = None
    solution_field: str | None = Field(None, description="the source column it came from, e.g. generated_solution")


class PoolItem(VersionedModel):
    SCHEMA = POOL_ITEM_VERSION
    item_id: str = Field(pattern=r"^[^:\s]+:[^:\s]+:\S+$")
    source: Source
    content: Content
    trace: Trace
    provenance: ItemProvenance
    family_id: str
    family_rule: str
    target_type: str | None = None
    reasoning_style: Literal["cot", "tir", "short", "none"]
    difficulty: Literal["easy", "medium", "hard"]
    split: Literal["train", "probe_a", "holdout"]
    synthetic: bool
    problem_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    normalized_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rank: str = Field(pattern=r"^[0-9a-f]{64}$")
    n_tokens: int = Field(ge=0)


class TextInstance(_Strict):
    """A slice item as the trainer and the probes read it: the problem and its reference solution
    (the text learned after the prompt). Duck-compatible with ProblemInstance where they use it."""

    instance_id: str
    family_id: str
    problem: str
    trace: str
    answer: str | None = None


def as_text(item: PoolItem) -> TextInstance:
    return TextInstance(instance_id=item.item_id, family_id=item.family_id, problem=item.content.problem,
                        trace=item.provenance.reference_solution or "", answer=item.content.final_answer)


_STEP = pa.struct([pa.field("step_type", pa.string(), nullable=False), pa.field("text", pa.string(), nullable=False)])
POOL_ITEM_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("source", pa.struct([
            pa.field("dataset", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("source_id", pa.string(), nullable=False),
            pa.field("tags", pa.map_(pa.string(), pa.string())),
        ]), nullable=False),
        pa.field("content", pa.struct([
            pa.field("problem", pa.string(), nullable=False),
            pa.field("final_answer", pa.string()),
        ]), nullable=False),
        pa.field("trace", pa.struct([
            pa.field("steps", pa.list_(_STEP), nullable=False),
            pa.field("max_steps", pa.int32(), nullable=False),
        ]), nullable=False),
        pa.field("provenance", pa.struct([
            pa.field("reference_solution", pa.string()),
            pa.field("solution_field", pa.string()),
        ]), nullable=False),
        pa.field("family_id", pa.string(), nullable=False),
        pa.field("family_rule", pa.string(), nullable=False),
        pa.field("target_type", pa.string()),
        pa.field("reasoning_style", pa.string(), nullable=False),
        pa.field("difficulty", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("synthetic", pa.bool_(), nullable=False),
        pa.field("problem_sha256", pa.string(), nullable=False),
        pa.field("normalized_sha256", pa.string(), nullable=False),
        pa.field("rank", pa.string(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
    ],
    metadata={"schema": POOL_ITEM_VERSION, "step_type_vocabulary": json.dumps(list(STEP_TYPES))},
)


def _row(item: PoolItem) -> dict:
    d = item.model_dump(mode="json", exclude={"schema_"})
    d["source"]["tags"] = sorted(d["source"]["tags"].items())
    return d


def items_table(items: list[PoolItem]) -> pa.Table:
    """PoolItems as a table of POOL_ITEM_SCHEMA, in the order given."""
    return pa.Table.from_pylist([_row(x) for x in items], schema=POOL_ITEM_SCHEMA)


def check_items_schema(schema: pa.Schema, where: str) -> None:
    """A clear error naming the file and the first missing or mistyped column."""
    found = schema.metadata.get(b"schema", b"").decode() if schema.metadata else ""
    if found and found != POOL_ITEM_VERSION:
        raise SchemaMismatch(f"{where}: items were written as {found!r}, this squigglray reads {POOL_ITEM_VERSION!r}")
    for f in POOL_ITEM_SCHEMA:
        if f.name not in schema.names:
            raise SchemaMismatch(f"{where}: column {f.name!r} is missing (PoolItem {POOL_ITEM_VERSION})")
        if not schema.field(f.name).type.equals(f.type):
            raise SchemaMismatch(f"{where}: column {f.name!r} has type {schema.field(f.name).type}, expected {f.type}")


def items_from_table(table: pa.Table, where: str = "items table") -> list[PoolItem]:
    """Validated PoolItems from a table of POOL_ITEM_SCHEMA (every row goes through pydantic)."""
    check_items_schema(table.schema, where)
    out = []
    for row in table.to_pylist():
        row["source"]["tags"] = dict(row["source"]["tags"] or [])
        out.append(PoolItem.model_validate(row))
    return out
