"""Micro-finetune probes (seed 000 Step 1): LoRA probes of a base checkpoint per family and seed,
scored by DIS = Magnitude x Coherence x Novelty, aggregated to Parquet, clustered and expanded.

Pure domain code: no Ray here (tune_spaces/probe_sweep.py runs the probes as Tune trials)."""
