"""From ranked candidates to the slice: holdout first, then probe A, then train, then synthetic fill.

Per family, candidates go in rank order: the first `holdout` become the strict holdout; probe A
takes the next ones that do not overlap the holdout; train takes the next ones that overlap neither.
Overlap is an equal problem hash, an equal normalized text, or a near-duplicate (word 3-gram Jaccard
at or above the threshold, squigglray.data.dedup); each rejected candidate goes to the removal report
with its reason and the item it matched. Two synthetic items are not compared for near-duplicates
unless `contamination.synthetic_pairs` (family instances share a template by construction).

Seed target types with fewer than `fill.min_train` train items then get synthetic family instances
(train only, `family_rule` = synthetic_fill), under the same checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import count

import pandas as pd
import pyarrow as pa

from squigglray.data.annotate import Annotator
from squigglray.data.candidates import ORDER
from squigglray.data.config import SliceConfig
from squigglray.data.dedup import Contamination, ContaminationGuard
from squigglray.data.sources import family_rows
from squigglray.families import get_family, list_families
from squigglray.schemas.pool import SPLITS, PoolItem

SPLIT_ORDER = ("holdout", "probe_a", "train")  # the order splits are filled in


@dataclass
class Selection:
    items: list[PoolItem]
    removals: list[dict] = field(default_factory=list)
    short: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # family -> split -> [got, wanted]
    fill: dict[str, int] = field(default_factory=dict)  # target type -> synthetic items added


class _Guards:
    """Protected items, real and synthetic apart, so synthetic pairs can skip the near-dup test."""

    def __init__(self, cfg: SliceConfig):
        c = cfg.contamination
        kw = dict(threshold=c.near_dup_threshold, ngram=c.ngram, num_perm=c.num_perm, bands=c.bands, seed=0)
        self.real, self.synthetic = ContaminationGuard(**kw), ContaminationGuard(**kw)
        self.synthetic_pairs = c.synthetic_pairs
        self.split_of: dict[str, str] = {}

    def protect(self, row: dict, split: str) -> None:
        (self.synthetic if row["synthetic"] else self.real).protect(row["item_id"], row["problem"])
        self.split_of[row["item_id"]] = split

    def check(self, row: dict) -> Contamination | None:
        hit = self.real.check(row["item_id"], row["problem"], near_dup=True)
        return hit or self.synthetic.check(row["item_id"], row["problem"],
                                           near_dup=not row["synthetic"] or self.synthetic_pairs)


def _removal(row: dict, split: str, reason: str, matched: str, matched_split: str, similarity: float) -> dict:
    return {"item_id": row["item_id"], "family_id": row["family_id"], "wanted_split": split, "reason": reason,
            "matched_item_id": matched, "matched_split": matched_split, "similarity": float(similarity)}


def to_item(row: dict, split: str) -> PoolItem:
    return PoolItem.model_validate({
        "item_id": row["item_id"],
        "source": {"dataset": row["dataset"], "split": row["split"], "source_id": row["source_id"],
                   "tags": json.loads(row["tags_json"] or "{}")},
        "content": {"problem": row["problem"], "final_answer": row["final_answer"]},
        "trace": {"steps": [], "max_steps": int(row["max_steps"])},
        "provenance": {"reference_solution": row["reference_solution"], "solution_field": row["solution_field"]},
        "family_id": row["family_id"], "family_rule": row["family_rule"], "target_type": row["target_type"],
        "reasoning_style": row["reasoning_style"], "difficulty": row["difficulty"], "split": split,
        "synthetic": bool(row["synthetic"]), "problem_sha256": row["problem_sha256"],
        "normalized_sha256": row["normalized_sha256"], "rank": row["rank"], "n_tokens": int(row["n_tokens"]),
    })


def _clean(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}  # NaN -> None


def select_slice(cands: pd.DataFrame, cfg: SliceConfig, annotator: Annotator) -> Selection:
    sel = Selection(items=[])
    if len(cands):
        cands = cands.sort_values(ORDER, kind="mergesort")
        dup = cands.duplicated("normalized_sha256", keep="first")
        first = cands[~dup].set_index("normalized_sha256")["item_id"]
        for row in cands[dup].to_dict("records"):  # the same problem mapped to two families: keep the lower rank
            sel.removals.append(_removal(row, "", "duplicate", first[row["normalized_sha256"]], "", 1.0))
        cands = cands[~dup].sort_values(["family_id", *ORDER], kind="mergesort")
    per_family = {f: [_clean(r) for r in g.to_dict("records")] for f, g in cands.groupby("family_id", sort=True)} \
        if len(cands) else {}
    guards = _Guards(cfg)
    chosen: dict[str, list[dict]] = {s: [] for s in SPLITS}
    cursor = {f: 0 for f in per_family}
    for split in SPLIT_ORDER:
        for fam, rows in per_family.items():
            want = getattr(cfg.quotas.of(fam), split)
            got = 0
            while got < want and cursor[fam] < len(rows):
                row = rows[cursor[fam]]
                cursor[fam] += 1
                hit = guards.check(row) if split != "holdout" else None
                if hit:
                    sel.removals.append(_removal(row, split, hit.reason, hit.matched_key,
                                                 guards.split_of[hit.matched_key], hit.similarity))
                    continue
                chosen[split].append(row)
                got += 1
            if got < want:
                sel.short.setdefault(fam, {})[split] = [got, want]
        for row in chosen[split]:
            guards.protect(row, split)
    if cfg.fill.enabled:
        chosen["train"] += _fill(chosen["train"], cfg, annotator, guards, sel)
    for split in SPLITS:
        rows = sorted(chosen[split], key=lambda r: (r["family_id"], r["rank"], r["item_id"]))
        sel.items += [to_item(r, split) for r in rows]
    return sel


def _fill(train: list[dict], cfg: SliceConfig, annotator: Annotator, guards: _Guards, sel: Selection) -> list[dict]:
    have = {t: sum(1 for r in train if r["target_type"] == t) for t in cfg.fill.target_types}
    seen = {r["normalized_sha256"] for r in train}
    added: list[dict] = []
    for target, n in have.items():
        gap = cfg.fill.min_train - n
        families = [f for f in list_families() if get_family(f).target_type == target]
        if gap <= 0 or not families:
            continue
        got = 0
        for start in count(0, 64):
            units = [{"family": f, "level": lv, "seed": cfg.fill.seed, "start": start, "n": 64}
                     for f in families for lv in cfg.fill.levels]
            batch = annotator(family_rows(pa.Table.from_pylist(units), synthetic_rule="synthetic_fill"))
            for row in sorted(batch.to_pylist(), key=lambda r: (r["rank"], r["item_id"])):
                if got >= gap:
                    break
                if row["normalized_sha256"] in seen:
                    continue
                hit = guards.check(row)
                if hit:
                    sel.removals.append(_removal(row, "train", hit.reason, hit.matched_key,
                                                 guards.split_of[hit.matched_key], hit.similarity))
                    continue
                seen.add(row["normalized_sha256"])
                added.append(row)
                got += 1
            if got >= gap or start > 100_000:
                break
        sel.fill[target] = got
    return added
