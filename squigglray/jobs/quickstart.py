"""The main job: train (or reuse) the base model on the families, evaluate it held-out per family.

    python -m squigglray.jobs.quickstart            # tiny model, ~10 min on 2 CPU cores
    python -m squigglray.jobs.quickstart --smoke    # nano model, about a minute
    ray job submit --working-dir . -- python -m squigglray.jobs.quickstart

Writes runs/<run_id>/{config.json,run.json,scalars.parquet,checkpoints/final,reports/*} under the
data dir and prints the per-family held-out accuracy table.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from squigglray import __version__
from squigglray.config import load_config
from squigglray.eval import heldout_instances, summarize
from squigglray.paths import ArtifactStore
from squigglray.report.plots import loss_curve_png
from squigglray.schemas import EvalRow, RunRecord
from squigglray.training import BaseTrainConfig, find_reusable
from squigglray.training.data import Pool, build_pool


def packaged_config(name: str) -> Path:
    return Path(str(resources.files("squigglray") / "configs" / f"{name}.yaml"))


def train_or_reuse(cfg: BaseTrainConfig, store: ArtifactStore, reuse: bool = True, log=print,
                   pool: Pool | None = None) -> tuple[RunRecord, bool]:
    """Train as a Ray task using every CPU of the (local) cluster, unless this config already ran."""
    from actors.base_model import train_base_task
    from squigglray.jobs.ray_runtime import cluster_cpus
    from squigglray.training.base import publish

    if reuse and (rec := find_reusable(cfg, store, pool.slice_hash if pool else None)):
        log(f"reusing run {rec.provenance.run_id} (config hash {rec.provenance.config_hash[:10]} matches)")
        publish(store, cfg.model.preset, rec.provenance.run_id)
        return rec, True
    cpus = cluster_cpus()
    threads = cfg.train.threads or cpus
    task = train_base_task.options(num_cpus=min(threads, cpus))
    rec = RunRecord.model_validate(ray.get(task.remote(cfg.model_dump(mode="json"), store.uri, threads)))
    return rec, False


def evaluate(cfg: BaseTrainConfig, store: ArtifactStore, run_id: str, pool: Pool) -> list[dict[str, Any]]:
    """Held-out instances (eval seed, training problems excluded), sharded over Ray tasks."""
    from actors.base_model import eval_shard_task
    from squigglray.jobs.ray_runtime import cluster_cpus

    items = heldout_instances(cfg.data.resolved_families(), cfg.eval.levels, cfg.eval.n_per_family,
                              cfg.eval.seed, pool.problems())
    payload = [{"level": lv, "instance": x.model_dump(mode="json", by_alias=True)} for lv, x in items]
    shards = max(1, min(cluster_cpus(), len(payload)))
    ckpt = str(store.download_dir(f"{store.run_checkpoints(run_id)}/final"))
    refs = [
        eval_shard_task.remote(ckpt, payload[i::shards], cfg.eval.max_new_tokens, cfg.eval.code_timeout_s,
                               cfg.eval.batch_size)
        for i in range(shards)
    ]
    return [row for shard in ray.get(refs) for row in shard]


def report_markdown(rec: RunRecord, table: list[EvalRow], seconds: dict[str, float], reused: bool) -> str:
    p = rec.provenance
    lines = [
        f"# Quickstart report: {p.run_id}", "",
        f"- model: `{rec.model_preset}`, {rec.n_params:,} parameters (Llama-style: RMSNorm, RoPE, SwiGLU, tied embeddings)",
        f"- training: {rec.steps} steps, {rec.tokens_seen:,} trace tokens, {rec.train_seconds:.0f} s"
        + (" (reused from an earlier run)" if reused else ""),
        f"- final training loss: {rec.final_loss:.4f}",
        f"- seed {p.seed}, config hash `{p.config_hash[:16]}`, slice `{p.dataset_slice_id}`, squigglray {p.package_version}",
        f"- curriculum: {p.curriculum}",
        f"- wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()), "",
        "## Held-out accuracy per family (greedy, one code round, exact match)", "",
        "| family | n | code exact | boxed exact | well-formed |", "|---|---:|---:|---:|---:|",
    ]
    for r in table:
        name = f"**{r.family_id}**" if r.family_id == "ALL" else r.family_id
        lines.append(f"| {name} | {r.n} | {r.code_acc:.2f} | {r.boxed_acc:.2f} | {r.format_acc:.2f} |")
    lines += ["", "`code exact`: the generated ```python block, run in a subprocess, prints the answer. "
              "`boxed exact`: the final \\boxed{} equals the answer."]
    return "\n".join(lines) + "\n"


def write_eval(store: ArtifactStore, rec: RunRecord, rows: list[dict[str, Any]], table: list[EvalRow], md: str) -> None:
    rid, p = rec.provenance.run_id, rec.provenance
    t = pa.Table.from_pylist(rows)
    for col, val in (("run_id", rid), ("seed", p.seed), ("config_hash", p.config_hash),
                     ("dataset_slice_hash", p.dataset_slice_hash), ("package_version", __version__)):
        t = t.append_column(col, pa.array([val] * len(t)))
    store.write_parquet(f"{store.run_dir(rid)}/reports/heldout_eval.parquet", t)
    store.write_json(f"{store.run_dir(rid)}/reports/heldout_summary.json", {
        "provenance": p.model_dump(), "table": [r.model_dump() for r in table],
    })
    scalars = store.read_parquet(store.run_scalars(rid)).to_pydict()
    png = loss_curve_png(scalars["step"], scalars["loss"], scalars["phase"], f"{rid}: training loss")
    store.write_bytes(f"{store.run_dir(rid)}/reports/plots/loss.png", png)
    store.write_text(store.run_report(rid), md + "\n![training loss](plots/loss.png)\n")


def print_table(table: list[EvalRow], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("family", "n", "code exact", "boxed exact", "well-formed"):
        t.add_column(col, justify="left" if col == "family" else "right")
    for r in table:
        t.add_row(r.family_id, str(r.n), f"{r.code_acc:.2f}", f"{r.boxed_acc:.2f}", f"{r.format_acc:.2f}",
                  style="bold" if r.family_id == "ALL" else None)
    Console().print(t)


def quickstart(cfg: BaseTrainConfig, data_dir: str | None = None, reuse: bool = True) -> dict[str, Any]:
    from squigglray.jobs.ray_runtime import ensure_ray

    store = ArtifactStore(data_dir)
    ensure_ray()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    pool = build_pool(cfg)  # once: its hash decides reuse, its problems are kept out of evaluation
    rec, reused = train_or_reuse(cfg, store, reuse, pool=pool)
    seconds["train"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    rows = evaluate(cfg, store, rec.provenance.run_id, pool)
    seconds["eval"] = time.perf_counter() - t1
    table = summarize(rows)
    md = report_markdown(rec, table, seconds, reused)
    write_eval(store, rec, rows, table, md)
    print_table(table, f"held-out accuracy: {rec.provenance.run_id} ({rec.n_params:,} params)")
    print(f"report: {store.full(store.run_report(rec.provenance.run_id))}")
    return {"run": rec, "table": table, "rows": rows, "reused": reused, "seconds": seconds}


def load_quickstart_config(smoke: bool, path: str | None, overrides: list[str]) -> BaseTrainConfig:
    return load_config(BaseTrainConfig, path or packaged_config("smoke" if smoke else "quickstart"), overrides)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="nano model, a few steps (about a minute)")
    ap.add_argument("--config", help="YAML config (default: the packaged quickstart or smoke config)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="dotted override a.b=value")
    ap.add_argument("--data-dir", default=None, help="artifact root (default $SQUIGGLRAY_DATA or ./data)")
    ap.add_argument("--no-reuse", action="store_true", help="train even if this config already ran")
    a = ap.parse_args(argv)
    cfg = load_quickstart_config(a.smoke, a.config, a.overrides)
    quickstart(cfg, a.data_dir, reuse=not a.no_reuse)


if __name__ == "__main__":
    main()
