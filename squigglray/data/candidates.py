"""Streaming reduction of an annotated pool to each family's best-ranked distinct candidates.

Why this is exact whatever the partitioning: within a family, "keep the lowest-ranked row per
normalized problem, then the K lowest ranks" commutes with splitting the rows into batches. A row
in the global top K is the lowest of its problem in its batch too, and fewer than K distinct
problems of its batch rank below it, so every batch keeps it; merging the batches' survivors and
reducing again gives the global answer. Rows are ordered by (rank, item_id, solution_sha256), so
ties (several OMR solutions of one problem share an item id) resolve the same way everywhere.

`reduce_batch` runs in the Ray Data workers; `CandidateMerger` runs in the driver and holds at most
sum(K) rows plus one batch: memory does not grow with the input. Pool statistics (rows, invalid
rows, per-rule/family/style/difficulty counts, tokens) travel with each batch as one `stats` row.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pandas as pd
import pyarrow as pa

from squigglray.schemas.pool import UNASSIGNED

ORDER = ["rank", "item_id", "solution_sha256"]
STAT_KEYS = ("datasets", "invalid", "rules", "families", "styles", "difficulty")


def batch_stats(df: pd.DataFrame) -> dict:
    valid = df[df["invalid"].isna()]
    return {
        "rows": int(len(df)),
        "datasets": Counter(df["dataset"]),
        "invalid": Counter(df["invalid"].dropna()),
        "rules": Counter(valid["family_rule"]),
        "families": Counter(valid["family_id"]),
        "styles": Counter(valid["reasoning_style"]),
        "difficulty": Counter(valid["difficulty"]),
        "tokens": int(valid["n_tokens"].sum()),
    }


def top_candidates(df: pd.DataFrame, k_of: Callable[[str], int], include_unassigned: bool) -> pd.DataFrame:
    """Per family: one row per normalized problem (the lowest in ORDER), then the k_of(family) lowest."""
    df = df[df["invalid"].isna()]
    if not include_unassigned:
        df = df[df["family_id"] != UNASSIGNED]
    df = df.sort_values(["family_id", *ORDER], kind="mergesort")
    df = df.drop_duplicates(["family_id", "normalized_sha256"], keep="first")
    keep = df.groupby("family_id", sort=False).cumcount() < df["family_id"].map(k_of)
    return df[keep]


def reduce_batch(batch: pa.Table, k_of: Callable[[str], int], include_unassigned: bool) -> pa.Table:
    """Annotated batch -> its candidates, plus one row (kind='stats') carrying the batch statistics."""
    df = batch.to_pandas()
    cand = pa.Table.from_pandas(top_candidates(df, k_of, include_unassigned), schema=batch.schema,
                                preserve_index=False)
    n = cand.num_rows
    cand = cand.append_column("kind", pa.array(["item"] * n)).append_column("stats_json", pa.nulls(n, pa.string()))
    stats = {f.name: pa.nulls(1, f.type) for f in batch.schema}
    stats.update(kind=pa.array(["stats"]), stats_json=pa.array([json.dumps(batch_stats(df))]))
    return pa.concat_tables([cand, pa.table(stats, schema=cand.schema)])


class CandidateMerger:
    """Driver side: folds reduced batches into global candidates and pool statistics."""

    def __init__(self, k_of: Callable[[str], int], include_unassigned: bool):
        self.k_of = k_of
        self.include_unassigned = include_unassigned
        self.stats: dict = {"rows": 0, "tokens": 0, **{k: Counter() for k in STAT_KEYS}}
        self._kept: pd.DataFrame | None = None
        self._pending: list[pd.DataFrame] = []
        self._pending_rows = 0

    def add(self, batch: pa.Table | pd.DataFrame) -> None:
        df = batch.to_pandas() if isinstance(batch, pa.Table) else batch
        for text in df.loc[df["kind"] == "stats", "stats_json"]:
            s = json.loads(text)
            self.stats["rows"] += s["rows"]
            self.stats["tokens"] += s["tokens"]
            for k in STAT_KEYS:
                self.stats[k].update(s[k])
        items = df[df["kind"] == "item"].drop(columns=["kind", "stats_json"])
        if len(items):
            self._pending.append(items)
            self._pending_rows += len(items)
            if self._pending_rows > max(50_000, 2 * (0 if self._kept is None else len(self._kept))):
                self._compact()

    def _compact(self) -> None:
        parts = ([self._kept] if self._kept is not None else []) + self._pending
        self._pending, self._pending_rows = [], 0
        if parts:
            self._kept = top_candidates(pd.concat(parts, ignore_index=True), self.k_of, self.include_unassigned)

    def result(self) -> tuple[pd.DataFrame, dict]:
        """(candidates sorted by family and ORDER, statistics with plain-dict counters)."""
        self._compact()
        kept = self._kept if self._kept is not None else pd.DataFrame()
        stats = {k: (dict(sorted(v.items())) if isinstance(v, Counter) else v) for k, v in self.stats.items()}
        return kept.reset_index(drop=True), stats
