"""Held-out evaluation of a trained model on the families (greedy, tool-integrated, exact match)."""

from squigglray.eval.heldout import evaluate_heldout, heldout_instances, summarize

__all__ = ["evaluate_heldout", "heldout_instances", "summarize"]
