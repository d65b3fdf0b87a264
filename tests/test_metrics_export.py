"""The dashboard's metrics end to end: a Ray of its own (tests/metrics_scenario.py, a subprocess, so the
session Ray is untouched) runs a sandbox pool, a Tune sweep under SweepMetrics and a slice build; its
node's Prometheus endpoint must then serve every squigglray series with the values the work implies,
and every metric the Grafana dashboard (docs/grafana/squigglray.json) queries must exist."""

from __future__ import annotations

import json
import os
import pickle
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana" / "squigglray.json"
SCRAPE_TIMEOUT_S = 60


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def total(samples, name: str, **labels) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == want for k, want in labels.items()))


def values(samples, name: str, **labels) -> list[tuple[dict, float]]:
    return [(lab, v) for n, lab, v in samples if n == name and all(lab.get(k) == want for k, want in labels.items())]


def expectations(facts: dict, samples) -> list[str]:
    """Everything the scenario's work implies, as a list of what is not (yet) so."""
    bad = []

    def eq(label: str, got: float, want: float) -> None:
        if abs(got - want) > 1e-6:
            bad.append(f"{label}: {got} != {want}")

    runs = facts["sandbox"]["runs"]
    for status, n in runs.items():
        eq(f"sandbox runs status={status}", total(samples, "ray_squigglray_sandbox_runs_total", status=status), n)
    eq("sandbox run_seconds count", total(samples, "ray_squigglray_sandbox_run_seconds_count"), sum(runs.values()))
    if not values(samples, "ray_squigglray_sandbox_queue_depth"):
        bad.append("no ray_squigglray_sandbox_queue_depth")

    sw = facts["sweep"]
    trials = "ray_squigglray_sweep_trials_total"
    eq("sweep trials started", total(samples, trials, sweep="probe", status="started"), len(sw["groups"]))
    eq("sweep trials completed", total(samples, trials, sweep="probe", status="completed"), sw["completed"])
    eq("sweep trials errored", total(samples, trials, sweep="probe", status="errored"), sw["errored"])
    for g in sw["groups"]:
        eq(f"sweep trials started group={g}", total(samples, trials, sweep="probe", group=g, status="started"), 1)
    eq("sweep steps", total(samples, "ray_squigglray_sweep_steps_total", sweep="probe"), sw["steps"])
    eq("sweep trial_seconds count", total(samples, "ray_squigglray_sweep_trial_seconds_count", sweep="probe"),
       sw["completed"] + sw["errored"])
    losses = values(samples, "ray_squigglray_sweep_loss", sweep="probe", metric="loss")
    last_losses_ok = all(abs(v - 1 / sw["steps_per_trial"]) < 1e-6 for _, v in losses)  # its loss is 1/step
    if sorted(lab["group"] for lab, _ in losses) != sorted(sw["groups"]) or not last_losses_ok:
        bad.append(f"sweep loss gauges: {losses}")
    running = values(samples, "ray_squigglray_sweep_trials_running", sweep="probe")
    if [v for _, v in running] != [0.0]:
        bad.append(f"sweep trials running: {running}")

    sl = facts["slice"]
    rows = "ray_squigglray_slice_rows_total"
    read = total(samples, rows, slice=sl["slice"], stage="read")
    eq("slice rows read", read, sl["read"])
    eq("slice rows valid+invalid", total(samples, rows, slice=sl["slice"], stage="valid")
       + total(samples, rows, slice=sl["slice"], stage="invalid"), sl["read"])
    for fam, n in sl["selected"].items():
        eq(f"slice rows selected family={fam}",
           total(samples, rows, slice=sl["slice"], stage="selected", family=fam), n)
    cands = total(samples, rows, slice=sl["slice"], stage="candidate")
    if not 0 < cands <= read:
        bad.append(f"slice candidates {cands} not in (0, {read}]")
    if total(samples, "ray_squigglray_slice_batch_seconds_count", slice=sl["slice"], stage="annotate") < 1:
        bad.append("no annotate batch timings")
    if total(samples, "ray_squigglray_slice_rows_per_second", slice=sl["slice"], stage="read") <= 0:
        bad.append("no slice rows/s gauge")
    eq("Metered stage rows", total(samples, rows, slice="metered", stage="scenario"), sl["metered"])
    return bad


class Scrapes:
    """Every series seen by polling the endpoint, at its latest value: what a Prometheus scraping every
    second would hold. (The agent forgets a gauge ~20 s after its last set, so one late scrape is not enough.)"""

    def __init__(self, port: int):
        self.port, self.seen = port, {}

    def poll(self) -> None:
        try:
            samples = scrape(self.port)
        except OSError:  # the agent is not serving yet
            return
        for name, labels, value in samples:
            self.seen[(name, tuple(sorted(labels.items())))] = value

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        return [(name, dict(labels), value) for (name, labels), value in self.seen.items()]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(facts, samples) once the scenario's metrics are all exported; the scenario stops afterwards."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    log_path = tmp_path_factory.mktemp("metrics") / "scenario.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "metrics_scenario.py")], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()

    def wait_for(prefix: str, deadline: float, scrapes: Scrapes | None = None) -> str:
        while time.monotonic() < deadline:
            if scrapes is not None:
                scrapes.poll()
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, \
                    f"the scenario exited (rc {proc.returncode}): {log_path.read_text()[-3000:]}"
                continue
            if line.startswith(prefix):
                return line[len(prefix):]
        raise AssertionError(f"no {prefix!r} line from the scenario in time: {log_path.read_text()[-3000:]}")

    try:
        start = time.monotonic()
        scrapes = Scrapes(int(wait_for("PORT ", start + 120)))
        facts = json.loads(wait_for("SCENARIO ", start + 240, scrapes))
        deadline, bad = time.monotonic() + SCRAPE_TIMEOUT_S, ["not scraped yet"]
        while time.monotonic() < deadline:
            scrapes.poll()
            bad = expectations(facts, scrapes.samples())
            if not bad:
                break
            time.sleep(1)
        facts["unmet"] = bad
        yield facts, scrapes.samples()
    finally:
        proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_scraped_metrics_match_the_work(exported):
    facts, samples = exported
    assert not facts["unmet"], f"after {SCRAPE_TIMEOUT_S} s: {facts['unmet']} (scenario timings {facts['timings']})"
    # exported names: Ray's `ray_` prefix; counters end in _total, histograms in _bucket/_sum/_count
    names = {n for n, _, _ in samples}
    assert {"ray_squigglray_sandbox_runs_total", "ray_squigglray_sandbox_run_seconds_bucket",
            "ray_squigglray_sweep_loss", "ray_squigglray_slice_rows_total"} <= names
    assert not {n for n in names if n.startswith("squigglray_")}  # always prefixed


