import pyarrow as pa
import pytest

from squigglray.paths import ArtifactStore


def test_layout_matches_design():
    s = ArtifactStore
    assert s.run_config("r1") == "runs/r1/config.json"
    assert s.run_scalars("r1") == "runs/r1/scalars.parquet"
    assert s.run_report("r1") == "runs/r1/reports/report.md"
    assert s.geometry_state("r1") == "geometry_state/r1.parquet"
    assert s.events_candidates("r1") == "events_candidates/r1.parquet"
    assert s.probe_summary("E", "p") == "experiments/E/summaries/p.json"
    assert s.aggregated("E", "probe_summaries.parquet") == "experiments/E/aggregated/probe_summaries.parquet"
    assert s.slice_dir("x") == "slices/x"
    assert s.scoring_baseline("b") == "scoring_baselines/b.json"


@pytest.mark.parametrize("uri_style", [False, True])
def test_roundtrip_local_and_uri(tmp_path, uri_style):
    root = f"file://{tmp_path}/d" if uri_style else str(tmp_path / "d")
    st = ArtifactStore(root)
    st.write_json("runs/r/config.json", {"a": 1})
    assert st.read_json("runs/r/config.json") == {"a": 1}
    st.write_parquet("runs/r/scalars.parquet", pa.table({"step": [1, 2]}))
    assert st.read_parquet("runs/r/scalars.parquet").column("step").to_pylist() == [1, 2]
    assert st.exists("runs/r/config.json") and not st.exists("runs/r/nothing")
    assert sorted(p.name for p in (tmp_path / "d" / "runs" / "r").iterdir()) == ["config.json", "scalars.parquet"]


class _FailsMidWrite:
    """A buffer that breaks the write halfway, like a crash while writing."""

    def __buffer__(self, flags):
        raise RuntimeError("crash while writing")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    st = ArtifactStore(tmp_path)
    st.write_text("a.txt", "old")
    with pytest.raises((RuntimeError, TypeError)):
        st.write_bytes("a.txt", _FailsMidWrite())
    assert st.read_text("a.txt") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temp file left behind


def test_broken_parquet_names_the_file(tmp_path):
    st = ArtifactStore(tmp_path)
    st.write_bytes("x.parquet", b"not parquet at all")
    with pytest.raises(ValueError, match="x.parquet is not a readable Parquet file"):
        st.read_parquet("x.parquet")


def test_upload_and_download_dir(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"123")
    st = ArtifactStore(f"file://{tmp_path}/root")
    st.upload_dir(src, "runs/r/checkpoints/final")
    st.upload_dir(src, "runs/r/checkpoints/final")  # replacing an existing folder works
    assert st.read_bytes("runs/r/checkpoints/final/w.bin") == b"123"
