"""The family contract (seed 000 §3.0): a parameterized, seeded generator of problem instances
that share one solution program, with difficulty knobs, an exact answer, a labelled outline and a
tool-integrated trace.

Determinism: instance i of (family, knobs, seed) draws from its own RNG, seeded by a sha256 of
those four values, so it is the same in any process and whatever else was sampled before it.
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from squigglray.families.trace import format_trace
from squigglray.schemas.problems import STEP_TYPES, TARGET_TYPES, OutlineStep, ProblemInstance

LEVELS: tuple[str, ...] = ("easy", "medium", "hard")
AIMO_MAX = 99_999


class BadKnob(ValueError):
    """A knob name that the family does not have, or a value out of its range."""


@dataclass(frozen=True)
class Knob:
    """One difficulty dial: its value at easy/medium/hard and the range a user may set."""

    doc: str
    easy: int
    medium: int
    hard: int
    lo: int
    hi: int

    def at(self, level: str) -> int:
        return getattr(self, level)


def stable_seed(*parts: Any) -> int:
    """A 64-bit seed from a sha256 of the parts: equal in every process (unlike hash())."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


class Family(ABC):
    """Subclass, set the class attributes, implement draw/solve/brute/code/outline."""

    family_id: ClassVar[str]
    target_type: ClassVar[str]
    title: ClassVar[str]
    knobs: ClassVar[dict[str, Knob]]
    templates: ClassVar[tuple[str, ...]]  # problem texts, str.format'ed with the params
    reasoning: ClassVar[str]  # the trace's first line: the solution strategy, said once
    answer_modulus: ClassVar[int | None] = None  # stated in the problem when answers are reduced

    @abstractmethod
    def draw(self, rng: random.Random, k: dict[str, int]) -> dict[str, Any]:
        """Draw instance parameters (JSON-able scalars) under resolved knobs `k`."""

    @abstractmethod
    def solve(self, p: dict[str, Any]) -> int:
        """The family's solution program: the exact answer."""

    @abstractmethod
    def brute(self, p: dict[str, Any]) -> int:
        """An independent check (enumeration/simulation), used in tests on small instances."""

    @abstractmethod
    def code(self, p: dict[str, Any]) -> str:
        """Short Python that prints the answer, with this instance's numbers written in."""

    @abstractmethod
    def outline(self, p: dict[str, Any], answer: int) -> list[tuple[str, str]]:
        """Solution outline as (step_type, text) pairs."""

    # ----- shared machinery -----

    def resolve_knobs(self, difficulty: str = "easy", overrides: dict[str, Any] | None = None) -> dict[str, int]:
        if difficulty not in LEVELS:
            raise BadKnob(f"difficulty must be one of {LEVELS}, got {difficulty!r}")
        k = {name: knob.at(difficulty) for name, knob in self.knobs.items()}
        for name, value in (overrides or {}).items():
            if name not in self.knobs:
                raise BadKnob(
                    f"family {self.family_id!r} has no knob {name!r}; its knobs are {sorted(self.knobs)}"
                )
            knob = self.knobs[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadKnob(f"knob {self.family_id}.{name} must be an integer, got {value!r}")
            if not knob.lo <= value <= knob.hi:
                raise BadKnob(
                    f"knob {self.family_id}.{name}={value} is out of range [{knob.lo}, {knob.hi}]"
                )
            k[name] = value
        return k

    def instance(self, seed: int, index: int, k: dict[str, int]) -> ProblemInstance:
        rng = random.Random(stable_seed(self.family_id, k, seed, index))
        p = self.draw(rng, k)
        answer = self.solve(p)
        if not (isinstance(answer, int) and 0 <= answer <= AIMO_MAX):
            raise AssertionError(f"{self.family_id}: answer {answer!r} outside [0, {AIMO_MAX}] for {p}")
        problem = rng.choice(self.templates).format(**p)
        code = self.code(p)
        output = str(answer)
        outline = [OutlineStep(step_type=t, text=s) for t, s in self.outline(p, answer)]
        knob_tag = hashlib.sha256(json.dumps(k, sort_keys=True).encode()).hexdigest()[:8]
        return ProblemInstance(
            instance_id=f"fam:{self.family_id}:{knob_tag}:{seed}:{index}",
            family_id=self.family_id,
            target_type=self.target_type,
            knobs=k,
            seed=seed,
            index=index,
            params=p,
            problem=problem,
            answer=answer,
            answer_modulus=self.answer_modulus,
            outline=outline,
            code=code,
            code_output=output,
            trace=format_trace(self.reasoning, code, output, answer),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "family_id": self.family_id,
            "title": self.title,
            "target_type": self.target_type,
            "answer_modulus": self.answer_modulus,
            "knobs": {
                n: {"doc": kn.doc, "easy": kn.easy, "medium": kn.medium, "hard": kn.hard, "range": [kn.lo, kn.hi]}
                for n, kn in self.knobs.items()
            },
            "reasoning": self.reasoning,
        }

    @classmethod
    def check_class(cls) -> None:
        """Fail at registration if the class attributes break the contract."""
        assert cls.target_type in TARGET_TYPES, f"{cls.__name__}: unknown target_type {cls.target_type!r}"
        assert cls.templates and cls.knobs, f"{cls.__name__}: needs templates and knobs"


def check_outline(steps: list[tuple[str, str]]) -> None:
    bad = [t for t, _ in steps if t not in STEP_TYPES]
    assert not bad, f"unknown step types {bad}"
