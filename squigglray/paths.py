"""The artifact layout of DESIGN.md, rooted at a local folder or a pyarrow filesystem URI.

Every write is atomic: bytes go to a temporary sibling that is then renamed, so a crash leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

DEFAULT_ROOT_ENV = "SQUIGGLRAY_DATA"


def default_root() -> str:
    return os.environ.get(DEFAULT_ROOT_ENV, "./data")


class ArtifactStore:
    """Relative artifact paths -> bytes on a filesystem; the layout lives in the path helpers."""

    def __init__(self, root: str | os.PathLike | None = None):
        root = str(root if root is not None else default_root())
        self.uri = root
        if "://" in root:
            self.fs, base = pafs.FileSystem.from_uri(root)
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(root).resolve())
        self.base = base.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def location(self) -> str:
        """What a Ray worker passes to ArtifactStore() to open this store: the absolute folder
        (a worker's cwd may differ) or the URI."""
        return self.base if self.is_local else self.uri

    # ----- layout (seed 000 contract) -----
    @staticmethod
    def run_dir(run_id: str) -> str:
        return f"runs/{run_id}"

    @staticmethod
    def run_config(run_id: str) -> str:
        return f"runs/{run_id}/config.json"

    @staticmethod
    def run_checkpoints(run_id: str) -> str:
        return f"runs/{run_id}/checkpoints"

    @staticmethod
    def run_scalars(run_id: str) -> str:
        return f"runs/{run_id}/scalars.parquet"

    @staticmethod
    def run_report(run_id: str) -> str:
        return f"runs/{run_id}/reports/report.md"

    @staticmethod
    def run_research_log(run_id: str) -> str:
        """The dynamics analysis's part of the run report, kept apart so later sections can be redone."""
        return f"runs/{run_id}/reports/research_log.md"

    @staticmethod
    def geometry_state(run_id: str) -> str:
        return f"geometry_state/{run_id}.parquet"

    @staticmethod
    def events_candidates(run_id: str) -> str:
        return f"events_candidates/{run_id}.parquet"

    @staticmethod
    def experiment_dir(exp_id: str) -> str:
        return f"experiments/{exp_id}"

    @staticmethod
    def probe_summary(exp_id: str, probe_id: str) -> str:
        return f"experiments/{exp_id}/summaries/{probe_id}.json"

    @staticmethod
    def aggregated(exp_id: str, name: str) -> str:
        return f"experiments/{exp_id}/aggregated/{name}"

    @staticmethod
    def scoring_baseline(baseline_id: str) -> str:
        return f"scoring_baselines/{baseline_id}.json"

    @staticmethod
    def slice_dir(slice_id: str) -> str:
        return f"slices/{slice_id}"

    @staticmethod
    def model_pointer(name: str) -> str:
        """models/<name>.json names the checkpoint that a preset name resolves to."""
        return f"models/{name}.json"

    # ----- io -----
    def full(self, rel: str) -> str:
        return f"{self.base}/{rel.lstrip('/')}"

    def local_path(self, rel: str) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.uri} is not a local folder; use download_dir/upload_dir")
        return Path(self.full(rel))

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.full(rel)).type != pafs.FileType.NotFound

    def write_bytes(self, rel: str, data: bytes) -> str:
        target = self.full(rel)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, target)
        except BaseException:
            if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                self.fs.delete_file(tmp)
            raise
        return target

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.full(rel)) as f:
            return f.read()

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode())

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_text(rel, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_text(rel))

    def write_parquet(self, rel: str, table: pa.Table) -> str:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return self.write_bytes(rel, buf.getvalue())

    def read_parquet(self, rel: str) -> pa.Table:
        try:
            return pq.read_table(io.BytesIO(self.read_bytes(rel)))
        except pa.ArrowInvalid as e:
            raise ValueError(f"{self.full(rel)} is not a readable Parquet file: {e}") from None

    def upload_dir(self, local: str | Path, rel: str) -> None:
        """Copy a local folder (e.g. a save_pretrained output) into place; atomic on local roots."""
        target = self.full(rel)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if self.is_local:
            staging = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
            shutil.copytree(local, staging)
            if Path(target).exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        else:
            pafs.copy_files(str(local), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    def download_dir(self, rel: str, local: str | Path | None = None) -> Path:
        """A local folder with the contents of `rel` (the folder itself when the root is local)."""
        if self.is_local:
            return self.local_path(rel)
        dest = Path(local or tempfile.mkdtemp(prefix="squigglray-"))
        pafs.copy_files(self.full(rel), str(dest), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
        return dest
