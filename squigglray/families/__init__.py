"""Synthetic problem families (seed 000 §3.0): seeded generators with exact answers and TIR traces."""

from squigglray.families.base import LEVELS, BadKnob, Family, Knob
from squigglray.families.registry import UnknownFamily, describe, get_family, list_families, sample

__all__ = ["BadKnob", "Family", "Knob", "LEVELS", "UnknownFamily", "describe", "get_family", "list_families", "sample"]
