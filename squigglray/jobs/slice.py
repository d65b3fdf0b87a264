"""Build a dataset slice on Ray Data, or rebuild one from its manifest.

    squigglray slice build                      # the packaged config: every synthetic family
    squigglray slice build --config examples/slice_omr.yaml
    squigglray slice show <slice_id>            # per-family counts, styles, fill, removals
    squigglray slice rebuild data/slices/<slice_id>/manifest.json --out /tmp/rebuilt
    ray job submit --working-dir . -- python -m squigglray.jobs.slice build --config my_slice.yaml --data-dir s3://bucket/sq

Pipeline: read_parquet / read_json / synthetic families -> map_batches(to the raw layout) ->
map_batches(annotate: validate, normalize and hash, map families, rank, count tokens; an actor pool)
-> map_batches(filter invalid rows, dedup per family, keep each family's best-ranked candidates)
-> the driver folds the streamed survivors (bounded by the quotas, not the input) -> holdout,
probe A, train with contamination control, synthetic fill -> items.parquet + manifest, written
atomically. Ray Data shows its progress bars; memory stays flat as the input grows.

Metrics (actors/slice_metrics.py, on the Ray dashboard / Prometheus): ray_squigglray_slice_rows_total
{slice, stage=read|valid|invalid|candidate|selected, family}, ray_squigglray_slice_batch_seconds
{stage=annotate} and the driver's ray_squigglray_slice_rows_per_second{stage=read}.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray
from pydantic import BaseModel, Field

from actors.slice_metrics import record_annotate, slice_metrics
from squigglray.config import ConfigError, load_config, packaged_config
from squigglray.data.annotate import Annotator
from squigglray.data.candidates import CandidateMerger, reduce_batch
from squigglray.data.config import FamiliesSource, JsonlSource, OmrSource, SliceConfig
from squigglray.data.rules import DEFAULT_RULES, Rule, load_rules, rules_from_json
from squigglray.data.select import select_slice
from squigglray.data.slice import SliceManifest, read_manifest, resolved_config, slice_files, write_slice
from squigglray.data.sources import (
    SourceError, check_omr_file, family_chunks, family_rows, file_sha256, jsonl_to_raw, list_files, omr_to_raw,
)
from squigglray.entry import JobArgs, fail, make_command_parser, parse_command, run_module
from squigglray.jobs.ray_runtime import ensure_ray
from squigglray.paths import ArtifactStore


def resolve_rules(cfg: SliceConfig) -> tuple[Rule, ...]:
    if cfg.rules is None:
        return DEFAULT_RULES
    if isinstance(cfg.rules, str):
        return load_rules(cfg.rules)
    return rules_from_json(cfg.rules)


@functools.lru_cache(maxsize=4)
def _stage(cfg_json: str) -> tuple[Annotator, SliceConfig]:
    """One annotator per worker process and config (rules compile once, a tokenizer loads once)."""
    cfg = SliceConfig.model_validate_json(cfg_json)
    return Annotator(rules_from_json(cfg.rules), cfg.seed, cfg.tokenizer), cfg


def annotate_reduce(batch, cfg_json: str):
    """The map_batches stage: annotate a raw batch, reduce it to its candidates and statistics."""
    annotate, cfg = _stage(cfg_json)
    t0 = time.perf_counter()
    annotated = annotate(batch)
    reduced = reduce_batch(annotated, cfg.quotas.candidates, cfg.quotas.include_unassigned)
    record_annotate(cfg.name, annotated, reduced, time.perf_counter() - t0)
    return reduced


@ray.remote(num_cpus=1)
def _digest(fs, path: str) -> dict:
    return file_sha256(fs, path)


def _check_expected(files: list[dict], expected: dict) -> None:
    """A rebuild's sources must be the manifest's, byte for byte (compared before any row is read)."""
    now = {f["path"]: f["sha256"] for f in files}
    for f in expected["files"]:
        if f["path"] not in now:
            raise SourceError(f"{f['path']}: source file of the manifest is missing")
        if now[f["path"]] != f["sha256"]:
            raise SourceError(f"{f['path']}: source file changed since the slice was built (sha256 differs)")
    extra = sorted(set(now) - {f["path"] for f in expected["files"]})
    if extra:
        raise SourceError(f"{extra[0]}: source file is not in the manifest (the source folder gained files)")


def _plan_sources(cfg: SliceConfig, expected: list[dict] | None = None) -> tuple[list[dict], list]:
    """Per source: its files (checked, hashed in parallel) and its Ray dataset of raw rows.
    `expected`: a manifest's sources, which the files must match (a rebuild)."""
    described, datasets = [], []
    for i, src in enumerate(cfg.sources):
        files: list[dict] = []
        if isinstance(src, OmrSource):
            fs, paths = list_files(src.path, (".parquet",))
            footers = {p: check_omr_file(fs, p) for p in paths}
            files = ray.get([_digest.remote(fs, p) for p in paths])
            for f in files:
                f["rows"] = footers[f["path"]][0]
            shared = [c for c in footers[paths[0]][1] if all(c in cols for _, cols in footers.values())]
            ds = ray.data.read_parquet(paths, filesystem=fs, include_paths=True)
            # Small shards are read as one block; streaming repartition lets every CPU annotate.
            ds = ds.select_columns([*shared, "path"]).repartition(target_num_rows_per_block=cfg.batch_size)
            ds = ds.map_batches(omr_to_raw, fn_kwargs={"splits": tuple(src.splits)}, batch_format="pyarrow",
                                batch_size=cfg.batch_size)
        elif isinstance(src, JsonlSource):
            fs, paths = list_files(src.path, (".jsonl", ".json", ".jsonl.gz"))
            files = ray.get([_digest.remote(fs, p) for p in paths])
            scheme = src.path.split("://", 1)[0] + "://" if "://" in src.path else ""
            ds = ray.data.read_json([scheme + p for p in paths], lines=True, include_paths=True)
            ds = ds.map_batches(jsonl_to_raw, fn_kwargs={"name": src.name, "split": src.split,
                                                         "fields": src.fields.model_dump()},
                                batch_format="pyarrow", batch_size=cfg.batch_size)
        else:
            assert isinstance(src, FamiliesSource)
            units = family_chunks(src.resolved_families(), src.levels, src.per_family_level, src.seed)
            ds = ray.data.from_items(units).map_batches(family_rows, batch_format="pyarrow", batch_size=4)
        if expected is not None:
            _check_expected(files, expected[i])
        described.append({"kind": src.kind, "name": getattr(src, "name", src.kind), "path": getattr(src, "path", None),
                          "license": src.license, "license_note": src.license_note, "files": files})
        datasets.append(ds)
    return described, datasets


