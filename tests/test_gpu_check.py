"""`scripts/gpu_check.sh --device cpu`: the real-scale dynamics path (the 350m preset at reduced width)
from a slice through streaming data, 2 gloo workers, geometry, events and the report, so the script a
lent GPU runs cannot rot. The check itself runs in-process on the session's Ray (what the script runs
is `bench/gpu_check.py`; a second interpreter and a second Ray would add ~25 s of start-up and test
nothing more); the script's own wiring is run as a user runs it, up to its argument parser."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from squigglray.paths import ArtifactStore

ROOT = Path(__file__).resolve().parents[1]


def test_the_script_runs_the_check_with_its_arguments():
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run([str(ROOT / "scripts/gpu_check.sh"), "--device", "cpu", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: gpu_check.py") and "--device {cuda,cpu}" in proc.stdout
    assert "test_engines" not in proc.stdout + proc.stderr  # the vLLM tests run on a GPU only


def test_gpu_check_runs_the_350m_path_on_cpu(ray_session, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = gpu_check.main(["--device", "cpu", "--data-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    lines = printed[printed.index("gpu_check cpu:"):]
    assert "350m (reduced width) from slice gpu-check-" in lines and "2 worker(s)" in lines
    assert "tokens/s" in lines and "capture overhead" in lines and "peak memory n/a (cpu)" in lines
    store = ArtifactStore(tmp_path / "data")
    (rid,) = [p.name for p in (tmp_path / "data/runs").iterdir()]
    assert out["run_id"] == rid
    saved = store.read_json(store.run_config(rid))
    assert saved["config"]["model"]["preset"] == "350m" and saved["config"]["data"]["stream"]
    assert saved["streamed"] == "slice" and saved["provenance"]["dataset_slice_id"].startswith("gpu-check-")
    res = store.read_json(f"runs/{rid}/resources.json")
    assert res["world_size"] == 2 and res["tokens_per_s"] > 0 and 0 < res["capture_overhead"] < 1
    assert store.read_parquet(store.geometry_state(rid)).num_rows > 0
    assert store.exists(store.events_candidates(rid)) and store.exists(store.run_report(rid))
    (exp,) = list((tmp_path / "data/experiments").iterdir())
    assert "## Hypotheses" in (exp / "report.md").read_text()
