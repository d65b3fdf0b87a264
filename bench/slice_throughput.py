"""Slice a generated OpenMathReasoning-layout Parquet pool: the Ray Data pipeline against a
single-process pandas/pyarrow baseline doing the same work (read, to the raw layout, annotate,
per-family candidates, holdout/probe A/train selection, items.parquet).

    python bench/slice_throughput.py                      # 100k and 1M rows (about 10 minutes on 2 cores)
    python bench/slice_throughput.py --sizes 20000,200000 # quicker

Each run is a fresh subprocess; its peak memory is the peak of the summed PSS (proportional set
size, so shared object-store pages count once) of its process tree (driver, raylet, GCS, workers),
sampled every 0.25 s; wall time includes starting Python (and Ray). Prints rows/s and peak memory of both at each size, their ratios,
and how each one's memory grows with a 10x larger input. Both must produce the same items.parquet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SHARDS_PER_100K = 2


def config(path: str) -> dict:
    return {"name": "bench", "seed": 0, "batch_size": 8192, "fill": {"enabled": False},
            "sources": [{"kind": "omr", "path": path}]}


def run_ray(path: str, out: str) -> dict:
    import ray

    from squigglray.data.config import SliceConfig
    from squigglray.jobs.slice import build_slice

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    m = build_slice(SliceConfig.model_validate(config(path)), out=out, log=lambda *_: None)
    return {"items_sha256": m.hashes["items_sha256"], "rows": m.pool["rows"]}


def run_pandas(path: str, out: str) -> dict:
    """The same work in one process: whole tables in memory, no streaming."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from squigglray.data.annotate import Annotator
    from squigglray.data.candidates import top_candidates
    from squigglray.data.config import SliceConfig
    from squigglray.data.rules import DEFAULT_RULES
    from squigglray.data.select import select_slice
    from squigglray.data.slice import parquet_bytes, sha256
    from squigglray.data.sources import list_files, omr_to_raw
    from squigglray.schemas.pool import items_table

    cfg = SliceConfig.model_validate(config(path))
    _, files = list_files(path, (".parquet",))
    table = pa.concat_tables([pq.read_table(f).append_column("path", pa.array([f] * pq.read_metadata(f).num_rows))
                              for f in files])
    annotator = Annotator(DEFAULT_RULES, cfg.seed)
    annotated = annotator(omr_to_raw(table))
    cands = top_candidates(annotated.to_pandas(), cfg.quotas.candidates, cfg.quotas.include_unassigned)
    sel = select_slice(cands.reset_index(drop=True), cfg, annotator)
    data = parquet_bytes(items_table(sel.items))
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "items.parquet").write_bytes(data)
    return {"items_sha256": sha256(data), "rows": table.num_rows}


def measure(kind: str, path: str) -> dict:
    """Run one pipeline in a subprocess; wall time and the peak summed PSS of its process tree."""
    out = tempfile.mkdtemp(prefix=f"slice-bench-{kind}-")
    result_file = Path(out) / "result.json"
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, path, out, str(result_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    peak, seen = 0, 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        total = 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        seen = max(seen, len(tree))
        for p in tree:
            try:
                total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        peak = max(peak, total)
        time.sleep(0.25)
    wall = time.time() - t0
    if proc.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"{kind} run failed (exit {proc.returncode}); run it alone: "
                           f"python {__file__} --child {kind} {path} {out} {result_file}")
    res = json.loads(result_file.read_text())
    return {**res, "seconds": wall, "rows_per_s": res["rows"] / wall, "peak_gib": peak / 2**30, "processes": seen}


def pool(rows: int) -> str:
    from squigglray.data.omr_sample import write_omr_shards

    folder = Path(tempfile.gettempdir()) / f"squigglray-bench-omr-{rows}"
    if not (folder / "done").exists():
        shards = max(1, SHARDS_PER_100K * rows // 100_000)
        write_omr_shards(folder, rows, shards=shards, seed=0)
        (folder / "done").write_text("")
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated pool sizes (rows)")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "PATH", "OUT", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path, out, result = args.child
        res = (run_ray if kind == "ray" else run_pandas)(path, out)
        Path(result).write_text(json.dumps(res))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    results = {}
    for n in sizes:
        path = pool(n)
        results[n] = {k: measure(k, path) for k in ("pandas", "ray")}
        r, b = results[n]["ray"], results[n]["pandas"]
        same = r["items_sha256"] == b["items_sha256"]
        print(f"{r['rows']:>9,} rows | ray data {r['rows_per_s']:8,.0f} rows/s, peak {r['peak_gib']:5.2f} GiB "
              f"({r['processes']} processes) | "
              f"pandas {b['rows_per_s']:8,.0f} rows/s, peak {b['peak_gib']:5.2f} GiB | speed ratio "
              f"{r['rows_per_s'] / b['rows_per_s']:.2f}, memory ratio {r['peak_gib'] / b['peak_gib']:.2f} | "
              f"same items.parquet: {same}")
        if not same:
            raise SystemExit("the two pipelines disagree")
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        for k in ("ray", "pandas"):
            growth = results[hi][k]["peak_gib"] / results[lo][k]["peak_gib"]
            print(f"{k}: peak memory grows {growth:.2f}x for {hi / lo:.0f}x the rows")


if __name__ == "__main__":
    main()
