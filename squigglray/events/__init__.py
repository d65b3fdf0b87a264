"""Events (seed 000 §4.2-4.3, §5.2): change points per geometry series, composite candidates,
seed-invariance matching across runs, and the probe/loss correlation tests. Pure domain code (no Ray)."""
