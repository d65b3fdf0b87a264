"""Streaming a slice's train split, or OpenMathReasoning Parquet shards, as tokenized training
examples, a few rows at a time, never loaded whole (`data.stream`; training/stream.py packs them).

Plain functions on Arrow batches, light to import (no torch: a Ray Data task that imports this
module starts in a fraction of a second), so the same pipeline runs two ways:
- through Ray Data (`tune_spaces.dynamics.stream_dataset`): the file names, `map_batches(TokenizeFiles)`,
  split among the Ray Train workers (`get_dataset_shard`), its memory held under
  `data.stream_memory_mb` by Ray Data's backpressure;
- in one process (`local_epoch`), for `squigglray train-base` on a laptop and the benchmarks.
Both give the same examples in the same order: tokenizing is row by row, whatever the blocks.

    python -m pytest tests/test_stream_data.py    # the local stream, and Ray Data's against it
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from squigglray.families.trace import format_prompt
from squigglray.paths import ArtifactStore

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

READ_ROWS = 64  # source rows per Arrow batch
TOKENIZER_SAMPLE = 20_000  # the first texts of the stream train the tokenizer (a real-scale vocab needs no more)
SLICE_COLUMNS = ["content", "provenance", "split", "family_id", "difficulty"]
OMR_COLUMNS = ["problem", "generated_solution"]


@dataclass
class Encoded:
    ids: list[int]  # or an int32 array (a streamed example, a view into its Arrow batch)
    n_prompt: int  # leading tokens without loss: BOS and the prompt (and, in a later chunk, its context)

    @classmethod
    def of(cls, tokenizer: "PreTrainedTokenizerBase", prompt: list[int], trace: list[int]) -> "Encoded":
        """Every training example's layout: BOS, the prompt's ids (no loss), the trace's, EOS."""
        return cls([tokenizer.bos_token_id, *prompt, *trace, tokenizer.eos_token_id], 1 + len(prompt))


MIN_WINDOW = 16  # fewer trace tokens a chunk than this, and the example is dropped instead


def chunks(e: Encoded, max_len: int) -> list[Encoded]:
    """An example that fits, as is; a longer one as chunks of at most `max_len` tokens, each the
    example's BOS and prompt (no loss) then a window of its solution. Windows after the first start
    with the last quarter of the window before as context (no loss), so every solution token is
    trained exactly once and never without the problem and some preceding solution. Empty when the
    prompt leaves fewer than MIN_WINDOW tokens for the solution."""
    if len(e.ids) <= max_len:
        return [e]
    head, trace = e.ids[:e.n_prompt], e.ids[e.n_prompt:]
    window = max_len - len(head)
    if window < MIN_WINDOW:
        return []
    overlap = window // 4
    out, start = [Encoded(head + trace[:window], len(head))], window
    while start < len(trace):
        ctx = trace[start - overlap:start]
        out.append(Encoded(head + ctx + trace[start:start + window - overlap], len(head) + overlap))
        start += window - overlap
    return out


@dataclass(frozen=True)
class StreamSource:
    """What a stream reads: its files in order, their kind (`slice` or `omr`) and columns, and the
    identity every artifact records (a slice's id and items hash; for shards, a hash of their
    names, sizes and row counts)."""

    kind: str
    files: tuple[str, ...]
    columns: tuple[str, ...]
    slice_id: str
    slice_hash: str

    def files_for(self, seed: int) -> list[str]:
        """The files in the order seed `seed` reads them (each seed its own)."""
        order = np.random.default_rng(seed).permutation(len(self.files))
        return [self.files[i] for i in order]


def _uri(path: str, like: str) -> str:
    """A file found through `like`'s filesystem, as a URI pyarrow and Ray Data open anywhere."""
    return f"{like.split('://', 1)[0]}://{path}" if "://" in like else path


def stream_source(slice_spec: str | None, parquet: str | None, store: ArtifactStore | None = None) -> StreamSource:
    """A slice's stream (its id or folder) or the shards' (a file, folder or URI), checked before any
    training: a slice's bytes against its manifest (read in chunks), each shard's footer and columns
    (`data.sources.check_omr_file`)."""
    from squigglray.data.slice import ITEMS, MANIFEST, SliceManifest, _join, slice_location
    from squigglray.data.sources import check_omr_file, file_sha256, list_files

    if slice_spec:
        st, rel = slice_location(slice_spec, store or ArtifactStore())
        manifest = SliceManifest.from_json(st.read_text(_join(rel, MANIFEST)))
        path = st.full(_join(rel, ITEMS))
        if file_sha256(st.fs, path)["sha256"] != manifest.hashes["items_sha256"]:
            raise ValueError(f"{path} does not match its manifest's items_sha256: the slice was modified; "
                             f"rebuild it with `squigglray slice rebuild`")
        return StreamSource("slice", (_uri(path, st.uri),), tuple(SLICE_COLUMNS), manifest.slice_id,
                            manifest.hashes["items_sha256"])
    fs, files = list_files(parquet, (".parquet",))
    h, rated = hashlib.sha256(), True
    for f in files:
        n_rows, present = check_omr_file(fs, f)
        rated &= "pass_rate_72b_tir" in present
        h.update(f"{f.rsplit('/', 1)[-1]}\t{fs.get_file_info(f).size}\t{n_rows}\n".encode())
    digest = h.hexdigest()
    return StreamSource("omr", tuple(_uri(f, parquet) for f in files),
                        (*OMR_COLUMNS, *(["pass_rate_72b_tir"] if rated else [])), f"omr-{digest[:12]}", digest)


