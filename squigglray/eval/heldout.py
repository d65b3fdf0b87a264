"""Held-out evaluation: greedy tool-integrated generation on instances the model never trained on.

Per instance: generate until the model opens ```output, run its code block in a subprocess,
append the real output, and let the model finish with \\boxed{}. Two exact-match scores:
`code_acc` (the code's printed result equals the answer) and `boxed_acc` (the final boxed answer).

The generation is the solver's loop (squigglray.solve.tir), run greedily for one code round with
`HELDOUT_RULES`: the trace stays exactly as the model wrote it (the code is the first complete
block, an ```output opened without code ends the trace, no newline is tidied), and the last round
has HELDOUT_ANSWER_TOKENS. The model decodes with transformers' `generate` (`GreedyGenerate`), and
the code runs in plain subprocesses (squigglray.eval.run_code): a trained model's held-out table is
what it has always been.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from squigglray.engines import Completion, Engine, SamplingParams
from squigglray.eval.run_code import MAX_OUTPUT_CHARS, SubprocessExecutor, run_many
from squigglray.families import sample
from squigglray.families.trace import OUTPUT_OPEN, extract_code, format_prompt
from squigglray.schemas import EvalRow
from squigglray.schemas.problems import ProblemInstance
from squigglray.schemas.solve import SolveOptions
from squigglray.solve.answers import extract_boxed
from squigglray.solve.tir import Candidate, RoundRules, run_batches

HELDOUT_ANSWER_TOKENS = 48  # after the code's output: enough for "The answer is \boxed{...}."


def _first_block_of_round(text: str) -> str | None:
    """The first complete ```python block of a round that stopped at ```output (marker put back)."""
    return extract_code(text + OUTPUT_OPEN)


HELDOUT_RULES = RoundRules(code_block=_first_block_of_round, open_without_code="finish", tidy_newlines=False,
                           final_round_tokens=HELDOUT_ANSWER_TOKENS)


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


class GreedyGenerate(Engine):
    """Greedy decoding of a model held in memory with transformers' `generate`: BOS + text, left
    padding, each call one batch. A stop string must be one token of the tokenizer (```output is):
    generation stops at that token, and the completion's text ends before it."""

    name = "hf-generate"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    @property
    def model_name(self) -> str:
        return getattr(self.model.config, "name_or_path", "") or type(self.model).__name__

    async def generate(self, prompts: list[str], params: SamplingParams,
                       seeds: list[int] | None = None) -> list[list[Completion]]:
        if params.n != 1 or params.temperature != 0:
            raise ValueError("GreedyGenerate decodes greedily: n=1 and temperature=0")
        return [[c] for c in self.generate_sync(prompts, params)]

    def generate_sync(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        import torch  # here, not at the top: the quickstart's and probes' drivers import this module

        with torch.no_grad():
            return self._generate(prompts, params)

    def _generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        tok = self.tokenizer
        stop_ids = [tok.eos_token_id]
        for s in params.stop:
            i = tok.convert_tokens_to_ids(s)
            if i is None or i == tok.unk_token_id:
                raise ValueError(f"stop string {s!r} is not one token of the tokenizer")
            stop_ids.append(i)
        tok.padding_side = "left"
        enc = tok([tok.bos_token + t for t in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}  # a training run's model may sit on a GPU
        out = self.model.generate(**enc, do_sample=False, max_new_tokens=params.max_tokens, eos_token_id=stop_ids,
                                  pad_token_id=tok.pad_token_id)
        completions = []
        for row, mask in zip(out[:, enc["input_ids"].shape[1]:].tolist(), enc["attention_mask"]):
            text = tok.decode(row, skip_special_tokens=True)
            stopped_at = next((k for k, t in enumerate(row) if t in stop_ids), None)  # the rest is padding
            stop = next((s for s in params.stop if text.rstrip().endswith(s)), None)
            if stop is not None:  # the text without the stop string, as the Engine contract has it
                text = text.rstrip()[: -len(stop)]
            completions.append(Completion(text, "stop" if stopped_at is not None else "length", stop,
                                          int(mask.sum()), len(row) if stopped_at is None else stopped_at + 1))
        return completions

    async def aclose(self) -> None:
        pass


def tir_generate(model, tokenizer, prompts: list[str], max_new_tokens: int, timeout_s: float,
                 batch_size: int = 48) -> list[dict[str, Any]]:
    """One code round of tool-integrated greedy generation for each prompt (the solver's loop with
    HELDOUT_RULES, batch_size prompts a wave), and the code each completion wrote, run."""
    # constructed, not validated: the training config's eval section bounds these, not the solver's request limits
    opts = SolveOptions.model_construct(n=1, rounds=1, temperature=0.0, max_tokens_per_round=max_new_tokens,
                                        code_timeout_s=timeout_s, output_chars=MAX_OUTPUT_CHARS, execute_code=True,
                                        early_stop=False, reflexion=False, critique=False, prompt="squigglray")
    cands = [Candidate(index=i, prompt=p, seed=0, session=f"heldout-{i}") for i, p in enumerate(prompts)]
    executor = SubprocessExecutor()
    try:
        asyncio.run(run_batches(cands, GreedyGenerate(model, tokenizer), executor, opts, batch_size, HELDOUT_RULES))
    finally:
        executor.close()
    # a completion that wrote code but did not open ```output was not run in the loop: its code's
    # output is still what `code_acc` scores
    unrun = {c.index: code for c in cands if not c.runs and (code := extract_code(c.text)) is not None}
    extra = dict(zip(unrun, run_many(list(unrun.values()), timeout_s)))
    results = []
    for c in cands:
        if c.runs:
            code, output, status = c.runs[0].code, c.runs[0].output, c.runs[0].status
        elif c.index in extra:
            code, output, status = unrun[c.index], extra[c.index].output, extra[c.index].status
        else:
            code, output, status = None, None, "missing"
        results.append({"completion": c.text, "code": code, "code_output": output, "code_status": status,
                        "boxed": extract_boxed(c.text)})
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
