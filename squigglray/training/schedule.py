"""Where a run's schedule changes, and the control that moves it per seed.

Every seed of a dynamics experiment shares its schedule: the end of LR warmup, the curriculum's
phase switches and the change of logging/capture cadence. An event found at one of those steps in
every seed looks like seed-invariant learning structure, but may be the schedule itself.
`schedule_marks` names those steps so the analysis can flag events near them; `jittered_config`
desynchronizes the schedule across seeds, so events that follow the schedule move with it and
events that belong to learning do not.
"""

from __future__ import annotations

import numpy as np

from squigglray.config import config_hash
from squigglray.training.config import BaseTrainConfig


def schedule_marks(cfg: BaseTrainConfig) -> dict[str, int]:
    """Every step where the run's schedule changes, by name, sorted by step: "end of warmup" (the
    LR's cosine decay starts), "curriculum <a> -> <b>" for each phase switch, and "cadence change"
    (log-spaced capture before `log_dense_until`, every `log_every` after it; the detectors see a
    different sampling density there). Events near these steps may be the schedule, not learning."""
    marks = {"end of warmup": cfg.train.warmup_steps} if cfg.train.warmup_steps else {}
    acc = 0.0
    for phase, nxt in zip(cfg.curriculum, cfg.curriculum[1:]):
        acc += phase.fraction
        marks[f"curriculum {phase.name} -> {nxt.name}"] = round(acc * cfg.train.steps)  # as the data's phase_ends
    if 0 < cfg.train.log_dense_until < cfg.train.steps:
        marks["cadence change"] = cfg.train.log_dense_until
    return dict(sorted(marks.items(), key=lambda kv: kv[1]))


def _jitter_factors(seed: int, jitter: float, n: int) -> np.ndarray:
    """n factors in [1 - jitter, 1 + jitter] from the seed alone (no global RNG): the same seed
    always moves its schedule the same way, whatever else the process drew before."""
    rng = np.random.default_rng(int(config_hash({"seed": seed, "purpose": "schedule-jitter"})[:16], 16))
    return rng.uniform(1 - jitter, 1 + jitter, size=n)


def jittered_config(cfg: BaseTrainConfig, seed: int, jitter: float) -> BaseTrainConfig:
    """`cfg` with its warmup end and each curriculum switch moved by its own seeded factor in
    [1 - jitter, 1 + jitter]; steps, LR, cadence and everything else are kept. jitter 0 returns `cfg`
    itself (same config hash, same run id).

    Warmup is rounded and stays >= 1 if it was > 0. A switch moves to a whole step (what the trainer
    does with the fractions anyway), after the previous switch and before the end, so every phase
    keeps at least one step and the phases' steps add up to `steps` exactly. The first factor is warmup's, so a
    seed's warmup moves the same way whatever the curriculum."""
    if not 0 <= jitter < 0.5:
        raise ValueError(f"schedule jitter must be in [0, 0.5), got {jitter}")
    if jitter == 0:
        return cfg
    steps, phases = cfg.train.steps, cfg.curriculum
    factors = _jitter_factors(seed, jitter, len(phases))  # [warmup, switch 1, ..., switch n-1]
    train = cfg.train.model_dump()
    if train["warmup_steps"] > 0:
        train["warmup_steps"] = max(1, round(train["warmup_steps"] * factors[0]))
    curriculum = [p.model_dump() for p in phases]
    if len(phases) > 1 and steps >= len(phases):  # fewer steps than phases: no room to move a switch
        ends, acc, prev = [], 0.0, 0
        for i, (phase, factor) in enumerate(zip(phases[:-1], factors[1:])):
            acc += phase.fraction
            later = len(phases) - 1 - i  # phases after this switch, one step each at least
            prev = min(max(round(acc * steps * factor), prev + 1), steps - later)
            ends.append(prev)
        for p, start, end in zip(curriculum, [0, *ends], [*ends, steps]):
            p["fraction"] = (end - start) / steps
    return BaseTrainConfig.model_validate({**cfg.model_dump(), "train": train, "curriculum": curriculum})


def seed_config(cfg: BaseTrainConfig, seed: int, schedule_jitter: float = 0.0) -> BaseTrainConfig:
    """The config one seed of a dynamics experiment trains: `cfg` with that seed and, under the
    desynchronized-schedule control, its own warmup end and curriculum switches. The Tune trial,
    the run ids and the analysis's schedule marks all come from here, so they agree."""
    return jittered_config(cfg.model_copy(update={"seed": seed}), seed, schedule_jitter)
