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
    """The raw prompt: the project's format (its models were trained on it), or the instruction."""
    if style == "tir":
        return TIR_INSTRUCTION.replace("{problem}", problem.strip())
    return format_prompt(problem.strip())


def user_message(problem: str, style: str) -> str:
    """The problem as a user's chat message: the instruction without the raw format's "Solution:"
    cue (the template's assistant turn takes its place), or the problem itself."""
    if style == "tir":
        return TIR_INSTRUCTION.replace("{problem}", problem.strip()).removesuffix("\n\nSolution:\n")
    return problem.strip()


async def prompt_for(problem: str, style: str, engine) -> str:
    """What a candidate's generation continues: the model's chat template around the problem as a
    user message, where the model has one (hub models), else the raw prompt (`render`). Either way
    the TIR loop appends the model's text and each tool output to it (assistant-prefix
    continuation), which equals the template rendering the conversation with its final assistant
    message continued (tests/test_chat_templates.py)."""
    templated = await engine.render_chat([{"role": "user", "content": user_message(problem, style)}])
    return templated if templated is not None else render(problem, style)


def output_block(output: str) -> str:
    """How a code result is fed back: exactly the training format's ```output block."""
    return f"{OUTPUT_OPEN}\n{output}\n{FENCE}\n"
