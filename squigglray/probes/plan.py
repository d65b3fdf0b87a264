"""The probe plan: everything a probe trial needs besides its (target, seed), fixed once per sweep.

The driver resolves the base checkpoint (folder, hub id or trained preset) and its sha256, draws the
evaluation probes and every target's fine-tuning instances, and writes the plan to
`experiments/<EXP_ID>/probe_plan.json`; trials read it from there. So every probe of a sweep sees
the same probes A/B, and a target's instances depend only on (family, level, instance seed).

Targets: a family's own instances, or a control (seed 000: Magnitude is normalized against
controls so that a large DIS is not just "loss went down"):
- `control:random_family`: the same number of instances drawn round-robin from every eval family;
- `control:shuffled_labels`: that mixture with the solutions deranged (problem i gets solution j),
  so what it can learn is memorization, not a mechanism.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from squigglray.config import canonical_json
from squigglray.eval.heldout import heldout_instances
from squigglray.families.base import stable_seed
from squigglray.models.loading import ModelNotFound, resolve_spec
from squigglray.paths import ArtifactStore
from squigglray.probes.config import ProbeConfig
from squigglray.schemas.pool import TextInstance, as_text
from squigglray.schemas.probes import CONTROL_PREFIX
from squigglray.schemas.problems import ProblemInstance

PLAN_FILE = "probe_plan.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseRef(_Strict):
    spec: str = Field(description="what the user gave: a folder, a trained preset name, or a hub id")
    path: str = Field(description="local save_pretrained folder")
    sha256: str
    run_id: str | None = None
    curriculum: str = ""


class LevelInstance(_Strict):
    level: str
    instance: ProblemInstance | TextInstance


class Target(_Strict):
    family_id: str
    role: str
    level: str
    instances: list[ProblemInstance | TextInstance]

    @property
    def slice_hash(self) -> str:
        h = hashlib.sha256()
        for x in self.instances:
            h.update(f"{x.instance_id}\t{x.problem}\t{x.trace}\n".encode())
        return h.hexdigest()

    @property
    def slice_id(self) -> str:
        return f"probe-{self.family_id.replace(':', '-')}-{self.slice_hash[:12]}"


class ProbePlan(_Strict):
    experiment_id: str
    config: ProbeConfig
    config_hash: str
    base: BaseRef
    eval_a: list[LevelInstance]
    eval_b: list[LevelInstance]
    targets: dict[str, Target]

    def pairs(self, which: str) -> list[tuple[str, ProblemInstance | TextInstance]]:
        return [(x.level, x.instance) for x in (self.eval_a if which == "a" else self.eval_b)]


def checkpoint_sha256(folder: str | Path) -> str:
    """sha256 over (relative path, bytes) of every file in the folder, sorted: equal weights, equal hash."""
    root = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(root).as_posix()}\n".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _hub_folder(spec: str) -> str:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(spec, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any miss means "not in the local cache"
        raise ModelNotFound(
            f"base {spec!r} is neither a checkpoint folder, a trained preset, nor a hub id in the local cache "
            f"({e.__class__.__name__}); download it (`hf download {spec}`) or pass a folder") from None


def _base_run(folder: Path) -> tuple[str | None, dict | None]:
    """The squigglray run that wrote this checkpoint (runs/<run_id>/checkpoints/<name>), if any."""
    run_dir = folder.parent.parent
    cfg_file = run_dir / "config.json"
    if folder.parent.name == "checkpoints" and cfg_file.is_file():
        return run_dir.name, json.loads(cfg_file.read_text())
    return None, None


def resolve_base(spec: str, store: ArtifactStore) -> tuple[BaseRef, set[str]]:
    """The base checkpoint and the problems it trained on (kept out of the evaluation probes)."""
    target = resolve_spec(spec, store)
    folder = Path(target if Path(target).is_dir() else _hub_folder(target)).resolve()
    run_id, run_cfg = _base_run(folder)
    trained: set[str] = set()
    curriculum = ""
    if run_cfg is not None:
        from squigglray.training.config import BaseTrainConfig
        from squigglray.training.data import build_pool

        trained = build_pool(BaseTrainConfig.model_validate(run_cfg["config"]), store).problems()
        curriculum = run_cfg.get("provenance", {}).get("curriculum", "")
    ref = BaseRef(spec=spec, path=str(folder), sha256=checkpoint_sha256(folder), run_id=run_id,
                  curriculum=curriculum)
    return ref, trained


def round_robin(streams: Iterable[Iterator]) -> Iterator:
    """One item from each stream in turn until all are exhausted."""
    live = list(streams)
    while live:
        for s in list(live):
            item = next(s, None)
            if item is None:
                live.remove(s)
            else:
                yield item


def _interleave(items: list[tuple[str, ProblemInstance]], n: int) -> list[ProblemInstance]:
    """Round-robin over families (in name order), first n."""
    by_family: dict[str, list[ProblemInstance]] = {}
    for _, x in items:
        by_family.setdefault(x.family_id, []).append(x)
    return list(islice(round_robin(iter(xs) for _, xs in sorted(by_family.items())), n))


def _deranged(xs: list[ProblemInstance], seed: int) -> list[ProblemInstance]:
    """Each problem paired with another instance's solution (a derangement, seeded)."""
    order = list(range(len(xs)))
    random.Random(stable_seed("shuffled_labels", seed)).shuffle(order)
    shift = order[1:] + order[:1]  # cycle through the shuffled order: no instance keeps its own solution
    partner = dict(zip(order, shift))
    return [x.model_copy(update={"trace": xs[partner[i]].trace, "answer": xs[partner[i]].answer,
                                 "instance_id": f"{x.instance_id}~solution-of~{xs[partner[i]].instance_id}"})
            for i, x in enumerate(xs)]