def _diagnose(cfg: SliceConfig, error: BaseException) -> Exception:
    """Turn a failure inside Ray Data into an error that names the source file (and column)."""
    e: BaseException | None = error
    while e is not None:
        if isinstance(e, SourceError):
            return SourceError(_last_line(e))
        e = e.__cause__ or e.__context__
    for src in cfg.sources:
        if isinstance(src, OmrSource):
            fs, paths = list_files(src.path, (".parquet",))
            for p in paths:
                try:
                    with fs.open_input_file(p) as f:
                        for _ in pq.ParquetFile(f).iter_batches(batch_size=65536):
                            pass
                except Exception as bad:  # noqa: BLE001 - any read failure is the culprit
                    return SourceError(f"{p}: unreadable Parquet data ({bad.__class__.__name__}: {bad})")
        elif isinstance(src, JsonlSource):
            fs, paths = list_files(src.path, (".jsonl", ".json", ".jsonl.gz"))
            for p in paths:
                with fs.open_input_stream(p, compression="detect") as f:
                    for no, line in enumerate(f.read().decode(errors="replace").splitlines(), 1):
                        try:
                            json.loads(line) if line.strip() else None
                        except json.JSONDecodeError as bad:
                            return SourceError(f"{p}: line {no} is not valid JSON ({bad})")
    return SourceError(f"the slice build failed while reading its sources: {_last_line(error)}")


def _last_line(e: BaseException) -> str:
    """The original error's own line out of a Ray task error's traceback and advice."""
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    if len(lines) <= 1:
        return str(e)
    own = [x for x in lines if "Error: " in x]
    return (own[-1] if own else lines[-1]).split("Error: ", 1)[-1]


def build_slice(cfg: SliceConfig, data_dir: str | None = None, out: str | None = None,
                log=print, expected_sources: list[dict] | None = None) -> SliceManifest:
    """Run the pipeline; write slices/<slice_id>/ under the data dir (or `out`); return the manifest."""
    ensure_ray()
    t0 = time.time()
    rules = resolve_rules(cfg)
    try:
        sources, datasets = _plan_sources(cfg, expected_sources)
    except ray.exceptions.RayError as e:
        raise _diagnose(cfg, e) from None
    ds = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
    cfg_json = json.dumps(resolved_config(cfg, rules))
    ds = ds.map_batches(annotate_reduce, fn_kwargs={"cfg_json": cfg_json}, batch_format="pyarrow",
                        batch_size=cfg.batch_size)
    merger = CandidateMerger(cfg.quotas.candidates, cfg.quotas.include_unassigned)
    meter, t_read = slice_metrics(), time.perf_counter()
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            merger.add(batch)
            meter.throughput(cfg.name, "read", merger.stats["rows"], time.perf_counter() - t_read)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise _diagnose(cfg, e) from None
    cands, pool = merger.result()
    log(f"read {pool['rows']} rows from {len(sources)} source(s); {len(cands)} candidates")
    annotator = Annotator(rules, cfg.seed, cfg.tokenizer)
    sel = select_slice(cands, cfg, annotator)
    selected: dict[str, int] = {}
    for item in sel.items:
        selected[item.family_id] = selected.get(item.family_id, 0) + 1
    meter.count_by(cfg.name, "selected", selected)
    manifest, files = slice_files(sel, cfg, rules, sources, pool, annotator.tokens.name)
    if out:
        target = Path(out).resolve()
        store, rel = ArtifactStore(target.parent), target.name
    else:
        store = ArtifactStore(data_dir)
        rel = store.slice_dir(manifest.slice_id)
    write_slice(store, rel, files)
    log(f"slice {manifest.slice_id}: {manifest.slice['splits']} items, {len(sel.removals)} removed for overlap, "
        f"written to {store.full(rel)} in {time.time() - t0:.1f} s")
    return manifest


