"""Calibration of the dynamics report's three tests on simulated experiments (squigglray.events.simulate).

For each test (H1 seed invariance, H2 events before probe jumps, H3 beyond loss) and each null
scenario (uniform timing, concentrated timing, schedule-locked events, dependent metrics): the
false-positive rate at alpha = 0.05 over --sims simulated experiments, with its 95% Clopper-Pearson
interval; and the power at a stated planted effect. For comparison, the nulls the report used
before (rotation on the time circle) on the same simulations. Optionally (--series) H1 end to end:
raw metric series with schedule kinks through the real change-point detector.

    python bench/calibration.py                     # 500 experiments per cell, 2 processes, ~10 min on 2 cores
    python bench/calibration.py --sims 100 --perm 99 --write ''   # a quick look, nothing written

Writes the figures to squigglray/events/calibration.json (the experiment report quotes them beside
each verdict) unless --write ''.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.stats import beta

from squigglray.events import beyond_loss, correlation, invariance, simulate

ALPHA = 0.05
TOLERANCE = 0.05
EFFECTS = {  # the stated planted effects, one per test
    "seed_invariance": ("20 of 225 series break at a shared site-specific time in every seed (p = 0.9, sd 0.01), "
                        "on concentrated timing", dict(effect=20)),
    "probe_jumps": ("each probe jump preceded (p = 0.9) by a shock of 8 events 0-0.06 before it, "
                    "on 20 uniform-timed events per run", dict(effect=0.9, shock=8, n_events=20)),
    "beyond_loss": ("geometry feature 0 carries 1.5 sd of the true accuracy increment beyond loss, "
                    "on concentrated timing", dict(effect=1.5)),
}


def h1(i: int, scenario: str, n_perm: int, legacy: bool = False, **kw) -> float:
    rng = np.random.default_rng([1, simulate.SCENARIOS.index(scenario) if scenario in simulate.SCENARIOS else 9, i])
    events, t = simulate.event_experiment(rng, scenario, **kw)
    if legacy:  # the old rotation null, which also never left the schedule out
        return invariance.invariance_null(events, t, TOLERANCE, n_perm=n_perm, seed=i)["p_value"]
    exclude = simulate.near_marks(t, tolerance=TOLERANCE) if scenario == "schedule" else None
    return invariance.site_permutation_test(events, t, TOLERANCE, n_perm=n_perm, seed=i, exclude=exclude)["p_value"]


def h2(i: int, scenario: str, n_perm: int, legacy: bool = False, **kw) -> float:
    rng = np.random.default_rng([2, simulate.SCENARIOS.index(scenario), i])
    jumps, events = simulate.jump_experiment(rng, scenario, **kw)
    if scenario == "schedule" and not legacy:
        jumps = [j[~simulate.near_marks(j, tolerance=TOLERANCE)] for j in jumps]
        events = [e[~simulate.near_marks(e, tolerance=TOLERANCE)] for e in events]
    pairs, null, *_ = correlation.window_pairs_test(jumps, events, n_perm=n_perm, seed=i,
                                                    clock_mix=1.0 if legacy else correlation.CLOCK_MIX)
    return (1 + int(np.sum(null >= pairs))) / (1 + n_perm)


def h3(i: int, scenario: str, n_perm: int, legacy: bool = False, **kw) -> float:
    rng = np.random.default_rng([3, simulate.SCENARIOS.index(scenario), i])
    return beyond_loss.beyond_loss_test(simulate.interval_experiment(rng, scenario, **kw), n_perm=n_perm,
                                        seed=i)["p_value"]


TESTS = {"seed_invariance": h1, "probe_jumps": h2, "beyond_loss": h3}
LEGACY = {"seed_invariance": "rotation per (seed, event type), no schedule exclusion",
          "probe_jumps": "uniform rotation on the time circle, no schedule exclusion"}


def _cell(args) -> list[float]:
    fn, scenario, n_perm, legacy, kw, lo, hi = args
    return [TESTS[fn](i, scenario, n_perm, legacy, **kw) for i in range(lo, hi)]


def rate(p_values: list[float]) -> dict:
    """Share of p < ALPHA with its 95% Clopper-Pearson interval."""
    n, k = len(p_values), int(sum(p < ALPHA for p in p_values))
    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return {"rate": k / n, "ci95": [round(lo, 4), round(hi, 4)], "n": n}


def run_cell(pool, fn: str, scenario: str, sims: int, n_perm: int, legacy: bool = False, kw=None) -> dict:
    chunks = [(fn, scenario, n_perm, legacy, kw or {}, lo, min(sims, lo + 25)) for lo in range(0, sims, 25)]
    return rate([p for part in pool.map(_cell, chunks) for p in part])


def series_check(reps: int, n_perm: int) -> dict:
    """H1 end to end: per seed, 2 blocks x 7 matrices x 3 metrics of noisy power-law series on the
    quickstart's cadence, every weight-norm series kinked at warmup end (step 30) in every seed, through
    the real detector; events near the schedule marks left out as the analysis does."""
    from squigglray.events import changepoints
    from squigglray.training.cadence import log_steps

    steps = np.asarray(log_steps(400, 64, 20))
    cfg = changepoints.EventConfig()
    marks = invariance.log_step_time([30, 64, 120], 400)
    p_values = []
    for rep in range(reps):
        rng = np.random.default_rng([4, rep])
        rows = []
        for seed in range(3):
            for layer in range(2):
                for mod in simulate.MODULES:
                    for metric in ("frobenius_norm", "update_norm", "gradient_norm"):
                        y = np.log(steps) * rng.normal(0.3, 0.05) + rng.normal(0, 0.05, len(steps))
                        if metric == "frobenius_norm":
                            y += 0.4 * np.maximum(np.log(steps / 30), 0)
                        ev = changepoints.detect_series_events(steps.tolist(), y.tolist(), metric=metric, layer=layer,
                                                               module=mod, max_steps=400, config=cfg)
                        rows += [(seed, layer, mod, metric, e["kind"], e["magnitude"],
                                  float(invariance.log_step_time([e["step"]], 400)[0])) for e in ev.to_pylist()]
        events, t = simulate.events_table(rows)
        exclude = simulate.near_marks(t, marks, TOLERANCE)
        p_values.append(invariance.site_permutation_test(events, t, TOLERANCE, n_perm=n_perm, seed=rep,
                                                         exclude=exclude)["p_value"])
    return rate(p_values) | {"setup": " ".join(series_check.__doc__.split())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=500, help="simulated experiments per cell")
    ap.add_argument("--perm", type=int, default=199, help="permutations per test")
    ap.add_argument("--legacy-sims", type=int, default=100, help="experiments per cell for the old nulls (slow)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--series", type=int, default=0, help="also run H1 through the real detector, this many reps")
    ap.add_argument("--tests", default=",".join(TESTS), help="which tests (comma-separated); others keep their "
                                                             "figures from the JSON being rewritten")
    ap.add_argument("--write", default=str(simulate.CALIBRATION_FILE), help="JSON to write ('' = none)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = {"command": "python bench/calibration.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "n_sims": a.sims, "n_perm": a.perm, "alpha": ALPHA, "tests": {}, "legacy": {}}
    chosen = [t for t in a.tests.split(",") if t]
    if set(chosen) - set(TESTS):
        ap.error(f"--tests: unknown {sorted(set(chosen) - set(TESTS))}; choose from {list(TESTS)}")
    if a.write and Path(a.write).exists() and len(chosen) < len(TESTS):
        old = json.loads(Path(a.write).read_text())
        out["tests"], out["legacy"], out["series"] = old["tests"], old["legacy"], old.get("series")
    with ProcessPoolExecutor(a.workers) as pool:
        for name in chosen:
            desc, kw = EFFECTS[name]
            fpr = {sc: run_cell(pool, name, sc, a.sims, a.perm) for sc in simulate.SCENARIOS}
            planted = "uniform" if name == "probe_jumps" else "concentrated"
            power = run_cell(pool, name, planted, a.sims, a.perm, kw=kw) | {"effect": desc}
            out["tests"][name] = {"false_positive_rate": fpr, "power": power,
                                  "command": f"python bench/calibration.py --tests {name} --sims {a.sims}"}
            print(f"\n{name}: false-positive rate at alpha {ALPHA} ({a.sims} experiments each, 95% interval)")
            for sc, r in fpr.items():
                print(f"  {sc:13s} {r['rate']:.3f}  [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
            print(f"  power {power['rate']:.3f} [{power['ci95'][0]:.3f}, {power['ci95'][1]:.3f}] at: {desc}")
            if name in LEGACY:
                old = {sc: run_cell(pool, name, sc, a.legacy_sims, a.perm, legacy=True) for sc in simulate.SCENARIOS}
                out["legacy"][name] = {"null": LEGACY[name], "false_positive_rate": old}
                print(f"  the previous null ({LEGACY[name]}; {a.legacy_sims} experiments): "
                      + ", ".join(f"{sc} {r['rate']:.3f}" for sc, r in old.items()))
    if a.series:
        out["series"] = series_check(a.series, a.perm)
        s = out["series"]
        print(f"\nH1 through the real detector ({a.series} experiments): false-positive rate {s['rate']:.3f} "
              f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\n{out['seconds']} s")
    if a.write:
        Path(a.write).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {a.write}")


if __name__ == "__main__":
    main()
