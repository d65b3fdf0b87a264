"""Ray Tune search spaces (seed x family sweeps, DCM K sweeps) live here; see later issues."""
