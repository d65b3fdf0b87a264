"""Aggregate an experiment's probe summaries into Parquet (seed 000 Step 1: aggregation output).

Reads every `experiments/<EXP_ID>/summaries/<probe_id>.json` (ProbeSummary `probe_summary@2.0`) and
writes, under `experiments/<EXP_ID>/aggregated/`, `probe_summaries.parquet`, then
`probe_events_candidates.parquet`, then `_manifest.json` last, only once every summary has been read
and checked. Rows carry the human EXP_ID and a hashed `analysis_id` ("an-" + 16 hex of sha256 over
TABLE_VERSION and the sorted (file name, sha256 of its bytes) pairs). Nothing depends on the clock:
the same summaries give byte-identical files.

`probe_summaries.parquet` (PROBE_SUMMARIES_SCHEMA, then the `sig.*` columns): one row per probe,
sorted by (role, family_id, seed, probe_id). JSON columns are `json.dumps(..., sort_keys=True)`.

=====================  =========  ===============================================================
column                 type       meaning
=====================  =========  ===============================================================
experiment_id          string     the human EXP_ID
analysis_id            string     hash of the inputs (same in every row and in _manifest.json)
schema                 string     the summary's schema string ("probe_summary@2.0")
probe_id               string     `<family>.seed<N>` (= the summary's file name)
run_id                 string     run-scoped artifacts of the probe
family_id              string     family, or 'control:<kind>'
role                   string     'family' or 'control'
seed                   int64      probe seed
<provenance field>     various    ProbeProvenance unprefixed: base_checkpoint,
                                  base_checkpoint_sha256, base_run_id (nullable), dataset_slice_id,
                                  dataset_slice_hash, config_hash, curriculum, package_version,
                                  library_versions (JSON), eval_probe_hashes (JSON),
                                  capture_batch_hash
ft_<field>             various    MicroFinetune as run: method, level, knobs (JSON), n_instances,
                                  instance_seed, steps, batch_size, lr, warmup_steps,
                                  weight_decay, grad_clip, lora_r, lora_alpha, lora_dropout,
                                  target_modules (JSON), max_seq_len, device, precision
probe_a_<field>        various    ProbeMetric of the in-distribution probe: n, loss_before,
                                  loss_after, token_acc_before, token_acc_after,
                                  answer_acc_before, answer_acc_after
probe_b_<field>        various    the same for the holdout probe
train_loss_first       float64    first micro-finetune training loss
train_loss_last        float64    last micro-finetune training loss
<geometry field>       various    ProbeGeometry: param_change, repr_change, step_coherence,
                                  sketch_dim, sketch_seed
dis                    float64    DIS = magnitude x coherence x novelty; null when unscored
dis_<field>            nullable   the other DisScore fields: magnitude, coherence, novelty,
                                  param_ratio, repr_ratio, control_param_change,
                                  control_repr_change, step_coherence, seed_coherence, n_seeds,
                                  max_similarity, nearest, baseline_id, baseline_similarity,
                                  scoring_set_hash (all null when unscored)
n_events               int64      number of ProbeEvents in the summary
t_<field>              float64    ProbeTimings: load_s, eval_before_s, finetune_s, eval_after_s,
                                  analysis_s, total_s
artifacts              string     JSON map name -> store-relative path
sig.<name>             float64    one column per signature entry: delta.* sorted, drift.* sorted,
                                  dir.* by integer index (`df.filter(like="sig.")` = clustering
                                  matrix); not in PROBE_SUMMARIES_SCHEMA (they vary per experiment)
=====================  =========  ===============================================================

`probe_events_candidates.parquet` (PROBE_EVENTS_SCHEMA): one row per ProbeEvent of every summary,
sorted by (probe_id, metric, layer, module, step, kind, event_id): experiment_id, analysis_id,
probe_id, run_id, family_id, role, seed, then the ProbeEvent fields (event_id, metric, layer,
module, kind, step, step_start, step_end, magnitude, score). No events: an empty table.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing

import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import BaseModel

import squigglray
from squigglray.paths import ArtifactStore
from squigglray.schemas.probes import (
    PROBE_SUMMARY_SCHEMA, DisScore, MicroFinetune, ProbeEvent, ProbeGeometry, ProbeMetric, ProbeMetrics,
    ProbeProvenance, ProbeSummary, ProbeTimings,
)

SUMMARIES_TABLE = "probe_summaries@1.0"
EVENTS_TABLE = "probe_events_candidates@1.0"
TABLE_VERSION = f"{SUMMARIES_TABLE}+{EVENTS_TABLE}"
SUMMARIES_FILE, EVENTS_FILE = "probe_summaries.parquet", "probe_events_candidates.parquet"
MANIFEST_FILE = "_manifest.json"
_ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}  # anything else: JSON string


class AggregationError(ValueError):
    """A summary could not be read or the summaries do not belong together."""


def _group(model: type[BaseModel], path: tuple[str, ...], name, nullable: bool = False):
    """(path, field, column, arrow field) per scalar field of `model`; nested models are skipped."""
    out = []
    for key, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            continue
        args = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
        base = next(a for a in args if a is not type(None))
        field = pa.field(name(key), _ARROW.get(base, pa.string()), nullable=nullable or type(None) in args)
        out.append((path, key, field))
    return out


_HEAD = [pa.field(n, pa.int64() if n == "seed" else pa.string(), nullable=False)
         for n in ("experiment_id", "analysis_id", "schema", "probe_id", "run_id", "family_id", "role", "seed")]
_GROUPS = [
    *_group(ProbeProvenance, ("provenance",), str),
    *_group(MicroFinetune, ("finetune",), "ft_{}".format),
    *_group(ProbeMetric, ("metrics", "probe_a"), "probe_a_{}".format),
    *_group(ProbeMetric, ("metrics", "probe_b"), "probe_b_{}".format),
    *_group(ProbeMetrics, ("metrics",), str),
    *_group(ProbeGeometry, ("geometry",), str),
    *_group(DisScore, ("dis",), lambda k: k if k == "dis" else f"dis_{k}", nullable=True),
]
_TIMINGS = _group(ProbeTimings, ("timings",), "t_{}".format)
PROBE_SUMMARIES_SCHEMA = pa.schema(
    _HEAD + [f for _, _, f in _GROUPS] + [pa.field("n_events", pa.int64(), nullable=False)]
    + [f for _, _, f in _TIMINGS] + [pa.field("artifacts", pa.string(), nullable=False)])
_EVENT_FIELDS = _group(ProbeEvent, (), str)
_EVENT_ORDER = ("probe_id", "metric", "layer", "module", "step", "kind", "event_id")
PROBE_EVENTS_SCHEMA = pa.schema([f for f in _HEAD if f.name != "schema"] + [f for _, _, f in _EVENT_FIELDS])


def _summaries_dir(exp_id: str) -> str:
    return f"{ArtifactStore.experiment_dir(exp_id)}/summaries"


def summary_names(store: ArtifactStore, exp_id: str) -> list[str]:
    """Sorted `*.json` file names in experiments/<exp>/summaries/ (temp files ignored); [] if absent."""
    sel = pafs.FileSelector(store.full(_summaries_dir(exp_id)), allow_not_found=True, recursive=False)
    return sorted(i.base_name for i in store.fs.get_file_info(sel)
                  if i.type == pafs.FileType.File and i.base_name.endswith(".json") and ".tmp-" not in i.base_name)


def _read(store: ArtifactStore, exp_id: str) -> list[tuple[str, bytes, ProbeSummary]]:
    out = []
    for name in summary_names(store, exp_id):
        rel = f"{_summaries_dir(exp_id)}/{name}"
        data = store.read_bytes(rel)
        try:
            summary = ProbeSummary.from_json(data.decode())
        except ValueError as e:  # bad UTF-8 / JSON, ValidationError (which carries SchemaMismatch's text)
            raise AggregationError(f"{store.full(rel)}: {type(e).__name__}: {e}") from None
        if f"{summary.probe_id}.json" != name:
            raise AggregationError(f"{store.full(rel)}: probe_id {summary.probe_id!r} does not match the file name")
        out.append((name, data, summary))
    return out


def read_summaries(store: ArtifactStore, exp_id: str) -> list[ProbeSummary]:
    """Every summary of the experiment, sorted by file name; a bad file raises AggregationError naming it."""
    return [s for _, _, s in _read(store, exp_id)]


def write_summary(store: ArtifactStore, summary: ProbeSummary) -> str:
    """Atomically write the summary to its place; returns the full path written."""
    return store.write_text(store.probe_summary(summary.experiment_id, summary.probe_id), summary.to_json())


def _sig_key(name: str):
    group, _, rest = name.partition(".")
    rank = {"delta": 0, "drift": 1}.get(group, 2 if group == "dir" and rest.isdigit() else 3)
    return (rank, int(rest) if rank == 2 else 0, name)


def _value(v):
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


def _disagree(what: str, groups: dict) -> AggregationError:
    parts = "; ".join(f"{key} in {', '.join(names)}" for key, names in groups.items())
    return AggregationError(f"summaries disagree on {what}: {parts}")


def aggregate_experiment(store: ArtifactStore, exp_id: str, extra_manifest: dict | None = None) -> dict:
    """Check the experiment's summaries, write the two tables and the manifest (last); return the manifest."""
    read = _read(store, exp_id)
    if not read:
        raise AggregationError(f"{store.full(_summaries_dir(exp_id))} has no summaries")
    wrong = [n for n, _, s in read if s.experiment_id != exp_id]
    if wrong:
        raise AggregationError(f"summaries of another experiment than {exp_id!r}: {', '.join(wrong)}")
    hashes: dict = {}
    sigs: dict = {}  # sorted signature names -> files
    for name, _, s in read:
        hashes.setdefault(s.provenance.config_hash, []).append(name)
        sigs.setdefault(tuple(sorted(s.signature)), []).append(name)
    if len(hashes) > 1:
        raise _disagree("provenance.config_hash", hashes)
    if len(sigs) > 1:
        first = set(next(iter(sigs)))
        raise _disagree("signature names", {f"names differing by {sorted(set(k) ^ first)}" if set(k) != first
                                            else f"{len(k)} names": v for k, v in sigs.items()})

    inputs = sorted((name, hashlib.sha256(data).hexdigest()) for name, data, _ in read)
    analysis_id = "an-" + hashlib.sha256(json.dumps([TABLE_VERSION, inputs]).encode()).hexdigest()[:16]
    sig_names = sorted(read[0][2].signature, key=_sig_key)
    summaries = sorted((s for _, _, s in read), key=lambda s: (s.role, s.family_id, s.seed, s.probe_id))

    rows, events = [], []
    for s in summaries:
        d = s.model_dump(mode="json")
        head = {"experiment_id": exp_id, "analysis_id": analysis_id, "probe_id": s.probe_id, "run_id": s.run_id,
                "family_id": s.family_id, "role": s.role, "seed": s.seed}
        row = {**head, "schema": s.schema_, "n_events": len(s.events), "artifacts": _value(d["artifacts"])}
        for path, key, field in _GROUPS + _TIMINGS:
            block = d
            for p in path:
                block = block[p] if block is not None else None
            row[field.name] = None if block is None else _value(block[key])
        row.update({f"sig.{k}": float(s.signature[k]) for k in sig_names})
        rows.append(row)
        events += [{**head, **e} for e in d["events"]]
    events.sort(key=lambda e: tuple(e[k] for k in _EVENT_ORDER))
    schema = PROBE_SUMMARIES_SCHEMA
    for k in sig_names:
        schema = schema.append(pa.field(f"sig.{k}", pa.float64(), nullable=False))
    summaries_table = pa.Table.from_pylist(rows, schema=schema)
    events_table = pa.Table.from_pylist(events, schema=PROBE_EVENTS_SCHEMA)

    manifest = {
        "experiment_id": exp_id, "analysis_id": analysis_id,
        "schema_versions": {"probe_summary": PROBE_SUMMARY_SCHEMA, "probe_summaries_table": SUMMARIES_TABLE,
                            "probe_events_table": EVENTS_TABLE},
        "inputs": [{"path": f"{_summaries_dir(exp_id)}/{n}", "sha256": h} for n, h in inputs],
        "row_counts": {"probe_summaries": summaries_table.num_rows, "probe_events_candidates": events_table.num_rows},
        "config_hash": next(iter(hashes)),
        "families": sorted({s.family_id for s in summaries if s.role == "family"}),
        "controls": sorted({s.family_id for s in summaries if s.role == "control"}),
        "seeds": sorted({s.seed for s in summaries}),
        "scored": all(s.dis is not None for s in summaries),
        "package_version": squigglray.__version__,
    }
    if extra_manifest is not None:
        manifest["analysis"] = extra_manifest
    store.write_parquet(store.aggregated(exp_id, SUMMARIES_FILE), summaries_table)
    store.write_parquet(store.aggregated(exp_id, EVENTS_FILE), events_table)
    store.write_json(store.aggregated(exp_id, MANIFEST_FILE), manifest)
    return manifest
