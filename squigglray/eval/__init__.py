"""Held-out evaluation of a trained model on the families (greedy, tool-integrated, exact match):
`eval.heldout`; the solver's evaluation: `eval.solver`. The package imports nothing, so the solver
evaluation's options load without torch."""