def rebuild_slice(manifest_path: str, data_dir: str | None = None, out: str | None = None, log=print) -> SliceManifest:
    """Rebuild a slice from its manifest alone and check items.parquet is byte-identical."""
    path = Path(manifest_path)
    if not path.is_file():
        raise ConfigError(f"manifest {manifest_path!r} does not exist")
    old = SliceManifest.from_json(path.read_text())
    new = build_slice(SliceConfig.model_validate(old.config), data_dir, out, log, expected_sources=old.sources)
    if new.hashes["items_sha256"] != old.hashes["items_sha256"]:
        raise RuntimeError(f"rebuilt items.parquet differs from the manifest: sha256 {new.hashes['items_sha256']} "
                           f"!= {old.hashes['items_sha256']} (pyarrow {new.pyarrow_version} vs {old.pyarrow_version}, "
                           f"squigglray {new.package_version} vs {old.package_version})")
    log(f"byte-identical: items.parquet sha256 {new.hashes['items_sha256']}")
    return new


class RebuildArgs(BaseModel):
    manifest: str = Field(..., description="a slice's manifest.json", json_schema_extra={"positional": True})
    out: str | None = Field(None, description="folder for the rebuilt slice (default: slices/<id> under the data dir)")
    data_dir: str | None = JobArgs.model_fields["data_dir"]


class ShowArgs(BaseModel):
    slice_id: str = Field(..., description="slice id under the data dir, or a slice folder",
                          json_schema_extra={"positional": True})
    data_dir: str | None = JobArgs.model_fields["data_dir"]


COMMANDS = {
    "build": ("Build slices/<slice_id>/ (items.parquet, removed.parquet, manifest.json) on Ray Data "
              "(default config: the packaged squigglray/configs/slice.yaml).", (JobArgs,)),
    "rebuild": ("Rebuild a slice from its manifest alone and check items.parquet is byte-identical.", (RebuildArgs,)),
    "show": ("Per-family counts, styles, fill and removals of a built slice.", (ShowArgs,)),
}


def print_slice(m: SliceManifest, console) -> None:
    """A slice's per-family table, styles, fill, removals and hashes."""
    from rich.table import Table

    t = Table(title=f"slice {m.slice_id}: {m.slice['items']} items, {m.slice['tokens']} tokens")
    for col in ("family", "target type", "train", "probe_a", "holdout"):
        t.add_column(col, justify="left" if col in ("family", "target type") else "right")
    for fam, per in m.slice["families"].items():
        t.add_row(fam, per["target_type"] or "-", *(str(per[s]) for s in ("train", "probe_a", "holdout")))
    console.print(t)
    console.print(f"styles {m.slice['styles']}  synthetic fill {m.slice['synthetic_fill']}  "
                  f"removed for overlap {m.contamination['by_reason']}", highlight=False)
    if m.slice["short_families"]:
        console.print(f"short of their quota (got, wanted): {m.slice['short_families']}", highlight=False)
    print(f"manifest: {m.slice_id}/manifest.json  items sha256 {m.hashes['items_sha256']}")


def make_parser():
    """The parser of `python -m squigglray.jobs.slice` and of `squigglray slice`."""
    return make_command_parser("squigglray slice", __doc__, COMMANDS)


def main(argv: list[str] | None = None) -> SliceManifest:
    from rich.console import Console

    verb, (args,) = parse_command(make_parser(), argv)
    console = Console()

    def log(msg: str) -> None:
        console.print(msg, highlight=False)

    if verb == "build":
        cfg = load_config(SliceConfig, args.config or packaged_config("slice"), args.overrides)
        manifest = build_slice(cfg, args.data_dir, log=log)
    elif verb == "rebuild":
        try:
            return rebuild_slice(args.manifest, args.data_dir, args.out, log=log)
        except RuntimeError as e:  # the rebuilt items differ: exit 1, not a usage error
            fail(e, 1)
    else:
        manifest = read_manifest(args.slice_id, ArtifactStore(args.data_dir))
    print_slice(manifest, console)
    return manifest


if __name__ == "__main__":
    run_module(__spec__.name)  # Ray Data pickles the annotate stage by reference: see entry.run_module
