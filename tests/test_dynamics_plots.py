"""Dynamics figures (report/dynamics_plots.py): synthetic tables in, decodable PNG out, empty inputs fine."""

from __future__ import annotations

import io
import json

import matplotlib.image as mpimg
import numpy as np
import pyarrow as pa
import pytest

from squigglray.events.schema import EVENT_FAMILIES_SCHEMA, EVENTS_SCHEMA
from squigglray.report.dynamics_plots import (
    correlation_png,
    curves_png,
    geometry_trends_png,
    seed_alignment_raster_png,
    seed_colors,
)

PNG_SIG = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)
STEPS = [1, 2, 3, 5, 8, 13, 20, 30, 50, 80, 120, 160, 200, 250, 300, 350, 400, 450, 500, 550]
MAX_STEPS = 550
METRICS = ("frobenius_norm", "gradient_norm", "effective_rank_entropy")


def _check_png(data: bytes, min_w: int = 200, min_h: int = 150) -> np.ndarray:
    assert isinstance(data, bytes) and data[:8] == PNG_SIG
    img = mpimg.imread(io.BytesIO(data), format="png")
    h, w = img.shape[:2]
    assert w >= min_w and h >= min_h
    assert w < 5000 and h < 5000
    assert float(np.std(img[..., :3])) > 0  # not a blank canvas
    return img


def _scalars(seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    s = np.array(STEPS, dtype=np.int64)
    loss = 5.0 * s.astype(float) ** -0.3 + 0.05 * rng.random(len(s))
    acc_a = np.clip(np.log1p(s) / 7.0 + 0.02 * seed, 0, 1)
    acc_b = acc_a * 0.6
    acc_b[0] = np.nan  # a missing probe value
    return pa.table({
        "step": pa.array(s, pa.int64()),
        "loss": loss,
        "loss_window_mean": np.convolve(loss, np.ones(3) / 3, mode="same"),
        "lr": np.full(len(s), 3e-4),
        "grad_norm": 2.0 / np.sqrt(s) + 0.1,
        "tokens_seen": (s * 4096).astype(np.int64),
        "wall_s": s * 0.5,
        "phase": ["warmup" if x < 50 else ("easy" if x < 300 else "hard") for x in s],
        "probe_a_loss": loss * 1.1,
        "probe_a_answer_acc": acc_a,
        "probe_b_loss": loss * 1.4,
        "probe_b_answer_acc": acc_b,
        "run_id": [f"run{seed}"] * len(s),
        "seed": pa.array([seed] * len(s), pa.int64()),
    })


def _geometry() -> pa.Table:
    cols: dict[str, list] = {k: [] for k in ("run_id", "step", "layer", "module", "metric", "value", "seed")}
    for seed in SEEDS:
        for step in STEPS:
            for layer in (0, 1):
                for metric in METRICS:
                    mods = ["hidden"] if metric == "effective_rank_entropy" else ["self_attn.q_proj", "mlp.down_proj"]
                    for j, mod in enumerate(mods):
                        cols["run_id"].append(f"run{seed}")
                        cols["step"].append(step)
                        cols["layer"].append(layer)
                        cols["module"].append(mod)
                        cols["metric"].append(metric)
                        cols["value"].append(1.0 + layer + j + 0.1 * np.log(step) + 0.01 * seed)
                        cols["seed"].append(seed)
    return pa.table({k: pa.array(v, pa.int64() if k in ("step", "layer", "seed") else None)
                     for k, v in cols.items()})


def _event(seed: int, metric: str, layer: int, module: str, kind: str, step: int, members=(), diag=None) -> dict:
    eid = f"run{seed}:{metric}:{layer}:{module}:{kind}:{step}"
    return {
        "event_id": eid, "run_id": f"run{seed}", "seed": seed, "metric": metric, "layer": layer,
        "module": module, "kind": kind, "step": step, "step_start": step - 1, "step_end": step + 5,
        "step_frac": step / MAX_STEPS, "magnitude": 1.5, "score": 3.0, "penalty": 1.0, "n_points": 20,
        "n_members": max(1, len(members)), "members": json.dumps(list(members)),
        "diagnostics": json.dumps(diag or {}), "baseline_id": "", "dataset_slice_hash": "h",
        "config_hash": "c", "package_version": "0.1.0",
    }


def _events() -> pa.Table:
    rows = []
    for seed in SEEDS:
        shift = 10 * seed
        rows.append(_event(seed, "frobenius_norm", 0, "self_attn.q_proj", "mean_shift", 100 + shift))
        rows.append(_event(seed, "effective_rank_entropy", 1, "hidden", "slope_change", 200 + shift))
        rows.append(_event(seed, "loss", -1, "scalar", "mean_shift", 300 + shift))
        rows.append(_event(seed, "gradient_norm", -2, "mlp.down_proj", "mean_shift", 50))  # layer not plotted
        rows.append(_event(seed, "__composite__", -2, "__composite__", "composite", 400 + shift,
                           members=["a", "b"], diag={"frobenius_norm|0|self_attn.q_proj": {"magnitude": 1.0},
                                                     "gradient_norm|1|mlp.down_proj": {"magnitude": 2.0}}))
    return pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)


