"""The text format shared by families, tokenizer, trainer and evaluator.

A training example is PROMPT + TRACE + eos. The trace is tool-integrated (as in AIMO/TIR data):
a short reasoning line, a ```python block, its ```output, and a final \\boxed{answer}.
Reading the answer back out of a trace is squigglray.solve.answers' (`extract_boxed`, one box parser).
"""

from __future__ import annotations

import re

CODE_OPEN = "```python"
OUTPUT_OPEN = "```output"
FENCE = "```"
BOXED = "\\boxed{"
# Marker strings the tokenizer keeps as single tokens.
TRACE_MARKERS: tuple[str, ...] = (CODE_OPEN, OUTPUT_OPEN, FENCE, BOXED)


def format_prompt(problem: str) -> str:
    return f"Problem: {problem}\nSolution:\n"


def format_trace(reasoning: str, code: str, output: str, answer: int | str) -> str:
    return (
        f"{reasoning}\n{CODE_OPEN}\n{code}\n{FENCE}\n{OUTPUT_OPEN}\n{output}\n{FENCE}\n"
        f"The answer is {BOXED}{answer}}}."
    )


_CODE_RE = re.compile(r"```python\n(.*?)\n```", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The first complete python block of a completion, or None."""
    m = _CODE_RE.search(text)
    return m.group(1) if m else None
