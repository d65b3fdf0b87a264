"""Per-row annotations of raw pool rows: validity, family, reasoning style, hashes, rank, tokens.

Each annotation is a function of the row alone (and the seed, rules and tokenizer), so a batch can be
annotated anywhere: this is the `map_batches` step of the slice pipeline.

- reasoning style: the source's own label when it has one (OMR cot/tir), else from the solution text:
  `tir` when it holds a code block or tool call, `short` under 256 tokens, else `cot`; `none` without one.
- rank: sha256("<seed>:<item_id>") in hex, the sampling order; it never depends on where a row was read.
- max_steps (the trace scaffold's guidance, 8–30): 8, plus 1 per 150 tokens of the reference solution.
"""

from __future__ import annotations

import hashlib
import json
import re

import pyarrow as pa

from squigglray.data.dedup import exact_hash, normalized_hash
from squigglray.data.rules import FamilyMapper, Rule
from squigglray.schemas.pool import UNASSIGNED

_WORDS = re.compile(r"\w+|[^\w\s]")
_TOOL = re.compile(r"```python|```output|<tool_call>|<llm-code>")
SHORT_TOKENS = 256

ANNOTATED_SCHEMA_EXTRA = [
    ("family_id", pa.string()), ("family_rule", pa.string()), ("target_type", pa.string()),
    ("reasoning_style", pa.string()), ("problem_sha256", pa.string()), ("normalized_sha256", pa.string()),
    ("solution_sha256", pa.string()), ("rank", pa.string()), ("n_tokens", pa.int32()), ("max_steps", pa.int32()),
    ("invalid", pa.string()),
]


class TokenCounter:
    """Counts tokens with a Hugging Face tokenizer (folder or cached hub id), or words and symbols."""

    def __init__(self, spec: str | None = None):
        self.spec = spec
        self.name = f"hf:{spec}" if spec else "regex:words+symbols"
        self._tok = None
        if spec:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(spec)

    def count(self, texts: list[str]) -> list[int]:
        if self._tok is None:
            return [len(_WORDS.findall(t)) for t in texts]
        return [len(ids) for ids in self._tok(texts, add_special_tokens=False)["input_ids"]]


def infer_style(solution: str | None, hint: str | None, n_solution_tokens: int) -> str:
    if hint in ("cot", "tir", "short"):
        return hint
    if not solution or not solution.strip():
        return "none"
    if _TOOL.search(solution):
        return "tir"
    return "short" if n_solution_tokens < SHORT_TOKENS else "cot"


def max_steps_for(n_solution_tokens: int) -> int:
    return min(30, 8 + n_solution_tokens // 150)


def rank_key(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


class Annotator:
    """Callable on a RAW_SCHEMA batch; returns it with the annotation columns appended."""

    def __init__(self, rules: list[Rule] | tuple[Rule, ...], seed: int, tokenizer: str | None = None):
        self.mapper = FamilyMapper(rules)
        self.seed = seed
        self.tokens = TokenCounter(tokenizer)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        problems = [r["problem"] if isinstance(r["problem"], str) else "" for r in rows]
        solutions = [r["reference_solution"] or "" for r in rows]
        p_tok = self.tokens.count(problems)
        s_tok = self.tokens.count(solutions)
        extra: dict[str, list] = {name: [] for name, _ in ANNOTATED_SCHEMA_EXTRA}
        mapped: dict[tuple, tuple] = {}  # OMR rows come several solutions per problem: map and hash each once
        hashed: dict[str, tuple[str, str]] = {}
        for r, problem, solution, pt, st in zip(rows, problems, solutions, p_tok, s_tok):
            invalid = None if problem.strip() else "empty_problem"
            if r["synthetic"]:
                fam, rule, target = r["family_hint"], json.loads(r["tags_json"]).get("rule", "synthetic_source"), r["target_hint"]
            elif invalid:
                fam, rule, target = UNASSIGNED, UNASSIGNED, None
            else:
                key = (problem, r["final_answer"])
                if key not in mapped:
                    fam, rule = self.mapper.assign(problem, r["final_answer"])
                    mapped[key] = (fam, rule, self.mapper.target_type(fam))
                fam, rule, target = mapped[key]
            if problem not in hashed:
                hashed[problem] = (exact_hash(problem), normalized_hash(problem))
            hashes = hashed[problem]
            values = {
                "family_id": fam, "family_rule": rule, "target_type": target,
                "reasoning_style": infer_style(r["reference_solution"], r["style_hint"], st),
                "problem_sha256": hashes[0], "normalized_sha256": hashes[1],
                "solution_sha256": hashlib.sha256(solution.encode()).hexdigest(),
                "rank": rank_key(self.seed, r["item_id"]), "n_tokens": pt + st, "max_steps": max_steps_for(st),
                "invalid": invalid,
            }
            for k, v in values.items():
                extra[k].append(v)
        out = batch
        for name, typ in ANNOTATED_SCHEMA_EXTRA:
            out = out.append_column(pa.field(name, typ), pa.array(extra[name], type=typ))
        return out