def build_targets(cfg: ProbeConfig, exclude: set[str]) -> dict[str, Target]:
    d, fams = cfg.data, cfg.eval.resolved_families()
    targets: dict[str, Target] = {}
    for fam in cfg.resolved_families():
        xs = [x for _, x in heldout_instances([fam], [d.level], d.n_instances, d.instance_seed, exclude)]
        targets[fam] = Target(family_id=fam, role="family", level=d.level, instances=xs)
    per_family = -(-d.n_instances // len(fams))
    mix = _interleave(heldout_instances(fams, [d.level], per_family, d.instance_seed + 1, exclude), d.n_instances)
    for kind in cfg.controls:
        xs = _deranged(mix, d.instance_seed) if kind == "shuffled_labels" else mix
        targets[CONTROL_PREFIX + kind] = Target(family_id=CONTROL_PREFIX + kind, role="control", level=d.level,
                                                instances=xs)
    return targets


def slice_parts(cfg: ProbeConfig, store: ArtifactStore, trained: set[str]) -> tuple[list, list, dict[str, Target]]:
    """Probes on a built slice: probe A from its probe_a split, probe B from its holdout (the first
    a_per_family / b_per_family of each family by rank), each family's fine-tuning instances from its
    train split (in rank order, leaving out problems the base trained on), controls from the probed
    families' next train items."""
    from squigglray.config import ConfigError
    from squigglray.data.slice import read_items, split_heads

    manifest, items = read_items(cfg.data.slice, store)
    by = {}
    for x in items:  # items are in (split, family, rank) order
        if x.split != "train" or (x.content.problem not in trained and x.provenance.reference_solution):
            by.setdefault((x.split, x.family_id), []).append(x)
    have = sorted(f for (s, f), xs in by.items() if s == "train" and len(xs) >= 2)
    fams = cfg.families or have
    missing = sorted(set(fams) - set(have))
    if missing:
        raise ConfigError(f"slice {manifest.slice_id} has fewer than 2 usable train items for {missing}; its families "
                          f"are {have}")
    e, n = cfg.eval, cfg.data.n_instances

    def evals(split: str, k: int) -> list:
        return [(x.difficulty, as_text(x)) for x in split_heads(items, split, k)]

    targets = {f: Target(family_id=f, role="family", level=cfg.data.level,
                         instances=[as_text(x) for x in by[("train", f)][:n]]) for f in fams}
    rest = [iter(as_text(x) for x in by[("train", f)][n:]) for f in sorted(fams)]
    mix = list(islice(round_robin(rest), n))
    if len(mix) < 2:
        raise ConfigError(f"slice {manifest.slice_id}: no train items left for the control probes after "
                          f"{n} per family; lower data.n_instances")
    for kind in cfg.controls:
        xs = _deranged(mix, cfg.data.instance_seed) if kind == "shuffled_labels" else mix
        targets[CONTROL_PREFIX + kind] = Target(family_id=CONTROL_PREFIX + kind, role="control",
                                                level=cfg.data.level, instances=xs)
    return evals("probe_a", e.a_per_family), evals("holdout", e.b_per_family), targets


def build_plan(cfg: ProbeConfig, base_spec: str, store: ArtifactStore, experiment_id: str) -> ProbePlan:
    base, trained = resolve_base(base_spec, store)
    e = cfg.eval
    if cfg.data.slice:
        eval_a, eval_b, targets = slice_parts(cfg, store, trained)
    else:
        fams = e.resolved_families()
        eval_a = heldout_instances(fams, e.a_levels, e.a_per_family, e.seed, trained)
        eval_b = heldout_instances(fams, e.b_levels, e.b_per_family, e.seed, trained)
        targets = build_targets(cfg, trained | {x.problem for _, x in eval_a + eval_b})
    return ProbePlan(
        experiment_id=experiment_id, config=cfg, config_hash=cfg.shared_hash(base.sha256), base=base,
        eval_a=[LevelInstance(level=lv, instance=x) for lv, x in eval_a],
        eval_b=[LevelInstance(level=lv, instance=x) for lv, x in eval_b],
        targets=targets,
    )


def write_plan(store: ArtifactStore, plan: ProbePlan) -> str:
    return store.write_text(f"{store.experiment_dir(plan.experiment_id)}/{PLAN_FILE}",
                            canonical_json(plan.model_dump(mode="json", by_alias=True)))


def read_plan(store: ArtifactStore, experiment_id: str) -> ProbePlan:
    return ProbePlan.model_validate_json(store.read_text(f"{store.experiment_dir(experiment_id)}/{PLAN_FILE}"))
