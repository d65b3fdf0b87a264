"""The main job end to end on a real local Ray: the --smoke path (nano model)."""

import pyarrow.parquet as pq

from squigglray.jobs.dynamics import DynamicsOptions
from squigglray.jobs.quickstart import load_quickstart_config, probe_config, quickstart


def test_smoke_quickstart_trains_evaluates_and_reuses(ray_session, tmp_path):
    """The smoke job, narrowed where other tests cover the breadth: two seeds (the least that seed
    invariance needs), fewer permutations, two probe families (test_probes_sweep has the rest)."""
    cfg = load_quickstart_config(smoke=True, path=None, overrides=["train.steps=20", "eval.n_per_family=2"])
    probe_cfg = probe_config(cfg)
    kw = {"dynamics": DynamicsOptions(seeds=[0, 1], n_perm=50),
          "probes": probe_cfg.model_copy(update={"families": probe_cfg.families[:2]})}
    out = quickstart(cfg, str(tmp_path / "data"), **kw)
    rid = out["run"].provenance.run_id
    run = tmp_path / "data" / "runs" / rid
    for rel in ("config.json", "run.json", "scalars.parquet", "checkpoints/final/model.safetensors",
                "reports/report.md", "reports/plots/loss.png", "reports/heldout_eval.parquet", "reports/heldout_summary.json"):
        assert (run / rel).exists(), rel
    rows = pq.read_table(run / "reports" / "heldout_eval.parquet").to_pylist()
    from squigglray.families import list_families

    assert {r["family_id"] for r in rows} == set(list_families())
    assert len(rows) == 2 * len(list_families())
    assert all(r["run_id"] == rid and r["config_hash"] == out["run"].provenance.config_hash for r in rows)
    table = {r.family_id: r for r in out["table"]}
    assert table["ALL"].n == len(rows)
    md = (run / "reports" / "report.md").read_text()
    assert "| family |" in md and "mod_power" in md
    assert not out["reused"]

    # the small solver evaluation (smoke size: N in 1,4 on one problem of 4 families, Ray sandbox actors)
    for rel in ("solver_eval.json", "solver_eval.parquet", "solver_eval.md", "plots/solver_accuracy.png"):
        assert (run / "reports" / rel).exists(), rel
    solver = out["solver"]
    assert {(r["code"], r["n"]) for r in solver["table"]} == {(c, n) for c in (True, False) for n in (1, 4)}
    assert solver["provenance"]["run_id"] == rid and len(solver["families"]) == 4
    assert "## Solver" in md and "weighted@N" in md and "plots/solver_accuracy.png" in md
    assert "solver_eval" in out["seconds"]

    # the probe sweep of the checkpoint: 2 families x 2 seeds + 2 controls x 2 seeds, ranked by DIS
    sweep = out["probe_sweep"]
    exp = tmp_path / "data" / "experiments" / f"probe-{rid}"
    probes = pq.read_table(exp / "aggregated" / "probe_summaries.parquet").to_pylist()
    assert len(probes) == 8 and sweep["ran"] == 8
    assert sum(r["role"] == "family" for r in probes) == 4 and all(r["dis"] is not None for r in probes)
    assert "## Probe sweep: DIS ranking" in md and sweep["family_table"][0]["family_id"] in md

    again = quickstart(cfg, str(tmp_path / "data"), **kw)
    assert again["reused"] and again["run"].provenance.run_id == rid
    assert again["rows"] == out["rows"]  # read back from heldout_eval.parquet (stored_eval), not evaluated again
    assert again["solver"]["table"] == out["solver"]["table"]
    assert again["solver"]["seconds"] == out["solver"]["seconds"]  # read back from solver_eval.json, not sampled again
    assert again["probe_sweep"]["ran"] == 0
    assert again["experiment"]["analysis_reused"]  # the dynamics analysis is read back too
    again_md = (run / "reports" / "report.md").read_text()
    assert again_md.count("## Events") == md.count("## Events") == 1 and "## Solver" in again_md

    # held-out rows of another package version (or config) are evaluated again, not reused
    from squigglray.jobs.quickstart import stored_eval
    from squigglray.paths import ArtifactStore

    store = ArtifactStore(str(tmp_path / "data"))
    assert stored_eval(store, out["run"]) == out["rows"]
    path = run / "reports" / "heldout_eval.parquet"
    t = pq.read_table(path)
    pq.write_table(t.set_column(t.column_names.index("package_version"), "package_version",
                                [["0.0.0"] * t.num_rows]), path)
    assert stored_eval(store, out["run"]) is None
