"""Probes A and B (seed 000 §5.1): fixed, hashed instance sets evaluated during training.

- Probe A (in-distribution): the training families and levels, instances from `probes.seed`
  (never a training problem).
- Probe B (holdout): `probes.b_families` (default: the training families) at `probes.b_levels`
  (default: hard, a level the curriculum does not train on), same exclusion.
- Training on a slice (`data.slice`), both come from the slice's own held-out splits instead: probe
  A from `probe_a`, probe B from `holdout` (the first `a_per_family` / `b_per_family` of each family
  by rank; items with a reference solution and answer), which the slice build kept disjoint from
  its train split, near-duplicates included (data/dedup.py).

Each evaluation is one teacher-forced forward pass per probe (and with `generate`, a generation):
- `loss`: mean cross-entropy over the trace tokens, the training loss on these instances;
- `token_acc`: share of trace tokens whose argmax is the reference token;
- `answer_acc`, as `probes.answer` says (`auto`: `generate` on a slice, `exact` on the families):
  - `exact`: share of instances whose greedy tool-integrated decoding reproduces the reference
    solution through its boxed answer, from the same forward pass (cheap enough for every log step).
    Exact, not a proxy: when every model-written token (all trace tokens except the ```output block,
    which the tool writes) is the argmax given the reference prefix, greedy decoding writes exactly
    the reference, and its code prints the answer. A lower bound of solving (a model may solve with
    other code), and meaningless for real data, where a solution is one of many;
  - `generate`: free greedy tool-integrated generation (the held-out evaluation's loop, one code
    round, `probes.max_new_tokens`), its final answer judged against the reference answer by the
    project's answer judge (`solve.equivalence.judge_answer`: math-verify, and a restated
    computation is not an answer). An instance `exact` counts should be right here too (greedy
    decoding writes the reference); the test checks it on a trained model.

    python -m pytest tests/test_probe_answers.py
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from squigglray.config import ConfigError
from squigglray.eval.heldout import heldout_instances, tir_generate
from squigglray.families.trace import FENCE, OUTPUT_OPEN, format_prompt
from squigglray.paths import ArtifactStore
from squigglray.schemas.pool import TextInstance, as_text
from squigglray.schemas.problems import ProblemInstance
from squigglray.solve.equivalence import EquivalenceChecker, judge_answer
from squigglray.training.callbacks import TrainerCallback
from squigglray.training.config import BaseTrainConfig

PROBE_COLUMNS = tuple(f"probe_{p}_{m}" for p in ("a", "b") for m in ("loss", "token_acc", "answer_acc"))


@dataclass
class ProbeSet:
    name: str
    items: list[tuple[str, ProblemInstance]]  # (level, instance), shortest first
    input_ids: torch.Tensor  # [n, T] right-padded
    attention_mask: torch.Tensor
    labels: torch.Tensor  # -100 off the trace
    required: torch.Tensor  # bool [n, T]: label positions the model must get right for answer_acc
    dropped: int  # instances longer than max_seq_len

    @property
    def hash(self) -> str:
        """sha256 of the instances and their token ids: a probe is immutable within a run."""
        h = hashlib.sha256()
        for level, x in self.items:
            h.update(f"{level}\t{x.instance_id}\t{x.problem}\t{x.answer}\n".encode())
        h.update(self.input_ids.to(torch.int64).numpy().tobytes())
        return h.hexdigest()

    def manifest(self) -> dict:
        return {"name": self.name, "hash": self.hash, "n": len(self.items), "dropped_over_max_seq_len": self.dropped,
                "instances": [{"level": lv, "instance_id": x.instance_id, "family_id": x.family_id}
                              for lv, x in self.items]}


def tool_spans(trace: str) -> list[tuple[int, int]]:
    """Character spans the tool writes: everything after each ```output marker through its closing
    fence and newline (what `eval.heldout.tir_generate` appends after running the code)."""
    spans, at = [], 0
    while (i := trace.find(OUTPUT_OPEN, at)) >= 0:
        start = i + len(OUTPUT_OPEN)
        close = trace.find(FENCE, start)
        end = len(trace) if close < 0 else close + len(FENCE) + 1
        spans.append((start, end))
        at = end
    return spans


def encode_probe(name: str, items: list[tuple[str, ProblemInstance]], tokenizer: PreTrainedTokenizerBase,
                 max_seq_len: int) -> ProbeSet:
    rows, kept = [], []
    for level, x in items:
        prompt = tokenizer(format_prompt(x.problem), add_special_tokens=False)["input_ids"]
        enc = tokenizer(x.trace, add_special_tokens=False, return_offsets_mapping=True)
        spans = tool_spans(x.trace)
        model_written = [not any(a <= s and e <= b for a, b in spans) for s, e in enc["offset_mapping"]]
        ids = [tokenizer.bos_token_id, *prompt, *enc["input_ids"], tokenizer.eos_token_id]
        if len(ids) > max_seq_len:
            continue
        rows.append((ids, 1 + len(prompt), model_written))
        kept.append((level, x))
    if not rows:
        raise ValueError(f"probe {name}: no instance fits max_seq_len={max_seq_len}")
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths share a forward pass
    rows, kept = [rows[i] for i in order], [kept[i] for i in order]
    width = max(len(r[0]) for r in rows)
    n = len(rows)
    input_ids = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), -100, dtype=torch.long)
    required = torch.zeros((n, width), dtype=torch.bool)
    for i, (ids, n_prompt, written) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = input_ids[i, n_prompt : len(ids)]
        required[i, n_prompt : n_prompt + len(written)] = torch.tensor(written, dtype=torch.bool)
    return ProbeSet(name, kept, input_ids, mask, labels, required, dropped=len(items) - len(kept))


Items = list[tuple[str, ProblemInstance | TextInstance]]  # (level, instance)


def probe_instances(cfg: BaseTrainConfig, exclude_problems: set[str], store: ArtifactStore | None = None
                    ) -> tuple[Items, Items]:
    """The instances of probes A and B, none of whose problems is in `exclude_problems`: held-out
    instances of the synthetic families, or with `data.slice` the slice's probe_a and holdout items."""
    p = cfg.probes
    if cfg.data.slice:
        return slice_probe_instances(cfg, exclude_problems, store)
    fams = cfg.data.resolved_families()
    return (heldout_instances(fams, cfg.levels_used(), p.a_per_family, p.seed, exclude_problems),
            heldout_instances(sorted(p.b_families) or fams, p.b_levels, p.b_per_family, p.seed, exclude_problems))


def slice_probe_instances(cfg: BaseTrainConfig, exclude_problems: set[str], store: ArtifactStore | None = None
                          ) -> tuple[Items, Items]:
    """Probe A from the slice's probe_a split, probe B from its holdout split: per family (the
    `data.families` given, else all of the slice's), the first items by rank that have a reference
    solution (the teacher-forced loss needs one) and a reference answer (the judge needs one)."""
    from squigglray.data.slice import read_items, split_heads

    manifest, items = read_items(cfg.data.slice, store)
    usable = [x for x in items if x.provenance.reference_solution and x.content.final_answer
              and x.content.problem not in exclude_problems]
    fams = cfg.data.families or None
    a = split_heads(usable, "probe_a", cfg.probes.a_per_family, fams)
    b = split_heads(usable, "holdout", cfg.probes.b_per_family, fams)
    for split, got in (("probe_a", a), ("holdout", b)):
        if not got:
            raise ConfigError(f"slice {manifest.slice_id} has no {split} items with a reference solution and answer"
                              + (f" in families {sorted(fams)}" if fams else "") + ": build it with a "
                              f"quotas.{split} above 0, or set probes.enabled=false")
    return [(x.difficulty, as_text(x)) for x in a], [(x.difficulty, as_text(x)) for x in b]


def encode_probes(cfg: BaseTrainConfig, tokenizer: PreTrainedTokenizerBase, held_out: tuple[Items, Items]
                  ) -> tuple[ProbeSet, ProbeSet]:
    """Probes A and B of `probe_instances`, tokenized."""
    return tuple(encode_probe(name, items, tokenizer, cfg.model.max_seq_len) for name, items in zip("ab", held_out))


def build_probes(cfg: BaseTrainConfig, tokenizer: PreTrainedTokenizerBase, exclude_problems: set[str],
                 store: ArtifactStore | None = None) -> tuple[ProbeSet, ProbeSet]:
    return encode_probes(cfg, tokenizer, probe_instances(cfg, exclude_problems, store))


@torch.no_grad()
def evaluate_probe(model: torch.nn.Module, probe: ProbeSet, batch_size: int = 32) -> dict[str, float]:
    """Teacher-forced loss, token accuracy and exact answer accuracy (see the module docstring)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, n_tok, hit_tok, exact = 0.0, 0, 0, 0
    try:
        for i in range(0, len(probe.items), batch_size):
            sl = slice(i, i + batch_size)
            width = int(probe.attention_mask[sl].sum(dim=1).max())  # rows are sorted by length: little padding
            ids, labels = probe.input_ids[sl, :width].to(device), probe.labels[sl, :width].to(device)
            mask = probe.attention_mask[sl, :width].to(device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            logits, target = logits[:, :-1].float(), labels[:, 1:]
            req = probe.required[sl, 1:width].to(device)
            on = target != -100
            nll += float(F.cross_entropy(logits[on], target[on], reduction="sum"))
            n_tok += int(on.sum())
            right = logits.argmax(-1) == target
            hit_tok += int((right & on).sum())
            exact += int((right | ~req).all(dim=1).sum())
    finally:
        model.train(was_training)
    return {"loss": nll / max(n_tok, 1), "token_acc": hit_tok / max(n_tok, 1), "answer_acc": exact / len(probe.items)}


def capture_batch(probe: ProbeSet, size: int) -> dict[str, torch.Tensor]:
    """The fixed geometry capture batch: `size` probe instances taken round-robin over families,
    trimmed to their longest row."""
    by_family: dict[str, list[int]] = {}
    for i, (_, x) in enumerate(probe.items):
        by_family.setdefault(x.family_id, []).append(i)
    order = [idx for k in range(max(map(len, by_family.values()))) for fam in sorted(by_family)
             for idx in by_family[fam][k : k + 1]]
    pick = torch.tensor(sorted(order[:size]))
    mask = probe.attention_mask[pick]
    width = int(mask.sum(dim=1).max())
    return {"input_ids": probe.input_ids[pick, :width].clone(), "attention_mask": mask[:, :width].clone()}


@dataclass
class Generation:
    """What `generate` answer accuracy needs besides the model: its tokenizer, the token budget,
    the code's timeout and the judge (math-verify in its own worker process)."""

    tokenizer: PreTrainedTokenizerBase
    max_new_tokens: int
    code_timeout_s: float
    checker: EquivalenceChecker
    max_seq_len: int = 0  # the model's context; 0: not bounded here


def generated_accuracy(model: torch.nn.Module, probe: ProbeSet, gen: Generation) -> list[bool]:
    """Per instance: did free greedy tool-integrated generation reach the reference answer? Up to
    `gen.max_new_tokens` before the code runs, fewer where the longest prompt leaves less of the
    model's context."""
    was_training = model.training
    budget = gen.max_new_tokens
    if gen.max_seq_len:
        longest_prompt = int((probe.labels != -100).int().argmax(dim=1).max())  # BOS + prompt tokens
        budget = max(1, min(budget, gen.max_seq_len - longest_prompt))
    try:
        outs = tir_generate(model, gen.tokenizer, [format_prompt(x.problem) for _, x in probe.items],
                            budget, gen.code_timeout_s)
    finally:
        model.train(was_training)
    return [judge_answer(o["completion"], x.answer, gen.checker) for o, (_, x) in zip(outs, probe.items)]


class ProbeCallback(TrainerCallback):
    """Evaluates both probes at every log step; the values join that step's scalars row. With
    `generation`, answer_acc is free generation judged by math-verify (`generated_accuracy`)."""

    def __init__(self, probes: list[ProbeSet], generation: Generation | None = None):
        self.probes, self.generation = probes, generation
        self.seconds = 0.0  # spent evaluating, in this process (resources.json)

    def on_step_end(self, state, model, batch):
        if not state.is_log_step:
            return
        t0 = time.perf_counter()
        log = state.extra.setdefault("log", {})
        for probe in self.probes:
            metrics = evaluate_probe(model, probe)
            if self.generation is not None:
                right = generated_accuracy(model, probe, self.generation)
                metrics["answer_acc"] = sum(right) / len(right)
            for metric, value in metrics.items():
                log[f"probe_{probe.name}_{metric}"] = value
        self.seconds += time.perf_counter() - t0

    def on_train_end(self, state, model):
        if self.generation is not None:
            self.generation.checker.close()
