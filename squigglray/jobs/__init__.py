"""Entry points for `ray job submit -- python -m squigglray.jobs.<job>`; the CLI calls the same functions."""
