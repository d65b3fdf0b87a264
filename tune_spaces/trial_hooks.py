"""Extra trainer callbacks for a sweep's trials, chosen by the caller (the tests' fault drills use it).

A hook is a picklable callable `hook(trial: Trial) -> TrainerCallback | None`. `with_hooks` puts the
caller's hooks into a Tune param space; they travel with each trial's config to the Ray worker that
runs it, where `trial_callbacks` calls every hook once per trial attempt (a retried trial calls
them again) and adds the callbacks they return to the trial's own. Without hooks the param space,
and so the experiment, is what it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from squigglray.paths import ArtifactStore
    from squigglray.training.callbacks import TrainerCallback

HOOKS_KEY = "_trial_hooks"  # in the param space only when a caller gives hooks


@dataclass(frozen=True)
class Trial:
    """What a hook learns of the trial it is called for."""

    kind: str  # "seed" (tune_spaces.dynamics) or "probe" (tune_spaces.probe_sweep)
    store: "ArtifactStore"
    run_id: str | None = None  # a seed trial's run
    experiment: str | None = None  # a probe trial's experiment
    probe_id: str | None = None


TrialHook = Callable[[Trial], Optional["TrainerCallback"]]


def with_hooks(space: dict[str, Any], hooks: Iterable[TrialHook] | None) -> dict[str, Any]:
    """`space` with the hooks added (none given: unchanged)."""
    if hooks is not None and not isinstance(hooks, Iterable):
        raise TypeError(f"trial hooks: give a list of callables hook(trial) -> TrainerCallback | None, not {hooks!r}")
    hooks = list(hooks or ())
    bad = [h for h in hooks if not callable(h)]
    if bad:
        raise TypeError(f"trial hooks must be callables hook(trial) -> TrainerCallback | None, got {bad!r}")
    if hooks:
        space[HOOKS_KEY] = hooks
    return space


def trial_callbacks(config: dict[str, Any], trial: Trial) -> list["TrainerCallback"]:
    """The callbacks the trial config's hooks give for this trial."""
    return [cb for hook in config.get(HOOKS_KEY) or () if (cb := hook(trial)) is not None]