def _families(events: pa.Table) -> pa.Table:
    ev = events.to_pylist()

    def fam(metric, kind, support_seeds, fid):
        ids = [e["event_id"] for e in ev if e["metric"] == metric and e["seed"] in support_seeds]
        fr = [e["step_frac"] for e in ev if e["event_id"] in ids]
        return {
            "family_id": fid, "metric": metric, "layer": 0, "module": "x", "kind": kind, "sign": 1,
            "t_center": float(np.mean(fr)), "t_spread": float(np.ptp(fr)), "step_center": 0.0,
            "support": len(support_seeds), "n_seeds": len(SEEDS), "seeds": json.dumps(list(support_seeds)),
            "event_ids": json.dumps(ids), "mean_magnitude": 1.0, "structural": len(support_seeds) >= 2,
        }

    return pa.Table.from_pylist([
        fam("frobenius_norm", "mean_shift", [0, 1, 2], "f1"),
        fam("effective_rank_entropy", "slope_change", [0, 2], "f2"),
        fam("loss", "mean_shift", [1], "f3"),  # not structural
        {"family_id": "f4", "metric": "gradient_norm", "layer": 0, "module": "x", "kind": "mean_shift",
         "sign": -1, "t_center": 0.7, "t_spread": 0.05, "step_center": 0.0, "support": 2, "n_seeds": 3,
         "seeds": "[0, 1]", "event_ids": '["missing:1", "missing:2"]', "mean_magnitude": -1.0,
         "structural": True},  # members not among the events
    ], schema=EVENT_FAMILIES_SCHEMA)


def test_seed_colors_stable():
    c = seed_colors([2, 0, 1])
    assert c == seed_colors([0, 1, 2]) and len(set(c.values())) == 3


def test_curves_png():
    _check_png(curves_png({s: _scalars(s) for s in SEEDS}, "3 seeds"), 600, 400)
    _check_png(curves_png({7: _scalars(7)}, "one seed"), 600, 400)
    # missing probe columns and an empty run
    t = _scalars(1).drop(["probe_a_loss", "probe_b_loss", "probe_a_answer_acc", "probe_b_answer_acc", "phase"])
    _check_png(curves_png({1: t, 2: _scalars(2).slice(0, 0)}, "partial"), 600, 400)
    _check_png(curves_png({}, "nothing"), 600, 400)


