"""Training examples for CLModel from the project's problem families (seed 000 §3.0).

Each family instance gives, besides its text:
- an op trace: the outline's `step_type` labels, which are exactly the reasoner's operators;
- argument targets: for step i, the input token where the first number that the step's text
  shares with the problem starts (the step "reads" that number), or -100 when there is none;
- invalid-op targets: ops that never occur in the family's traces (seen over the training data);
- a sequence target: the token of the answer's last digit (C is the one vocabulary);
- a tool input: the longest arithmetic/algebraic span of the problem, for the SymPy tool ops;
- a difficulty level (0 easy, 1 medium, 2 hard: the family's knobs), the entry router's target
  branch, so harder problems learn to take deeper branches (more VQ levels, the heavy encoder).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import torch

from squigglray.families import list_families, sample
from squigglray.families.base import LEVELS

IGNORE = -100
_NUMBER = re.compile(r"\d+")
_TOKEN = re.compile(r"\d+[a-z]?|[A-Za-z]+|[+\-*/^()=]|\S")
_OPERATOR = set("+-*/^=")


@dataclass
class Example:
    family: str
    ids: list[int]
    ops: list[int]  # op index per step (len <= steps)
    args: list[int]  # token position per step or IGNORE
    seq_target: int
    tool_input: str | None
    level: int = 0  # index in LEVELS


def _is_math(tok: str) -> bool:
    return tok[0].isdigit() or tok in _OPERATOR or tok in "()" or (len(tok) == 1 and tok.islower())


def tool_input(problem: str) -> str | None:
    """The longest run of numbers, one-letter variables and operators that holds a digit and an
    operator, in SymPy syntax ('18x' -> '18*x', 'a = b' -> 'a - (b)'); None if there is none."""
    runs, run = [], []
    for tok in _TOKEN.findall(problem) + ["."]:
        if _is_math(tok):
            run.append(tok)
            continue
        while run and (run[0] in _OPERATOR or run[-1] in _OPERATOR or run[-1] == "("):
            run = run[1:] if run[0] in _OPERATOR else run[:-1]
        if any(t[0].isdigit() for t in run) and any(t in _OPERATOR for t in run) and run.count("(") == run.count(")"):
            runs.append(run)
        run = []
    if not runs:
        return None
    toks = [t[:-1] + "*" + t[-1] if t[0].isdigit() and t[-1].isalpha() else t for t in max(runs, key=len)]
    text = " ".join(toks).replace("^", "**")
    if text.count("=") == 1:
        lhs, rhs = text.split("=")
        text = f"{lhs.strip()} - ({rhs.strip()})"
    return text if "=" not in text else None


def _arg_positions(problem: str, offsets: list[tuple[int, int]], steps_text: list[str]) -> list[int]:
    starts = {}
    for m in _NUMBER.finditer(problem):
        starts.setdefault(m.group(), m.start())
    out = []
    for text in steps_text:
        pos = IGNORE
        for m in _NUMBER.finditer(text):
            if m.group() in starts:
                char = starts[m.group()]
                pos = next((i for i, (a, b) in enumerate(offsets) if a <= char < b), IGNORE)
                break
        out.append(pos)
    return out


def build_examples(tokenizer, ops: tuple[str, ...], families: list[str] | None, n_per_family: int, seed: int,
                   steps: int, max_len: int) -> list[Example]:
    """n_per_family instances split evenly over the difficulty levels. Deterministic: the same
    families, n and seed give the same examples in any process."""
    op_index = {o: i for i, o in enumerate(ops)}
    per_level = [n_per_family // len(LEVELS) + (i < n_per_family % len(LEVELS)) for i in range(len(LEVELS))]
    out = []
    for fam, level, n in ((f, lv, n) for f in families or list_families() for lv, n in enumerate(per_level) if n):
        for inst in sample(fam, n, seed, difficulty=LEVELS[level]):
            enc = tokenizer(inst.problem, add_special_tokens=False, return_offsets_mapping=True,
                            truncation=True, max_length=max_len)
            outline = inst.outline[:steps]
            unknown = [s.step_type for s in outline if s.step_type not in op_index]
            if unknown:
                raise ValueError(f"family {fam!r} uses step types {unknown} that are not reasoner ops {list(ops)}")
            digit = tokenizer.convert_tokens_to_ids(str(abs(inst.answer) % 10))
            out.append(Example(
                family=fam, ids=enc["input_ids"], ops=[op_index[s.step_type] for s in outline],
                args=_arg_positions(inst.problem, enc["offset_mapping"], [s.text for s in outline]),
                seq_target=digit, tool_input=tool_input(inst.problem), level=level))
    return out


def family_op_sets(examples: list[Example]) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = {}
    for e in examples:
        seen.setdefault(e.family, set()).update(e.ops)
    return seen


def slice_hash(examples: list[Example]) -> str:
    """sha256 of the examples' content: equal slices, equal hash."""
    blob = json.dumps([[e.family, e.level, e.ids, e.ops] for e in examples]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def collate(batch: list[Example], steps: int, num_ops: int, pad_id: int,
            op_sets: dict[str, set[int]] | None = None) -> dict:
    """Right-padded tensors; step targets padded with IGNORE; stop target 1 at the last step."""
    B, T = len(batch), max(len(e.ids) for e in batch)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    ops = torch.full((B, steps), IGNORE, dtype=torch.long)
    args = torch.full((B, steps), IGNORE, dtype=torch.long)
    stop = torch.full((B, steps), float(IGNORE))
    invalid = torch.zeros(B, num_ops)
    for i, e in enumerate(batch):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        mask[i, :len(e.ids)] = True
        n = len(e.ops)
        ops[i, :n] = torch.tensor(e.ops)
        args[i, :n] = torch.tensor(e.args)
        stop[i, :n] = 0.0
        stop[i, n - 1] = 1.0
        if op_sets is not None:
            allowed = op_sets.get(e.family, set())
            invalid[i] = torch.tensor([float(o not in allowed) for o in range(num_ops)])
    return {"ids": ids, "mask": mask, "ops": ops, "args": args, "stop": stop, "invalid": invalid,
            "seq": torch.tensor([e.seq_target for e in batch]), "level": torch.tensor([e.level for e in batch]),
            "tool_inputs": [e.tool_input for e in batch],
            "families": [e.family for e in batch]}
