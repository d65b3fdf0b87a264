"""The symbolic core: one safe parser, one guard against huge numbers, one SymPy -> Z3 translation.

- `parse` (`parse.py`): expression text -> SymPy without ``eval``, under a `Grammar` (which names,
  functions, relations; evaluated or not) and its `Limits`;
- `guard.py`: `Limits`, the power/factorial/literal checks (`apply`, `check_power`), and the errors
  `ExpressionError` / `TooLarge`;
- `ToZ3` (`to_z3.py`): SymPy -> Z3 with its semantics (reals vs integers, division, roots) stated.

Users: the inequality verifier (`squigglray.ineq`), the CLModel/solver tools
(`squigglray.verify.tool_ops`) and the data family rules (`squigglray.data.rules`). This package
imports SymPy only (Z3 when a translator is built) and must not import ray.
"""

from squigglray.symbolic.guard import ExpressionError, Limits, TooLarge, apply, check_literal, check_power, short
from squigglray.symbolic.parse import Grammar, parse
from squigglray.symbolic.to_z3 import ToZ3, Untranslatable, exact_value, load_z3

__all__ = ["ExpressionError", "Grammar", "Limits", "ToZ3", "TooLarge", "Untranslatable", "apply", "check_literal",
           "check_power", "exact_value", "load_z3", "parse", "short"]
