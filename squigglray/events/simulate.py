"""Simulated multi-seed experiments with the features real runs have, to calibrate the squiggle tests.

A test that was only tried on data drawn from its own null assumption has not been tested. These
generators draw experiments the way the dynamics experiment's data look, with and without a
planted effect of stated size, for the three tests of the experiment report:

- **H1, seed invariance** (`event_experiment`): an EVENTS_SCHEMA table of single-metric change
  points for n seeds over the tiny model's sites (4 blocks x 7 matrices, 5 hidden layers) and
  metrics, with aligned times in [0, 1].
- **H2, events before probe jumps** (`jump_experiment`): per run, geometry event times and
  probe-jump times.
- **H3, beyond loss** (`interval_experiment`): per run, the per-probe-interval feature rows
  `beyond_loss.beyond_loss_test` reads (loss features, geometry features, accuracy increments).

Null scenarios (the seeds share nothing but what every run of one config shares):

=================  ==============================================================================
``uniform``        event / jump times uniform on [0, 1]
``concentrated``   times from one peaked density confined to the detector's window [0.25, 0.95]
                   (60% around t = 0.55, sd 0.06): most events of every seed fall in one stretch
``schedule``       concentrated, plus schedule-locked events: at each mark of ``SCHEDULE_MARKS``
                   (warmup end, cadence change, curriculum switch) the same series break in
                   every seed (weight norms of the first and last block), and probe jumps follow
                   the curriculum switch; the tests get the marks and must leave them out
``dependent``      concentrated, but change points come in shocks: one shock breaks a whole
                   block (several matrices) in dependent metric bundles (update_norm with
                   relative_update; norms with stable rank; gradient norm with cosine), so
                   events are far from independent; in H3 geometry follows loss non-linearly
=================  ==============================================================================

``effect`` > 0 plants the alternative on top of ``concentrated`` (see each generator for its
size). Everything is drawn from the Generator passed in: same seed, same experiment.
``python bench/calibration.py`` runs the tests on them; tests/test_calibration.py is the fast check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from squigglray.events.schema import EVENTS_SCHEMA

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")  # written by bench/calibration.py
SCENARIOS = ("uniform", "concentrated", "schedule", "dependent")
SCHEDULE_MARKS = (0.57, 0.70, 0.80)  # log-step times of warmup end (30), cadence change (64), curriculum (120) at 400
WINDOW = (0.25, 0.95)
N_LAYERS = 4
MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
WEIGHT_BUNDLES = (("update_norm", "relative_update"), ("frobenius_norm", "spectral_norm", "stable_rank_fro_spec"),
                  ("gradient_norm", "gradient_cosine"))
HIDDEN_BUNDLES = (("effective_rank_entropy", "activation_anisotropy"), ("representation_drift",))
LOCKED_METRICS = ("frobenius_norm", "spectral_norm", "update_norm")  # series that follow the schedule ...
LOCKED_LAYERS = (0, N_LAYERS - 1)  # ... in the first and last block: site-specific, so relabelling alone can't absorb it


def recorded_calibration() -> dict | None:
    """The figures bench/calibration.py last wrote (the report quotes them), or None."""
    return json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.exists() else None


def series_list() -> list[tuple[int, str, str]]:
    """Every (layer, module, metric) series of the tiny model's capture."""
    out = [(layer, mod, m) for layer in range(N_LAYERS) for mod in MODULES for b in WEIGHT_BUNDLES for m in b]
    out += [(layer, "hidden", m) for layer in range(-1, N_LAYERS) for b in HIDDEN_BUNDLES for m in b]
    return out


def draw_times(rng: np.random.Generator, n: int, scenario: str) -> np.ndarray:
    """n times from the scenario's background density."""
    if scenario == "uniform":
        return rng.random(n)
    peak = rng.random(n) < 0.6
    t = np.where(peak, rng.normal(0.55, 0.06, n), rng.uniform(*WINDOW, n))
    return np.clip(t, *WINDOW)


