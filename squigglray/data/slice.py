"""A slice on disk: `slices/<slice_id>/items.parquet`, `removed.parquet` and `manifest.json`.

The slice id is `<name>-<12 hex>` of a hash over the resolved config (rules written out in full)
and the sha256 of every source file, so equal inputs give an equal id. `items.parquet` is written
with fixed writer settings, so equal items give equal bytes; the manifest records their sha256 and
`squigglray slice rebuild <manifest.json>` checks it. The folder is staged and then renamed into
place (on local roots), so a failed build leaves no half-written slice.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from squigglray import __version__
from squigglray.config import canonical_json
from squigglray.data.config import SliceConfig
from squigglray.data.rules import Rule, rules_hash, rules_to_json
from squigglray.data.select import Selection
from squigglray.paths import ArtifactStore
from squigglray.schemas.base import VersionedModel
from squigglray.schemas.pool import POOL_ITEM_VERSION, SPLITS, PoolItem, items_from_table, items_table

MANIFEST_VERSION = "slice_manifest@1.0"
ITEMS = "items.parquet"
REMOVED = "removed.parquet"
MANIFEST = "manifest.json"

REMOVED_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("family_id", pa.string()), ("wanted_split", pa.string()), ("reason", pa.string()),
    ("matched_item_id", pa.string()), ("matched_split", pa.string()), ("similarity", pa.float64()),
])


class SliceNotFound(ValueError):
    """A slice id or path that names no built slice."""


class SliceManifest(VersionedModel):
    """What the slice is, where it came from, and the hashes that pin it."""

    SCHEMA = MANIFEST_VERSION
    slice_id: str
    item_schema: str = POOL_ITEM_VERSION
    config: dict
    config_hash: str
    rules_hash: str
    seed: int
    sources: list[dict]
    pool: dict
    slice: dict
    contamination: dict
    hashes: dict
    tokenizer: str
    package_version: str
    pyarrow_version: str


def parquet_bytes(table: pa.Table) -> bytes:
    """Fixed writer settings: the same table gives the same bytes (with the same pyarrow)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3, row_group_size=4096, use_dictionary=True,
                   write_statistics=True, store_schema=True)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolved_config(cfg: SliceConfig, rules: tuple[Rule, ...]) -> dict:
    return {**cfg.model_dump(mode="json"), "rules": rules_to_json(rules)}


def slice_id_for(cfg: SliceConfig, resolved: dict, sources: list[dict]) -> str:
    digest = hashlib.sha256(canonical_json({"config": resolved, "sources": [
        [f["sha256"] for f in s["files"]] for s in sources]}).encode()).hexdigest()
    return f"{cfg.name}-{digest[:12]}"


def _mix(items: list[PoolItem], key) -> dict:
    return dict(sorted(Counter(key(x) for x in items).items()))


def slice_summary(items: list[PoolItem], sel: Selection) -> dict:
    by_split = {s: [x for x in items if x.split == s] for s in SPLITS}
    return {
        "items": len(items),
        "splits": {s: len(v) for s, v in by_split.items()},
        "tokens": sum(x.n_tokens for x in items),
        "families": {f: {"target_type": next(x.target_type for x in items if x.family_id == f),
                         **{s: sum(1 for x in by_split[s] if x.family_id == f) for s in SPLITS}}
                     for f in sorted({x.family_id for x in items})},
        "rules": _mix(items, lambda x: x.family_rule),
        "target_types": _mix(items, lambda x: x.target_type or "none"),
        "styles": _mix(items, lambda x: x.reasoning_style),
        "difficulty": _mix(items, lambda x: x.difficulty),
        "datasets": _mix(items, lambda x: x.source.dataset),
        "synthetic": sum(x.synthetic for x in items),
        "synthetic_fill": sel.fill,
        "short_families": sel.short,
    }


def contamination_summary(sel: Selection, cfg: SliceConfig) -> dict:
    c = cfg.contamination
    return {
        "method": {"exact": "sha256 of the problem text", "normalized": "sha256 of squigglray.data.dedup.normalize_text",
                   "near_duplicate": f"word {c.ngram}-gram Jaccard >= {c.near_dup_threshold} (MinHash {c.num_perm} "
                                     f"permutations, {c.bands} LSH bands, verified exactly)",
                   "synthetic_pairs": c.synthetic_pairs},
        "removed": len(sel.removals),
        "by_reason": dict(sorted(Counter(r["reason"] for r in sel.removals).items())),
        "by_split": dict(sorted(Counter(r["wanted_split"] or "dedup" for r in sel.removals).items())),
        "report": REMOVED,
    }


