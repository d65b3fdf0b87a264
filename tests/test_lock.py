"""The lock (requirements.lock) is what a fresh clone installs: exact pins for every dependency,
and the running environment matches it (./dev installs with `-c requirements.lock`)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, f"requirements.lock: {line!r} is not an exact pin"
        pins[_norm(name)] = version
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    return _norm(re.split(r"[\s<>=!~;\[]", spec.strip(), maxsplit=1)[0])


def test_every_declared_dependency_is_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = _lock()
    missing = sorted({_requirement_name(d) for d in declared} - set(pins) - {"torch"})
    assert not missing, f"not in requirements.lock: {missing} (run ./dev lock)"
    assert "torch" not in pins, "torch is pinned by ./dev's TORCH_SPEC, not the lock"


def test_the_environment_is_the_lock():
    """Would have caught the README's figures measured on transformers 5.23 while clones got 5.25."""
    wrong = {}
    for name, version in _lock().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (version, None)
            continue
        if have != version:
            wrong[name] = (version, have)
    assert not wrong, f"installed versions differ from requirements.lock (locked, installed): {wrong}"