def _check(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")


# --------------------------------------------------------------------------- H1: event tables


def event_experiment(rng: np.random.Generator, scenario: str = "concentrated", n_seeds: int = 3,
                     rate: float = 1.0, effect: int = 0) -> tuple[pa.Table, np.ndarray]:
    """(events, aligned t) of one simulated experiment.

    Background: each series has Poisson(``rate``) change points per seed, kind and sign at random.
    ``effect`` = k plants k shared series: chosen once, each breaks in every seed (probability 0.9)
    at its own time (drawn from the background density, so timing alone cannot tell it) +- N(0, 0.01),
    with the same kind and sign.
    """
    _check(scenario)
    series = series_list()
    base = "uniform" if scenario == "uniform" else "concentrated"
    planted = []
    if effect:
        idx = rng.choice(len(series), effect, replace=False)
        planted = [(series[i], draw_times(rng, 1, base)[0], str(rng.choice(["mean_shift", "slope_change"])),
                    float(rng.choice([-1.0, 1.0]))) for i in idx]
    rows: list[tuple] = []  # (seed, layer, module, metric, kind, sign, t)
    for seed in range(n_seeds):
        if scenario == "dependent":
            rows += _shocks(rng, seed, series, rate)
        else:
            counts = rng.poisson(rate, len(series))
            for (layer, mod, metric), c in zip(series, counts):
                for t in draw_times(rng, c, base):
                    rows.append((seed, layer, mod, metric, *_kind_sign(rng), t))
        if scenario == "schedule":
            for mark in SCHEDULE_MARKS:
                for layer, mod, metric in series:
                    if metric in LOCKED_METRICS and layer in LOCKED_LAYERS and rng.random() < 0.7:
                        rows.append((seed, layer, mod, metric, "slope_change", 1.0, mark + rng.normal(0, 0.004)))
        for (layer, mod, metric), t0, kind, sign in planted:
            if rng.random() < 0.9:
                rows.append((seed, layer, mod, metric, kind, sign, t0 + rng.normal(0, 0.01)))
    return events_table(rows)


def _kind_sign(rng: np.random.Generator) -> tuple[str, float]:
    return ("mean_shift", "slope_change")[rng.integers(2)], float(rng.choice([-1.0, 1.0]))


def _shocks(rng: np.random.Generator, seed: int, series, rate: float) -> list[tuple]:
    """Change points in dependent bundles: a shock breaks several matrices of one block at once."""
    rows = []
    n_events = rng.poisson(rate * len(series))
    while n_events > 0:
        t = draw_times(rng, 1, "concentrated")[0]
        kind, sign = _kind_sign(rng)
        if rng.random() < 0.85:
            layer = int(rng.integers(N_LAYERS))
            mods = [m for m in MODULES if rng.random() < 0.4] or [MODULES[rng.integers(len(MODULES))]]
            bundle = WEIGHT_BUNDLES[rng.integers(len(WEIGHT_BUNDLES))]
        else:
            layer, mods = int(rng.integers(-1, N_LAYERS)), ["hidden"]
            bundle = HIDDEN_BUNDLES[rng.integers(len(HIDDEN_BUNDLES))]
        for mod in mods:
            for metric in bundle:
                rows.append((seed, layer, mod, metric, kind, sign, t + rng.normal(0, 0.003)))
                n_events -= 1
    return rows


def events_table(rows: list[tuple]) -> tuple[pa.Table, np.ndarray]:
    """EVENTS_SCHEMA table (steps on a 400-step log clock) and aligned times from simulated rows."""
    n = len(rows)
    if not n:
        return EVENTS_SCHEMA.empty_table(), np.zeros(0)
    seed, layer, module, metric, kind, sign, t = (list(c) for c in zip(*rows))
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    step = np.round(np.expm1(t * np.log1p(400))).astype(np.int64)
    ids = [f"run{s}:{m}:{la}:{mo}:{k}:{st}:{i}" for i, (s, m, la, mo, k, st) in
           enumerate(zip(seed, metric, layer, module, kind, step))]
    cols = {
        "event_id": ids, "run_id": [f"run{s}" for s in seed], "seed": seed, "metric": metric, "layer": layer,
        "module": module, "kind": kind, "step": step, "step_start": step, "step_end": step, "step_frac": step / 400,
        "magnitude": np.asarray(sign, dtype=np.float64), "score": np.ones(n), "penalty": np.ones(n),
        "n_points": np.full(n, 48), "n_members": np.ones(n, dtype=np.int64), "members": ["[]"] * n,
        "diagnostics": ["{}"] * n, "baseline_id": [""] * n, "dataset_slice_hash": [""] * n,
        "config_hash": [""] * n, "package_version": [""] * n,
    }
    return pa.Table.from_pydict(cols, schema=EVENTS_SCHEMA), t


def near_marks(t: np.ndarray, marks=SCHEDULE_MARKS, tolerance: float = 0.05) -> np.ndarray:
    """Mask of times within ``tolerance`` of any schedule mark."""
    t = np.asarray(t, dtype=np.float64)
    if not len(marks):
        return np.zeros(len(t), dtype=bool)
    return np.min(np.abs(t[:, None] - np.asarray(marks)[None, :]), axis=1) <= tolerance


# --------------------------------------------------------------------------- H2: events and jumps


def jump_experiment(rng: np.random.Generator, scenario: str = "concentrated", n_runs: int = 3,
                    n_events: int = 30, n_jumps: int = 4, effect: float = 0.0, shock: int = 4
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(jump times per run, event times per run).

    ``effect`` = f plants the alternative: each jump is preceded, with probability f, by a shock of
    ``shock`` events (one block breaking in several metrics) 0-0.06 aligned time before it, inside
    the test's window.
    """
    _check(scenario)
    base = "uniform" if scenario == "uniform" else "concentrated"
    jumps, events = [], []
    for _ in range(n_runs):
        nj = max(1, rng.poisson(n_jumps))
        tj = draw_times(rng, nj, base)
        if scenario == "dependent":
            centers = draw_times(rng, max(1, n_events // 5), base)
            te = np.concatenate([c + rng.normal(0, 0.004, rng.integers(2, 9)) for c in centers])
        else:
            te = draw_times(rng, rng.poisson(n_events), base)
        if scenario == "schedule":
            tj = np.concatenate([tj, [SCHEDULE_MARKS[2] + 0.01]])
            te = np.concatenate([te, np.asarray(SCHEDULE_MARKS) + rng.normal(0, 0.004, len(SCHEDULE_MARKS))])
        if effect:
            lead = tj[rng.random(len(tj)) < effect] - rng.uniform(0.0, 0.06, 1)
            te = np.concatenate([te, np.repeat(lead, shock) + rng.normal(0, 0.003, shock * len(lead))])
        jumps.append(np.clip(tj, 0, 1))
        events.append(np.clip(te, 0, 1))
    return jumps, events


# --------------------------------------------------------------------------- H3: interval features


def interval_experiment(rng: np.random.Generator, scenario: str = "concentrated", n_runs: int = 3,
                        n_intervals: int = 30, n_items: int = 320, n_geometry: int = 8, effect: float = 0.0
                        ) -> list[dict[str, np.ndarray]]:
    """Per run: {'base': loss features, 'geometry': geometry features, 'y': accuracy increments}.

    Each run learns at its own speed: its loss decays and its probe accuracy rises (a logistic in
    time, midpoint uniform or concentrated by scenario) faster in a faster run; increments carry
    binomial noise of ``n_items`` probe items. Geometry features follow the loss (linearly, or
    non-linearly in ``dependent``), share a latent factor (dependent metrics) and AR(1) noise.
    ``effect`` = b plants the alternative: geometry feature 0 gets b x the run's true accuracy
    increment that the loss does not carry (standardized), so it predicts jumps beyond loss.
    """
    _check(scenario)
    out = []
    for _ in range(n_runs):
        t = np.linspace(0.05, 1.0, n_intervals + 1)  # probes follow the log-step cadence
        speed = rng.uniform(0.8, 1.25)
        loss = 0.4 + 2.5 * np.exp(-3.0 * speed * t) + rng.normal(0, 0.01, len(t))
        mid = (rng.uniform(0.2, 0.9) if scenario == "uniform" else rng.normal(0.6, 0.05)) / speed
        p = 0.05 + 0.85 / (1 + np.exp(-(t - mid) / 0.04))
        if scenario == "schedule":  # a capability jump at the curriculum switch in every run
            p = np.clip(p + 0.15 * (t >= SCHEDULE_MARKS[2]), 0, 1)
        acc = rng.binomial(n_items, p) / n_items
        y = np.diff(acc)
        dl = np.diff(np.log(loss))
        base = np.column_stack([np.log(loss[:-1]), dl, t[1:], dl ** 2])
        if scenario == "schedule":
            crossed = (t[:-1] < SCHEDULE_MARKS[2]) & (t[1:] >= SCHEDULE_MARKS[2])
            base = np.column_stack([base, crossed.astype(float)])
        latent = _ar1(rng, n_intervals, 0.6)
        geo = np.empty((n_intervals, n_geometry))
        for j in range(n_geometry):
            drive = np.tanh(5 * dl) if scenario == "dependent" else dl
            geo[:, j] = rng.normal(1, 0.3) * drive / (np.std(drive) + 1e-9) + latent + _ar1(rng, n_intervals, 0.5)
            if scenario == "schedule":
                geo[:, j] += 2.0 * base[:, -1]
        if effect:
            dp = np.diff(p)
            geo[:, 0] += effect * (dp - dp.mean()) / (dp.std() + 1e-9)
        out.append({"base": base, "geometry": geo, "y": y})
    return out


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    e = rng.normal(0, 1, n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + np.sqrt(1 - phi ** 2) * e[i]
    return x