def test_geometry_trends_png():
    geo, ev = _geometry(), _events()
    a = _check_png(geometry_trends_png(geo, ev, list(METRICS), seed_or_run=1, title="geo"), 600, 400)
    b = _check_png(geometry_trends_png(geo, ev, ["frobenius_norm", "not_a_metric"], seed_or_run="run0",
                                       title="geo"), 600, 200)
    assert a.shape[0] > b.shape[0]  # one row per present metric
    _check_png(geometry_trends_png(geo, None, list(METRICS), title="no events, first run"))
    _check_png(geometry_trends_png(geo, ev.slice(0, 0), ["nope"], seed_or_run=0, title="no metric"))
    _check_png(geometry_trends_png(geo.slice(0, 0), ev, list(METRICS), seed_or_run=0, title="empty"))
    _check_png(geometry_trends_png(geo, ev, list(METRICS), seed_or_run=99, title="unknown seed"))


def test_seed_alignment_raster_png():
    ev = _events()
    fam = _families(ev)
    _check_png(seed_alignment_raster_png(ev, None, fam, "step_frac"), 600, 250)
    aligned = np.asarray(ev.column("step_frac").to_pylist()) * 0.9
    aligned[0] = np.nan
    _check_png(seed_alignment_raster_png(ev, aligned, fam, "aligned"), 600, 250)
    _check_png(seed_alignment_raster_png(ev, None, None, "no families"), 600, 250)
    one = ev.filter(pa.compute.equal(ev.column("seed"), 0))
    _check_png(seed_alignment_raster_png(one, None, fam.slice(0, 0), "one seed"), 400, 150)
    _check_png(seed_alignment_raster_png(ev.slice(0, 0), None, fam, "empty"))
    _check_png(seed_alignment_raster_png(None, None, None, "none"))
    with pytest.raises(ValueError):
        seed_alignment_raster_png(ev, np.zeros(2), fam, "bad")


def test_seed_alignment_raster_many_events():
    rng = np.random.default_rng(0)
    kinds = ["mean_shift", "slope_change", "composite"]
    rows = [_event(int(s), ["frobenius_norm", "effective_rank_entropy", "loss", "__composite__"][k % 4],
                   int(rng.integers(0, 4)), ["self_attn.q_proj", "hidden", "scalar", "__composite__"][k % 4],
                   kinds[k % 3], int(rng.integers(1, MAX_STEPS)))
            for k, s in enumerate(rng.integers(0, 5, size=400))]
    ev = pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)
    # 30 families, each linking one event per seed of the same metric
    by_seed: dict[int, list[dict]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], []).append(r)
    for v in by_seed.values():
        v.sort(key=lambda r: r["step"])
    fams = []
    for k in range(0, 60, 2):
        members = [by_seed[s][k] for s in sorted(by_seed)[: 2 + k % 4] if len(by_seed[s]) > k]
        fr = [m["step_frac"] for m in members]
        fams.append({
            "family_id": f"f{k}", "metric": members[0]["metric"], "layer": 0, "module": "x",
            "kind": "mean_shift", "sign": 1, "t_center": float(np.mean(fr)), "t_spread": float(np.ptp(fr)),
            "step_center": 0.0, "support": len(members), "n_seeds": 5,
            "seeds": json.dumps([m["seed"] for m in members]),
            "event_ids": json.dumps([m["event_id"] for m in members]), "mean_magnitude": 1.0,
            "structural": len(members) >= 2,
        })
    fam = pa.Table.from_pylist(fams, schema=EVENT_FAMILIES_SCHEMA)
    aligned = np.asarray(ev.column("step_frac").to_pylist())
    _check_png(seed_alignment_raster_png(ev, aligned, fam, "400 events"), 600, 300)


def test_correlation_png():
    rows = [
        {"source": "geometry", "n_jumps": 12, "hits": 9, "pairs": 20, "null_mean_pairs": 8.5, "p_value": 0.002},
        {"source": "geometry_composite", "n_jumps": 12, "hits": 4, "pairs": 4, "null_mean_pairs": 3.0, "p_value": 0.21},
        {"source": "loss", "n_jumps": 0, "hits": 0, "pairs": 0, "null_mean_pairs": 0.0, "p_value": None},
    ]
    _check_png(correlation_png(rows, "corr"), 300, 200)
    _check_png(correlation_png(rows[:1], "one"), 300, 200)
    _check_png(correlation_png([], "empty"))
