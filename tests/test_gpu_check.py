"""`scripts/gpu_check.sh --device cpu`, as a user runs it: the real-scale dynamics path (the 350m
preset at reduced width) from a slice through streaming data, 2 gloo workers, geometry, events and
the report, so the script a lent GPU runs cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from squigglray.paths import ArtifactStore

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_the_350m_path_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([str(ROOT / "scripts/gpu_check.sh"), "--device", "cpu", "--data-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout[proc.stdout.index("gpu_check cpu:"):]
    assert "350m (reduced width) from slice gpu-check-" in lines and "2 worker(s)" in lines
    assert "tokens/s" in lines and "capture overhead" in lines and "peak memory n/a (cpu)" in lines
    store = ArtifactStore(tmp_path / "data")
    (rid,) = [p.name for p in (tmp_path / "data/runs").iterdir()]
    saved = store.read_json(store.run_config(rid))
    assert saved["config"]["model"]["preset"] == "350m" and saved["config"]["data"]["stream"]
    assert saved["streamed"] == "slice" and saved["provenance"]["dataset_slice_id"].startswith("gpu-check-")
    res = store.read_json(f"runs/{rid}/resources.json")
    assert res["world_size"] == 2 and res["tokens_per_s"] > 0 and 0 < res["capture_overhead"] < 1
    assert store.read_parquet(store.geometry_state(rid)).num_rows > 0
    assert store.exists(store.events_candidates(rid)) and store.exists(store.run_report(rid))
    (exp,) = list((tmp_path / "data/experiments").iterdir())
    assert "## Hypotheses" in (exp / "report.md").read_text()
