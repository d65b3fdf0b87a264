"""Family registry: list, describe, sample; unknown families and knobs fail with a clear message."""

from __future__ import annotations

from typing import Any

from squigglray.families.base import Family
from squigglray.schemas.problems import ProblemInstance

_REGISTRY: dict[str, Family] = {}


class UnknownFamily(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


def register(cls: type[Family]) -> type[Family]:
    cls.check_class()
    if cls.family_id in _REGISTRY:
        raise ValueError(f"family {cls.family_id!r} registered twice")
    _REGISTRY[cls.family_id] = cls()
    return cls


def _load_all() -> None:
    import squigglray.families.catalog  # noqa: F401  (registers on import)


def list_families() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_family(family_id: str) -> Family:
    _load_all()
    if not isinstance(family_id, str) or family_id not in _REGISTRY:
        raise UnknownFamily(f"unknown family {family_id!r}; known families: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[family_id]


def describe(family_id: str) -> dict[str, Any]:
    return get_family(family_id).describe()


def sample(
    family_id: str,
    n: int,
    seed: int,
    difficulty: str = "easy",
    knobs: dict[str, Any] | None = None,
    start: int = 0,
) -> list[ProblemInstance]:
    """Instances start..start+n-1 of (family, knobs, seed); the same in any process or order."""
    fam = get_family(family_id)
    k = fam.resolve_knobs(difficulty, knobs)
    return [fam.instance(seed, i, k) for i in range(start, start + n)]
