"""Sources of a candidate pool, each turned into the same raw row layout (`RAW_SCHEMA`).

- OpenMathReasoning: Parquet shards in the published layout (`data/<split>-NNNNN-of-NNNNN.parquet`,
  columns below). OMR has no id column and many solutions per problem, so `source_id` is the first
  16 hex digits of the problem's sha256: every solution row of a problem shares its item id, and the
  slice keeps one of them. The split is `inference_mode` when present, else the file-name prefix.
- Generic JSON lines, with a field mapping (`JsonlFields`).
- The project's synthetic families (instances with exact answers and tool-integrated traces).

Nothing here imports ray: the Ray Data job maps these functions over batches.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

OMR_REQUIRED = ("problem", "generated_solution", "expected_answer", "problem_type", "problem_source")
OMR_OPTIONAL = ("generation_model", "pass_rate_72b_tir", "inference_mode", "used_in_kaggle")
OMR_TAGS = ("problem_type", "problem_source", "generation_model", "pass_rate_72b_tir", "inference_mode",
            "used_in_kaggle")

RAW_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()), ("source_id", pa.string()),
    ("tags_json", pa.string()), ("problem", pa.string()), ("final_answer", pa.string()),
    ("reference_solution", pa.string()), ("solution_field", pa.string()), ("style_hint", pa.string()),
    ("difficulty", pa.string()), ("synthetic", pa.bool_()), ("family_hint", pa.string()),
    ("target_hint", pa.string()), ("file", pa.string()),
])


class SourceError(ValueError):
    """A source that cannot be read: the message names the file and, where it applies, the column."""


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----- files -----

def list_files(path: str, extensions: tuple[str, ...]) -> tuple[pafs.FileSystem, list[str]]:
    """(filesystem, sorted file paths) for a file, a folder (recursive) or a URI."""
    if "://" in path:
        fs, base = pafs.FileSystem.from_uri(path)
    else:
        fs, base = pafs.LocalFileSystem(), str(Path(path).resolve())
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"source path {path!r} does not exist")
    if info.type == pafs.FileType.File:
        return fs, [base]
    found = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    files = sorted(f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(extensions))
    if not files:
        raise SourceError(f"source folder {path!r} holds no {'/'.join(extensions)} files")
    return fs, files


def file_sha256(fs: pafs.FileSystem, path: str) -> dict:
    h = hashlib.sha256()
    size = 0
    with fs.open_input_stream(path) as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
    return {"path": path, "bytes": size, "sha256": h.hexdigest()}


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def check_omr_file(fs: pafs.FileSystem, path: str) -> tuple[int, list[str]]:
    """Read the footer: a corrupt file or a missing/mistyped column fails here, named.
    Returns its rows and which OMR columns (required, then optional) it holds."""
    try:
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
            schema = meta.schema.to_arrow_schema()
    except (pa.ArrowInvalid, OSError) as e:
        raise SourceError(f"{path}: not a readable Parquet file ({e})") from None
    for col in OMR_REQUIRED:
        if col not in schema.names:
            raise SourceError(f"{path}: column {col!r} is missing (OpenMathReasoning layout needs {list(OMR_REQUIRED)})")
        if not _is_text(schema.field(col).type):
            raise SourceError(f"{path}: column {col!r} has type {schema.field(col).type}, expected string")
    return meta.num_rows, [c for c in (*OMR_REQUIRED, *OMR_OPTIONAL) if c in schema.names]


def split_from_filename(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    m = re.match(r"^([A-Za-z_]+)-\d+-of-\d+", name)
    return m.group(1) if m else "default"


def difficulty_from_pass_rate(value: str | None) -> str:
    """OMR's pass_rate_72b_tir ('0.75', '3/8', 'n/a'): >= 0.7 easy, >= 0.3 medium, else hard; unknown = medium."""
    if value is None:
        return "medium"
    try:
        num, _, den = str(value).partition("/")
        rate = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        return "medium"
    return "easy" if rate >= 0.7 else "medium" if rate >= 0.3 else "hard"


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def _check_text_column(table: pa.Table, name: str, where: str) -> None:
    if name in table.column_names and not _is_text(table.schema.field(name).type):
        raise SourceError(f"{where}: column {name!r} has type {table.schema.field(name).type}, expected string")


def _files(table: pa.Table, fallback: str) -> list[str]:
    return [str(p) for p in _column(table, "path")] if "path" in table.column_names else [fallback] * table.num_rows


# ----- OpenMathReasoning -----

