"""Seed 001's staged experiment on one model: diagnostics, joint Q-A, spot check, with gates.
`run_one` runs the stages of one config and writes its artifacts (the `squigglray dcm run` job and
every trial of the Tune sweep, tune_spaces/dcm_sweep.py, call it).

1. diagnostic: Q alone and A alone (modes [q] then [a]); gate: convergence rate >= gates.diagnostic;
2. joint: Q and A from the same slots (modes [q, a]); gate: >= gates.joint;
3. spot_check: greedy decodes of a few converged examples in both modes, shown in the report.

"Converged" in the gates is the headline criterion: teacher-forced token accuracy 1.0 on every
mode. Every row also carries seed 001's loss rule, the greedy exact match, the baselines and a
health label, and each stage carries the dataset-level thresholds table.
"""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import numpy as np
import torch

from squigglray import __version__
from squigglray.config import config_hash
from squigglray.dcm.config import DcmConfig, experiment_id
from squigglray.dcm.criteria import baselines, dataset_table, health, seed_converged
from squigglray.dcm.data import QAPair, load_pairs, load_paraphrases
from squigglray.dcm.optimizer import SlotResult, optimize
from squigglray.dcm.slots import Frozen, freeze, greedy_decode, slot_prompt
from squigglray.paths import ArtifactStore


