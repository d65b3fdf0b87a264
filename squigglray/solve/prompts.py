"""Prompt templates: the project's own trace format (what the tiny model was trained on) and a
tool-integrated instruction for hub models (AIMO/NuminaMath-TIR style)."""

from __future__ import annotations

from squigglray.families.trace import CODE_OPEN, FENCE, OUTPUT_OPEN, format_prompt

TIR_INSTRUCTION = (
    "Solve the following math problem. Reason step by step, and use Python to compute and check "
    f"your steps: write code in a {CODE_OPEN} block; its printed output will appear in an "
    f"{OUTPUT_OPEN} block. Put the final answer, an integer between 0 and 99999, in \\boxed{{}}.\n\n"
    "Problem: {problem}\n\nSolution:\n"
)
# Appended after an output that shows an error (the reflexion pattern of seed 004).
REFLEXION = {"squigglray": "", "tir": "The code above failed. Let me fix it.\n"}
CRITIQUE = {
    "squigglray": "",
    "tir": "\nLet me review this answer, checking for calculation errors, edge cases (n=0, n=1) and gaps "
           "in the logic, and correct it if needed.\n",
}


def render(problem: str, style: str) -> str:
    if style == "tir":
        return TIR_INSTRUCTION.replace("{problem}", problem.strip())
    return format_prompt(problem.strip())


def output_block(output: str) -> str:
    """How a code result is fed back: exactly the training format's ```output block."""
    return f"{OUTPUT_OPEN}\n{output}\n{FENCE}\n"
