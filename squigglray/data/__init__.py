"""Candidate pools and dataset slices (seed 000 §3): sources, family rules, dedup and contamination
control, deterministic sampling, manifests. Pure domain code; `squigglray.jobs.slice` runs it on Ray Data."""
