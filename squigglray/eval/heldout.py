"""Held-out evaluation: greedy tool-integrated generation on instances the model never trained on.

Per instance: generate until the model opens ```output, run its code block in a subprocess,
append the real output, and let the model finish with \\boxed{}. Two exact-match scores:
`code_acc` (the code's printed result equals the answer) and `boxed_acc` (the final boxed answer).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from squigglray.eval.run_code import run_many
from squigglray.families import sample
from squigglray.families.trace import FENCE, OUTPUT_OPEN, extract_boxed, extract_code, format_prompt
from squigglray.schemas import EvalRow
from squigglray.schemas.problems import ProblemInstance


def heldout_instances(
    families: list[str], levels: list[str], n: int, seed: int, exclude_problems: set[str]
) -> list[tuple[str, ProblemInstance]]:
    """n instances per (family, level) from the eval seed, skipping any problem text seen in training."""
    out: list[tuple[str, ProblemInstance]] = []
    for fam in families:
        for level in levels:
            kept, start = [], 0
            while len(kept) < n and start < 50 * n:
                batch = sample(fam, n, seed=seed, difficulty=level, start=start)
                kept += [x for x in batch if x.problem not in exclude_problems][: n - len(kept)]
                start += n
            out += [(level, x) for x in kept]
    return out


@torch.no_grad()
def _generate(model, tokenizer, texts: list[str], max_new_tokens: int, stop_ids: list[int]) -> list[str]:
    enc = tokenizer([tokenizer.bos_token + t for t in texts], return_tensors="pt", padding=True,
                    add_special_tokens=False)
    out = model.generate(
        **enc, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    new = out[:, enc["input_ids"].shape[1]:]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in new]


def tir_generate(model, tokenizer, prompts: list[str], max_new_tokens: int, timeout_s: float,
                 batch_size: int = 48) -> list[dict[str, Any]]:
    """One code round of tool-integrated greedy generation for each prompt."""
    tokenizer.padding_side = "left"
    output_id = tokenizer.convert_tokens_to_ids(OUTPUT_OPEN)
    results: list[dict[str, Any]] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        first = _generate(model, tokenizer, chunk, max_new_tokens, [tokenizer.eos_token_id, output_id])
        codes = [extract_code(t) for t in first]
        runs = run_many([c or "" for c in codes], timeout_s)
        cont_idx = [j for j, t in enumerate(first) if codes[j] is not None and t.rstrip().endswith(OUTPUT_OPEN)]
        cont_texts = [chunk[j] + first[j].rstrip() + "\n" + runs[j].output + f"\n{FENCE}\n" for j in cont_idx]
        seconds = _generate(model, tokenizer, cont_texts, 48, [tokenizer.eos_token_id]) if cont_idx else []
        tails = dict(zip(cont_idx, seconds))
        for j, text in enumerate(first):
            full = text
            if j in tails:
                full = text.rstrip() + "\n" + runs[j].output + f"\n{FENCE}\n" + tails[j]
            results.append({
                "completion": full, "code": codes[j], "code_output": runs[j].output if codes[j] else None,
                "code_status": runs[j].status if codes[j] else "missing", "boxed": extract_boxed(full),
            })
    return results


def evaluate_heldout(model, tokenizer, items: list[tuple[str, ProblemInstance]], max_new_tokens: int = 200,
                     timeout_s: float = 5.0, batch_size: int = 48) -> list[dict[str, Any]]:
    """Per-instance records (family, level, answer, completion, code/boxed correctness)."""
    model.eval()
    gens = tir_generate(model, tokenizer, [format_prompt(x.problem) for _, x in items], max_new_tokens,
                        timeout_s, batch_size)
    rows = []
    for (level, x), g in zip(items, gens):
        gold = str(x.answer)
        rows.append({
            "instance_id": x.instance_id, "family_id": x.family_id, "level": level, "answer": gold,
            "code_correct": g["code_output"] == gold, "boxed_correct": g["boxed"] == gold,
            "well_formed": g["code"] is not None and g["boxed"] is not None,
            "code_status": g["code_status"], "boxed": g["boxed"], "completion": g["completion"],
        })
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[EvalRow]:
    """Per-family accuracy table (all levels pooled), plus an ALL row."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["family_id"]].append(r)
    groups["ALL"] = list(rows)

    def row(fam: str, rs: list[dict[str, Any]]) -> EvalRow:
        n = len(rs)
        return EvalRow(
            family_id=fam, n=n,
            code_acc=sum(r["code_correct"] for r in rs) / n,
            boxed_acc=sum(r["boxed_correct"] for r in rs) / n,
            format_acc=sum(r["well_formed"] for r in rs) / n,
        )

    return [row(f, groups[f]) for f in sorted(groups, key=lambda f: (f == "ALL", f)) if groups[f]]
