"""Typed configs: pydantic models, YAML files, dotted command-line overrides, a stable hash.

    cfg = load_config(BaseTrainConfig, "examples/quickstart.yaml", ["train.steps=50", "model.preset=nano"])

A bad value fails here, before any work starts, with the dotted field name and the reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config that cannot be used; the message names every bad field and why."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a","b","c"], value parsed as YAML, so 3 is an int and [1,2] a list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; people mean the number
        try:
            value = float(value) if any(c.isdigit() for c in value) else value
        except ValueError:
            pass
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ConfigError(f"override {text!r}: {p!r} is not a section")
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _format_errors(cls: type[BaseModel], err: ValidationError) -> str:
    lines = [f"invalid {cls.__name__}:"]
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "(root)"
        lines.append(f"  {where}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def build_config(cls: type[M], data: dict[str, Any] | None = None, overrides: list[str] | None = None) -> M:
    merged = apply_overrides(data or {}, overrides or [])
    try:
        return cls.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_format_errors(cls, e)) from None


def load_config(cls: type[M], path: str | Path | None = None, overrides: list[str] | None = None) -> M:
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping, not {type(loaded).__name__}")
        data = loaded or {}
    return build_config(cls, data, overrides)


def distinct_non_negative(values: list[int]) -> list[int]:
    """The one rule for seed lists (and DCM's K list): at least one, no repeats, none negative."""
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise ValueError(f"give distinct non-negative integers, e.g. 0,1,2 (got {values})")
    return values


Seeds = Annotated[list[int], AfterValidator(distinct_non_negative)]  # a field type: seeds: Seeds = Field(...)


def packaged_config(name: str) -> Path:
    """A config shipped in the package (squigglray/configs/<name>.yaml): the default of a workflow."""
    from importlib import resources

    path = Path(str(resources.files("squigglray") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        raise ConfigError(f"no packaged config {name!r} (squigglray/configs/{name}.yaml)")
    return path


def canonical_json(obj: Any) -> str:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_hash(obj: Any) -> str:
    """sha256 of canonical JSON: equal configs hash equal whatever their key order or source."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()