def omr_to_raw(table: pa.Table, splits: tuple[str, ...] = ()) -> pa.Table:
    """A batch of OMR rows (read with include_paths) -> RAW_SCHEMA rows; rows of other splits are dropped."""
    files = _files(table, "omr")
    for col in OMR_REQUIRED:
        if col not in table.column_names:
            raise SourceError(f"{files[0] if files else 'omr'}: column {col!r} is missing")
        _check_text_column(table, col, files[0] if files else "omr")
    cols = {c: _column(table, c) for c in (*OMR_REQUIRED, *OMR_OPTIONAL)}
    rows = []
    for i in range(table.num_rows):
        mode = cols["inference_mode"][i]
        split = str(mode) if mode else split_from_filename(files[i])
        if splits and split not in splits:
            continue
        problem = cols["problem"][i]
        tags = {k: str(cols[k][i]) for k in OMR_TAGS if cols[k][i] is not None}
        sid = short_hash(problem) if isinstance(problem, str) else ""
        rows.append({
            "item_id": f"omr:{split}:{sid}", "dataset": "nvidia/OpenMathReasoning", "split": split, "source_id": sid,
            "tags_json": json.dumps(tags, sort_keys=True), "problem": problem,
            "final_answer": cols["expected_answer"][i] or None, "reference_solution": cols["generated_solution"][i],
            "solution_field": "generated_solution", "style_hint": split if split in ("cot", "tir") else None,
            "difficulty": difficulty_from_pass_rate(cols["pass_rate_72b_tir"][i]), "synthetic": False,
            "family_hint": None, "target_hint": None, "file": files[i],
        })
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA)


# ----- generic JSONL -----

def jsonl_to_raw(table: pa.Table, name: str, split: str, fields: dict) -> pa.Table:
    """A batch of JSON-lines rows (read with include_paths) -> RAW_SCHEMA rows, using the field mapping."""
    files = _files(table, name)
    where = files[0] if files else name
    if fields["problem"] not in table.column_names:
        raise SourceError(f"{where}: field {fields['problem']!r} (the problem) is missing")
    _check_text_column(table, fields["problem"], where)
    get = {k: (_column(table, v) if v else [None] * table.num_rows) for k, v in fields.items()}
    rows = []
    for i in range(table.num_rows):
        problem = get["problem"][i]
        sid = str(get["id"][i]) if get["id"][i] is not None else (short_hash(problem) if isinstance(problem, str) else "")
        answer, solution, style = get["answer"][i], get["solution"][i], get["style"][i]
        rows.append({
            "item_id": f"{name}:{split}:{sid}", "dataset": name, "split": split, "source_id": sid, "tags_json": "{}",
            "problem": problem, "final_answer": None if answer is None else str(answer),
            "reference_solution": None if solution is None else str(solution),
            "solution_field": fields["solution"] if solution is not None else None,
            "style_hint": None if style is None else str(style), "difficulty": "medium", "synthetic": False,
            "family_hint": None, "target_hint": None, "file": files[i],
        })
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA)


# ----- synthetic families -----

def family_chunks(families: list[str], levels: list[str], n: int, seed: int, chunk: int = 256) -> list[dict]:
    """Work units (family, level, seed, start, n) that `family_rows` expands, so Ray Data can spread them."""
    return [{"family": f, "level": lv, "seed": seed, "start": s, "n": min(chunk, n - s)}
            for f in families for lv in levels for s in range(0, n, chunk)]


def family_rows(units: pa.Table, synthetic_rule: str = "synthetic_source") -> pa.Table:
    from squigglray.families import sample

    rows = []
    for u in units.to_pylist():
        for x in sample(u["family"], u["n"], seed=u["seed"], difficulty=u["level"], start=u["start"]):
            sid = x.instance_id.removeprefix("fam:")
            rows.append({
                "item_id": f"fam:{u['level']}:{sid}", "dataset": "squigglray/families", "split": u["level"],
                "source_id": sid, "tags_json": json.dumps({"family": x.family_id, "rule": synthetic_rule,
                                                           "knobs": json.dumps(x.knobs, sort_keys=True)},
                                                          sort_keys=True),
                "problem": x.problem, "final_answer": str(x.answer), "reference_solution": x.trace,
                "solution_field": "trace", "style_hint": "tir", "difficulty": u["level"], "synthetic": True,
                "family_hint": x.family_id, "target_hint": x.target_type, "file": "squigglray/families",
            })
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA)
