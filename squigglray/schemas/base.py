"""Base class for versioned artifacts: a JSON of another schema version fails loudly, naming both."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SchemaMismatch(ValueError):
    """Raised when an artifact was written under a different schema version."""


class VersionedModel(BaseModel):
    """A pydantic model whose `schema` field must equal the class's SCHEMA string."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    SCHEMA: ClassVar[str] = "versioned@0.0"
    schema_: str = Field(default="", alias="schema")

    @model_validator(mode="before")
    @classmethod
    def _check_schema(cls, data: Any) -> Any:
        if isinstance(data, dict):
            found = data.get("schema", data.get("schema_"))
            if found in (None, ""):
                data = {**data, "schema": cls.SCHEMA}
            elif found != cls.SCHEMA:
                raise SchemaMismatch(
                    f"{cls.__name__} expects schema {cls.SCHEMA!r} but the data says {found!r}"
                )
        return data

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str):
        return cls.model_validate(json.loads(text))


class Provenance(BaseModel):
    """What every artifact records so it can be traced back to the run that made it."""

    model_config = ConfigDict(extra="forbid")
    run_id: str
    seed: int
    config_hash: str
    dataset_slice_id: str
    dataset_slice_hash: str
    curriculum: str = ""
    package_version: str