def test_series_carry_session_and_node_labels(exported):
    _, samples = exported
    for lab, _ in values(samples, "ray_squigglray_slice_rows_total"):
        assert lab["SessionName"].startswith("session_") and lab["NodeAddress"] and lab["family"]


# -- the Grafana dashboard ------------------------------------------------------------------------

def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _targets(dash: dict):
    for panel in dash["panels"]:
        for sub in [panel, *panel.get("panels", [])]:
            for t in sub.get("targets", []):
                yield sub, t


def _queried(dash: dict) -> set[str]:
    exprs = [t["expr"] for _, t in _targets(dash)]
    exprs += [v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
              for v in dash["templating"]["list"] if v["type"] == "query"]
    return {m for e in exprs for m in re.findall(r"\bray_[a-zA-Z0-9_]+", e)}


def _declared() -> dict[str, str]:
    """squigglray_* metrics declared through ray.util.metrics anywhere in the repo -> their type."""
    out = {}
    pattern = re.compile(r"metrics\.(Counter|Histogram|Gauge)\(\s*\"(squigglray_[a-z0-9_]+)\"")
    for folder in ("actors", "serve_apps", "tune_spaces", "squigglray"):
        for path in (ROOT / folder).rglob("*.py"):
            for kind, name in pattern.findall(path.read_text()):
                out[name] = kind
    return out


def _exported_names(name: str, kind: str) -> set[str]:
    if kind == "Counter":
        return {f"ray_{name}_total"}
    if kind == "Histogram":
        return {f"ray_{name}_{s}" for s in ("bucket", "sum", "count")}
    return {f"ray_{name}"}


def test_dashboard_is_importable_grafana_json():
    dash = _dashboard()
    assert dash["title"] and dash["uid"] and dash["schemaVersion"] >= 30
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("solve requests", "solve latency", "sandbox runs", "queue depth", "verifier calls",
                  "verifier latency", "cache hit", "trials", "loss", "slice rows"):
        assert topic in titles, topic
    for panel, target in _targets(dash):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert 'SessionName=~"$SessionName"' in target["expr"], (panel["title"], target["expr"])


def test_every_dashboard_metric_is_exported(exported):
    """A queried series is in the scrape, or (Serve apps are not deployed in the scenario) declared in
    the code with the exported name its type implies (tests/test_serve_solver.py scrapes the solver's)."""
    _, samples = exported
    scraped = {n for n, _, _ in samples}
    declared = {exp: name for name, kind in _declared().items() for exp in _exported_names(name, kind)}
    missing = sorted(m for m in _queried(_dashboard()) if m not in scraped and m not in declared)
    assert not missing, f"the dashboard queries series nobody exports: {missing}"
    not_in_scrape = {declared[m] for m in _queried(_dashboard()) if m not in scraped and m in declared}
    assert not_in_scrape <= {n for n in _declared() if n.startswith(("squigglray_solve", "squigglray_verifier",
                                                                      "squigglray_engine"))}, not_in_scrape


def test_batch_helpers_count_every_ray_data_format():
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from actors.slice_metrics import ALL, num_rows, value_counts

    rows = {"family_id": ["a", "b", "a", None]}
    for batch in (pa.table(rows), pd.DataFrame(rows), {"family_id": np.array(rows["family_id"], dtype=object)}):
        assert num_rows(batch) == 4
        assert value_counts(batch, "family_id") == {"a": 2, "b": 1, ALL: 1}


# -- the callback itself ---------------------------------------------------------------------------

def test_sweep_metrics_pickles_without_its_metric_objects():
    from tune_spaces.metrics import SweepMetrics, loss_values, trial_group

    cb = SweepMetrics("dcm")
    cb._m = {"trials": lambda: None}  # as after first use; Tune pickles callbacks into tuner.pkl
    cb._running.add("t1")
    again = pickle.loads(pickle.dumps(cb))
    assert again.sweep == "dcm" and again._m is None and not again._running
    assert trial_group({"probe": {"target": "crt", "seed": 0}}) == "crt"
    assert trial_group({"dcm": {"k": 4}}) == "K=4" and trial_group({}) == ""
    assert loss_values({"loss": 0.5, "final_loss_q": 1, "done": True, "step": 3, "final_loss_x": "n/a"}) == \
        {"loss": 0.5, "final_loss_q": 1.0}
