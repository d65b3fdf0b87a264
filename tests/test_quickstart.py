"""The main job end to end on a real local Ray: the --smoke path (nano model)."""

import pyarrow.parquet as pq

from squigglray.jobs.quickstart import load_quickstart_config, quickstart


def test_smoke_quickstart_trains_evaluates_and_reuses(ray_session, tmp_path):
    cfg = load_quickstart_config(smoke=True, path=None, overrides=["train.steps=20", "eval.n_per_family=2"])
    out = quickstart(cfg, str(tmp_path / "data"))
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

    again = quickstart(cfg, str(tmp_path / "data"))
    assert again["reused"] and again["run"].provenance.run_id == rid
