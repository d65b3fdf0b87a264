"""Probes A and B (seed 000 §5.1): fixed, hashed instance sets evaluated during training.

- Probe A (in-distribution): the training families and levels, instances from `probes.seed`
  (never a training problem).
- Probe B (holdout): `probes.b_families` (default: the training families) at `probes.b_levels`
  (default: hard, a level the curriculum does not train on), same exclusion.

Each evaluation is one teacher-forced forward pass per probe (cheap enough for every log step):
- `loss`: mean cross-entropy over the trace tokens, the training loss on these instances;
- `token_acc`: share of trace tokens whose argmax is the reference token;
- `answer_acc`: share of instances whose greedy tool-integrated decoding reproduces the reference
  solution through its boxed answer. Exact, not a proxy: when every model-written token (all trace
  tokens except the ```output block, which the tool writes) is the argmax given the reference
  prefix, greedy decoding writes exactly the reference, and its code prints the answer. It is a
  lower bound of generated accuracy (a model may solve with other code).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from squigglray.eval.heldout import heldout_instances
from squigglray.families.trace import FENCE, OUTPUT_OPEN, format_prompt
from squigglray.schemas.problems import ProblemInstance
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


def probe_instances(cfg: BaseTrainConfig, exclude_problems: set[str]
                    ) -> tuple[list[tuple[str, ProblemInstance]], list[tuple[str, ProblemInstance]]]:
    """The instances of probes A and B, none of whose problems is in `exclude_problems`."""
    p = cfg.probes
    fams = cfg.data.resolved_families()
    return (heldout_instances(fams, cfg.levels_used(), p.a_per_family, p.seed, exclude_problems),
            heldout_instances(sorted(p.b_families) or fams, p.b_levels, p.b_per_family, p.seed, exclude_problems))


def build_probes(cfg: BaseTrainConfig, tokenizer: PreTrainedTokenizerBase, exclude_problems: set[str]
                 ) -> tuple[ProbeSet, ProbeSet]:
    a, b = probe_instances(cfg, exclude_problems)
    return (encode_probe("a", a, tokenizer, cfg.model.max_seq_len),
            encode_probe("b", b, tokenizer, cfg.model.max_seq_len))


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


class ProbeCallback(TrainerCallback):
    """Evaluates both probes at every log step; the values join that step's scalars row."""

    def __init__(self, probes: list[ProbeSet]):
        self.probes = probes

    def on_step_end(self, state, model, batch):
        if not state.is_log_step:
            return
        log = state.extra.setdefault("log", {})
        for probe in self.probes:
            for metric, value in evaluate_probe(model, probe).items():
                log[f"probe_{probe.name}_{metric}"] = value