def pairs_hash(pairs: list[QAPair]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(f"{p.pair_id}\t{p.question}\t{p.answer}\t{p.q_variants}\t{p.a_variants}\n".encode())
    return h.hexdigest()


def decode_rows(fz: Frozen, cfg: DcmConfig, pairs: list[QAPair], results: list[SlotResult]) -> list[dict]:
    """Greedy decode of every example in every mode: the exact-match headline."""
    prompts, lens, keys = [], [], []
    text = {"q": lambda p: p.question, "a": lambda p: p.answer}
    for p, r in zip(pairs, results):
        for m in cfg.modes:
            target = fz.encode(text[m](p), cfg.eos)
            prompts.append(slot_prompt(fz, m, r.slots))
            lens.append(len(target) + 1)
            keys.append((p.pair_id, m, target))
    outs = greedy_decode(fz, prompts, lens)
    decoded: dict[str, dict] = {}
    for (pid, m, target), out in zip(keys, outs):
        d = decoded.setdefault(pid, {"exact": {}, "text": {}})
        d["exact"][m] = out == target
        d["text"][m] = fz.tokenizer.decode([t for t in out if t != fz.eos_id])
    return [decoded[p.pair_id] for p in pairs]


def stage_rows(fz: Frozen, cfg: DcmConfig, pairs: list[QAPair], progress=None) -> tuple[list[dict], dict]:
    """Per-example rows (JSON-able) and the optimized slots c* by pair id."""
    base = baselines(fz, cfg, pairs)
    results = optimize(fz, cfg, pairs, progress)
    decoded = decode_rows(fz, cfg, pairs, results)
    rows = [{
        "pair_id": p.pair_id, "k": cfg.k, "modes": list(cfg.modes), "converged": r.converged,
        "target": {m: p.question if m == "q" else p.answer for m in cfg.modes},
        "converged_step": r.converged_step, "steps": r.steps, "restart": r.restart, "seconds": r.seconds,
        "loss": r.loss, "token_acc": r.token_acc, "baselines": b, "seed_converged": seed_converged(r.loss, b),
        "exact_match": d["exact"], "decoded": d["text"], "exact": r.converged and all(d["exact"].values()),
        "health": health(r.curve), "curve": r.curve,
    } for p, r, b, d in zip(pairs, results, base, decoded)]
    return rows, {r.pair_id: r.slots.cpu() for r in results}


def summarize(rows: list[dict]) -> dict:
    conv = [r for r in rows if r["converged"]]
    health_counts: dict[str, int] = {}
    for r in rows:
        health_counts[r["health"]] = health_counts.get(r["health"], 0) + 1
    return {
        "n": len(rows),
        "convergence_rate": len(conv) / len(rows) if rows else 0.0,
        "exact_match_rate": sum(r["exact"] for r in rows) / len(rows) if rows else 0.0,
        "seed_rule_rate": sum(r["seed_converged"] for r in rows) / len(rows) if rows else 0.0,
        "final_loss": {m: float(np.mean([r["loss"][m] for r in rows])) for m in rows[0]["loss"]} if rows else {},
        "steps_to_converge": float(np.mean([r["converged_step"] for r in conv])) if conv else None,
        "seconds_to_converge": float(np.mean([r["seconds"] for r in conv])) if conv else None,
        "health": health_counts,
        "thresholds": dataset_table(rows),
    }


def run_stages(fz: Frozen, cfg: DcmConfig, pairs: list[QAPair], log=print, progress=None) -> dict:
    """The stages of cfg.stages in order; a failed gate stops the run (recorded, not raised).
    The optimized slots are under "slots" (tensors: pop them before writing JSON)."""
    out: dict = {"schema": "dcm_result@1.0", "config": cfg.model_dump(mode="json"), "config_hash": config_hash(cfg),
                 "seed": cfg.seed, "dataset_hash": pairs_hash(pairs), "n_pairs": len(pairs),
                 "package_version": __version__, "stages": {}, "stopped_at": None, "slots": {}}
    t0 = time.perf_counter()
    plan = []
    if "diagnostic" in cfg.stages:
        plan += [("diagnostic_q", ["q"], "diagnostic"), ("diagnostic_a", ["a"], "diagnostic")]
    if "joint" in cfg.stages:
        plan.append(("joint", list(cfg.modes), "joint"))
    for name, modes, gate in plan:
        rows, out["slots"][name] = stage_rows(fz, cfg.model_copy(update={"modes": modes}), pairs, progress)
        summary = summarize(rows)
        passed = summary["convergence_rate"] >= cfg.gates.get(gate, 0.0)
        out["stages"][name] = {"modes": modes, "summary": summary, "gate": cfg.gates.get(gate), "passed": passed,
                               "rows": rows}
        log(f"{name}: convergence {summary['convergence_rate']:.0%}, exact match {summary['exact_match_rate']:.0%}, "
            f"seed rule {summary['seed_rule_rate']:.0%} ({'passed' if passed else 'below'} gate {cfg.gates.get(gate)})")
        if not passed:
            out["stopped_at"] = name
            break
    if "spot_check" in cfg.stages and out["stopped_at"] is None and "joint" in out["stages"]:
        good = [r for r in out["stages"]["joint"]["rows"] if r["converged"]][: cfg.spot_check]
        out["spot_check"] = [{k: r[k] for k in ("pair_id", "target", "decoded", "exact_match")} for r in good]
    out["seconds"] = time.perf_counter() - t0
    return out


def load_frozen(cfg: DcmConfig, store: ArtifactStore):
    from squigglray.models import load_model

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.startswith("cuda"))
    model, tok = load_model(cfg.model, store, dtype=torch.bfloat16 if bf16 else torch.float32)
    return freeze(model.to(device), tok, cfg.mode_words)


def pairs_for(cfg: DcmConfig):
    pairs = load_pairs(dict(cfg.dataset))
    return load_paraphrases(cfg.paraphrases, pairs) if cfg.paraphrases else pairs


def run_one(cfg: DcmConfig, data_dir: str | None = None, log=print, write: bool = True) -> dict[str, Any]:
    """The staged run of one config; writes its artifacts under experiments/<id>/."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    store = ArtifactStore(data_dir)
    pairs = pairs_for(cfg)
    fz = load_frozen(cfg, store)
    out = run_stages(fz, cfg, pairs, log=log)
    slots = out.pop("slots")
    exp = experiment_id(cfg)
    out["experiment_id"] = exp
    if write:
        from squigglray.report.dcm_report import write_run_report

        store.write_json(f"{store.experiment_dir(exp)}/result.json", out)
        buf = io.BytesIO()
        torch.save(slots, buf)
        store.write_bytes(f"{store.experiment_dir(exp)}/slots.pt", buf.getvalue())
        write_run_report(store, exp, out)
    return out