def split_hashes(items: list[PoolItem]) -> dict:
    """Per split: sha256 over its item ids and problem hashes (what a run records as its data hash)."""
    out = {}
    for s in SPLITS:
        h = hashlib.sha256()
        for x in items:
            if x.split == s:
                h.update(f"{x.item_id}\t{x.problem_sha256}\n".encode())
        out[s] = h.hexdigest()
    return out


def write_slice(store: ArtifactStore, rel_dir: str, files: dict[str, bytes]) -> None:
    """Stage the files in a local folder, then move the folder into place (atomic on local roots)."""
    staging = Path(tempfile.mkdtemp(prefix="squigglray-slice-"))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        store.upload_dir(staging, rel_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def slice_files(sel: Selection, cfg: SliceConfig, rules: tuple[Rule, ...], sources: list[dict], pool: dict,
                tokenizer: str) -> tuple[SliceManifest, dict[str, bytes]]:
    resolved = resolved_config(cfg, rules)
    items_bytes = parquet_bytes(items_table(sel.items))
    removed = pa.Table.from_pylist(sel.removals, schema=REMOVED_SCHEMA)
    manifest = SliceManifest(
        slice_id=slice_id_for(cfg, resolved, sources), config=resolved, config_hash=sha256(canonical_json(resolved).encode()),
        rules_hash=rules_hash(rules), seed=cfg.seed, sources=sources, pool=pool, slice=slice_summary(sel.items, sel),
        contamination=contamination_summary(sel, cfg),
        hashes={"items_sha256": sha256(items_bytes), "splits": split_hashes(sel.items)},
        tokenizer=tokenizer, package_version=__version__, pyarrow_version=pa.__version__)
    files = {ITEMS: items_bytes, REMOVED: parquet_bytes(removed), MANIFEST: (manifest.to_json() + "\n").encode()}
    return manifest, files


# ----- reading a slice (the trainer and the probes take it by id) -----

def slice_location(spec: str, store: ArtifactStore) -> tuple[ArtifactStore, str]:
    """(store, folder) of a slice given by id (under the data dir), folder, items.parquet or manifest.json."""
    p = Path(spec)
    if p.exists():
        folder = p.parent if p.is_file() else p
        return ArtifactStore(folder), ""
    rel = store.slice_dir(spec)
    if not store.exists(f"{rel}/{MANIFEST}"):
        raise SliceNotFound(f"no slice {spec!r}: neither a path nor {store.full(rel)}/{MANIFEST}")
    return store, rel


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def read_manifest(spec: str, store: ArtifactStore | None = None) -> SliceManifest:
    st, rel = slice_location(spec, store or ArtifactStore())
    return SliceManifest.from_json(st.read_text(_join(rel, MANIFEST)))


def read_items(spec: str, store: ArtifactStore | None = None, split: str | None = None) -> tuple[SliceManifest, list[PoolItem]]:
    """The manifest and the validated items of a slice (one split, or all); the bytes are checked
    against the manifest's sha256 so a modified slice is never used under its old id."""
    st, rel = slice_location(spec, store or ArtifactStore())
    manifest = SliceManifest.from_json(st.read_text(_join(rel, MANIFEST)))
    data = st.read_bytes(_join(rel, ITEMS))
    if sha256(data) != manifest.hashes["items_sha256"]:
        raise ValueError(f"{st.full(_join(rel, ITEMS))} does not match its manifest's items_sha256: the slice was "
                         f"modified; rebuild it with `squigglray slice rebuild`")
    items = items_from_table(pq.read_table(io.BytesIO(data)), st.full(_join(rel, ITEMS)))
    return manifest, [x for x in items if split is None or x.split == split]



def split_heads(items: list[PoolItem], split: str, per_family: int,
                families: list[str] | None = None) -> list[PoolItem]:
    """The first `per_family` items (in rank order) of each family in one split of a slice, families
    in name order (all of the split's, or `families`): the fixed evaluation sets that probes take
    from a slice's held-out splits."""
    by_family: dict[str, list[PoolItem]] = {}
    for x in items:
        if x.split == split and (families is None or x.family_id in families):
            by_family.setdefault(x.family_id, []).append(x)
    return [x for fam in sorted(by_family) for x in sorted(by_family[fam], key=lambda x: x.rank)[:per_family]]
