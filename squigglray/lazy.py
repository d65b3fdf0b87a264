"""A package whose names resolve on first use (PEP 562), so importing one light name (a config)
does not import what its siblings need (torch, transformers: ~10 s of CPU in a fresh process, paid
by every `--help`, job driver and Ray worker that only reads configs)."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_names(package: str, homes: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """(`__getattr__`, `__all__`) of `package`, whose name N lives in submodule `homes[N]`."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return __getattr__, sorted(homes)