def text_rows(table: pa.Table, kind: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """(problems, solutions, families, levels) of the trainable rows of a batch: a slice's train items
    with a reference solution; OMR rows with a generated solution (family `omr`, level by pass rate)."""
    from squigglray.data.sources import difficulty_from_pass_rate

    if kind == "slice":
        keep = pc.and_(pc.equal(table["split"], "train"),
                       pc.is_valid(pc.struct_field(table["provenance"], "reference_solution")))
        t = table.filter(keep)
        return (pc.struct_field(t["content"], "problem").to_pylist(),
                pc.struct_field(t["provenance"], "reference_solution").to_pylist(),
                t["family_id"].to_pylist(), t["difficulty"].to_pylist())
    t = table.filter(pc.and_(pc.is_valid(table["generated_solution"]), pc.is_valid(table["problem"])))
    rates = t["pass_rate_72b_tir"].to_pylist() if "pass_rate_72b_tir" in t.column_names else [None] * t.num_rows
    return (t["problem"].to_pylist(), t["generated_solution"].to_pylist(), ["omr"] * t.num_rows,
            [difficulty_from_pass_rate(r) for r in rates])


def file_batches(path: str, columns: Iterable[str]) -> Iterator[pa.Table]:
    """One Parquet file (a path or URI) as Arrow batches of READ_ROWS rows."""
    import pyarrow.fs as pafs

    fs, where = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
    with fs.open_input_file(where) as fh:
        for b in pq.ParquetFile(fh).iter_batches(batch_size=READ_ROWS, columns=list(columns)):
            yield pa.Table.from_batches([b])


def local_batches(src: StreamSource, seed: int) -> Iterator[pa.Table]:
    """The source's Arrow batches in seed order, one file open at a time."""
    for f in src.files_for(seed):
        yield from file_batches(f, src.columns)


def sample_texts(src: StreamSource, n: int = TOKENIZER_SAMPLE) -> list[str]:
    """The first `n` training texts (prompt and solution) in seed 0's file order: every seed's
    tokenizer is trained on the same texts."""
    out: list[str] = []
    for table in local_batches(src, seed=0):
        problems, solutions, _, _ = text_rows(table, src.kind)
        out += [format_prompt(p) + s for p, s in zip(problems, solutions)]
        if len(out) >= n:
            break
    return out[:n]


class TokenizeRows:
    """An Arrow batch of source rows -> its training examples, one row each (`ids`, `n_prompt`): rows
    whose problem is held out (probes) or whose level or family the curriculum does not draw are
    dropped, and long solutions are chunked (`data.chunks`). Row by row, so the examples and their
    order never depend on how Ray Data cuts the stream into blocks."""

    def __init__(self, tokenizer: "PreTrainedTokenizerBase", row_len: int, kind: str,
                 exclude_problems: Iterable[str] = (), levels: Iterable[str] | None = None,
                 families: Iterable[str] | None = None):
        self.tokenizer, self.row_len, self.kind = tokenizer, row_len, kind
        self.exclude = frozenset(exclude_problems)
        self.levels = frozenset(levels) if levels is not None else None
        self.families = frozenset(families) if families is not None else None

    def __call__(self, table: pa.Table) -> pa.Table:
        problems, solutions, fams, levels = text_rows(table, self.kind)
        keep = [i for i in range(len(problems)) if problems[i] not in self.exclude
                and (self.levels is None or levels[i] in self.levels)
                and (self.families is None or fams[i] in self.families)]
        out: list[Encoded] = []
        if keep:
            tok = self.tokenizer
            prompts = tok([format_prompt(problems[i]) for i in keep], add_special_tokens=False)["input_ids"]
            traces = tok([solutions[i] for i in keep], add_special_tokens=False)["input_ids"]
            for p, t in zip(prompts, traces):
                out += chunks(Encoded.of(tok, p, t), self.row_len)
        return pa.table({"ids": pa.array([e.ids for e in out], pa.list_(pa.int32())),
                         "n_prompt": pa.array([e.n_prompt for e in out], pa.int32())})


class TokenizeFiles:
    """Files -> their examples (`TokenizeRows` tables), file by file in the order given: the map of
    the Ray Data pipeline (a batch of file names in, a stream of tables out) and the epoch of the
    local one alike."""

    def __init__(self, src: StreamSource, tokenize: TokenizeRows):
        self.columns, self.tokenize = src.columns, tokenize

    def __call__(self, batch: dict) -> Iterator[pa.Table]:
        for f in _names(batch["file"]):
            for t in file_batches(f, self.columns):
                yield self.tokenize(t)


def _names(col) -> list[str]:
    return col.to_pylist() if hasattr(col, "to_pylist") else [str(x) for x in col]


def local_epoch(src: StreamSource, tokenize: TokenizeRows, seed: int) -> Callable[[], Iterator[pa.Table]]:
    """An epoch factory over the stream without Ray: the examples Ray Data makes, in the same order."""
    return lambda: TokenizeFiles(src, tokenize)({"file": src.files_for(seed)})
