"""Training data: a fixed pool of family instances, or the train split of a built slice
(`data.slice`), tokenized once, and a curriculum sampler that draws each step's batch
deterministically from the run seed; or, with `data.stream`, a stream (training/stream.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from squigglray.config import config_hash
from squigglray.data.stream import Encoded, StreamSource, chunks, sample_texts, stream_source
from squigglray.families import sample
from squigglray.families.trace import format_prompt
from squigglray.paths import ArtifactStore
from squigglray.schemas import RunRecord
from squigglray.schemas.pool import TextInstance, as_text
from squigglray.schemas.problems import ProblemInstance
from squigglray.training.config import BaseTrainConfig, Phase, run_id_for

if TYPE_CHECKING:  # torch is imported where batches are made: a driver that builds the pool needs none
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass
class Pool:
    """Instances keyed by (family, level); the slice id and hash identify it in every artifact."""

    items: dict[tuple[str, str], list[ProblemInstance | TextInstance]]
    slice_id: str
    slice_hash: str
    source: StreamSource | None = None  # data.stream: no items in memory, the stream instead

    def texts(self) -> list[str]:
        """What the tokenizer is trained on: every item, or the stream's first texts."""
        if self.source is not None:
            return sample_texts(self.source)
        return [format_prompt(x.problem) + x.trace for xs in self.items.values() for x in xs]

    def problems(self) -> set[str]:
        return {x.problem for xs in self.items.values() for x in xs}


def build_pool(cfg: BaseTrainConfig, store: ArtifactStore | None = None) -> Pool:
    if cfg.data.stream:
        src = stream_source(cfg.data.slice, cfg.data.parquet, store)
        return Pool(items={}, slice_id=src.slice_id, slice_hash=src.slice_hash, source=src)
    if cfg.data.slice:
        return slice_pool(cfg.data.slice, store)
    items: dict[tuple[str, str], list[ProblemInstance | TextInstance]] = {}
    h = hashlib.sha256()
    for fam in cfg.data.resolved_families():
        for level in cfg.levels_used():
            xs = sample(fam, cfg.data.pool_per_family_level, seed=cfg.data.seed, difficulty=level)
            items[(fam, level)] = xs
            for x in xs:
                h.update(f"{x.instance_id}\t{x.problem}\t{x.answer}\n".encode())
    digest = h.hexdigest()
    return Pool(items=items, slice_id=f"families-{digest[:12]}", slice_hash=digest)


def find_reusable(cfg: BaseTrainConfig, store: ArtifactStore, slice_hash: str | None = None) -> RunRecord | None:
    """The finished run of exactly this config and training data, if one exists under the store.

    The data check matters: a change to a family's code changes the pool but not the config."""
    rid = run_id_for(cfg)
    rel = f"{store.run_dir(rid)}/run.json"
    if not (store.exists(rel) and store.exists(f"{store.run_checkpoints(rid)}/final/config.json")):
        return None
    rec = RunRecord.model_validate(store.read_json(rel))
    slice_hash = slice_hash or build_pool(cfg, store).slice_hash
    same = rec.provenance.config_hash == config_hash(cfg) and rec.provenance.dataset_slice_hash == slice_hash
    return rec if same else None


def slice_pool(spec: str, store: ArtifactStore | None = None) -> Pool:
    """The train split of a built slice, keyed by (family, difficulty); items without a reference
    solution have nothing to learn and are left out."""
    from squigglray.data.slice import read_items

    manifest, rows = read_items(spec, store, split="train")
    items: dict[tuple[str, str], list[ProblemInstance | TextInstance]] = {}
    for x in rows:
        if x.provenance.reference_solution:
            items.setdefault((x.family_id, x.difficulty), []).append(as_text(x))
    if not items:
        raise ValueError(f"slice {manifest.slice_id} has no train items with a reference solution")
    return Pool(items=items, slice_id=manifest.slice_id, slice_hash=manifest.hashes["items_sha256"])


def encode(tokenizer: PreTrainedTokenizerBase, inst: ProblemInstance | TextInstance) -> Encoded:
    prompt = tokenizer(format_prompt(inst.problem), add_special_tokens=False)["input_ids"]
    trace = tokenizer(inst.trace, add_special_tokens=False)["input_ids"]
    return Encoded.of(tokenizer, prompt, trace)


class CurriculumSampler:
    """Batches for steps 1..N: phase by step, then level and family by weight, then an instance."""

    def __init__(self, cfg: BaseTrainConfig, pool: Pool, tokenizer: PreTrainedTokenizerBase):
        self.cfg = cfg
        self.pad_id = tokenizer.pad_token_id
        self.encoded: dict[tuple[str, str], list[Encoded]] = {}
        self.dropped = self.chunked = 0  # examples whose prompt leaves no room; examples split into chunks
        for key, xs in pool.items.items():
            keep = []
            for x in xs:
                parts = chunks(encode(tokenizer, x), cfg.model.max_seq_len)
                self.dropped += not parts
                self.chunked += len(parts) > 1
                keep += parts  # a long solution's chunks are drawn as often as its length asks
            if keep:
                self.encoded[key] = keep
        self.families = sorted({f for f, _ in pool.items}) if cfg.data.slice else cfg.data.resolved_families()
        self.rng = np.random.default_rng(cfg.seed)
        ends, acc = [], 0.0
        for p in cfg.curriculum:
            acc += p.fraction
            ends.append(round(acc * cfg.train.steps))
        self.phase_ends = ends
        for p in cfg.curriculum:  # a phase with nothing to draw would loop forever in batch()
            fams = [f for f, w in (p.families or {f: 1.0 for f in self.families}).items() if w > 0]
            if not any((f, lv) in self.encoded for f in fams for lv, w in p.levels.items() if w > 0):
                raise ValueError(f"curriculum phase {p.name!r} draws families {sorted(fams)} at levels "
                                 f"{sorted(p.levels)}, and the training pool {pool.slice_id} has none of them "
                                 f"(within max_seq_len); it holds {sorted(self.encoded)}")

    def phase_at(self, step: int) -> Phase:
        for p, end in zip(self.cfg.curriculum, self.phase_ends):
            if step <= end:
                return p
        return self.cfg.curriculum[-1]

    def _pick(self, weights: dict[str, float]) -> str:
        names = sorted(weights)
        w = np.array([weights[n] for n in names], dtype=float)
        return names[self.rng.choice(len(names), p=w / w.sum())]

    def _rows(self, step: int) -> list[Encoded]:
        phase = self.phase_at(step)
        fam_w = phase.families or {f: 1.0 for f in self.families}
        rows: list[Encoded] = []
        while len(rows) < self.cfg.train.batch_size:
            key = (self._pick(fam_w), self._pick(phase.levels))
            pool = self.encoded.get(key)
            if pool:
                rows.append(pool[self.rng.integers(len(pool))])
        return rows

    def _collate(self, rows: list[Encoded]) -> dict[str, torch.Tensor]:
        if self.cfg.train.pack:
            return collate_packed(rows, self.pad_id, self.cfg.model.max_seq_len)
        return collate(rows, self.pad_id)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The step's whole batch (one worker)."""
        return self._collate(self._rows(step))

    def shard(self, rank: int, world: int, micro_batch_size: int = 0):
        """`next_batch` of data-parallel worker `rank` of `world`: every worker draws the same global
        batch (the same seed), keeps examples rank, rank + world, ... and returns them as micro-batches
        of `micro_batch_size` examples (0: one), each packed and carrying `num_items_in_batch`, the
        global batch's trained tokens: each micro-batch's loss is its share of the global mean, so the
        shares add up over micro-batches and workers (the Trainer scales by `world` against DDP's
        gradient averaging)."""
        if not 0 <= rank < world or world > self.cfg.train.batch_size:
            raise ValueError(f"worker {rank} of {world}: needs 0 <= rank < world <= train.batch_size "
                             f"({self.cfg.train.batch_size})")

        import torch

        def next_batch(step: int) -> list[dict[str, torch.Tensor]]:
            rows = self._rows(step)
            mine, total = rows[rank::world], torch.tensor(sum(len(r.ids) - r.n_prompt for r in rows))
            size = micro_batch_size or len(mine)
            return [{**self._collate(mine[i:i + size]), "num_items_in_batch": total} for i in range(0, len(mine), size)]

        return next_batch


def collate(rows: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids; labels are -100 on the prompt and padding, so loss is on the trace only."""
    import torch

    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.ids)
        ids[i, :n] = torch.tensor(r.ids)
        labels[i, r.n_prompt : n] = ids[i, r.n_prompt : n]
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack(rows: list[Encoded], row_len: int) -> list[list[Encoded]]:
    """Whole examples into bins of at most `row_len` tokens, first-fit decreasing."""
    bins: list[list[Encoded]] = []
    room: list[int] = []
    for r in sorted(rows, key=lambda r: -len(r.ids)):
        i = next((j for j, free in enumerate(room) if free >= len(r.ids)), None)
        if i is None:
            bins.append([r])
            room.append(row_len - len(r.ids))
        else:
            bins[i].append(r)
            room[i] -= len(r.ids)
    return bins


def packed_arrays(bins: list[list[Encoded]], width: int, pad_id: int) -> dict[str, np.ndarray]:
    """Bins as rows of `width` tokens: ids, labels (-100 off the trained tokens), each example's
    own positions (restarting at 0) and its segment number in the row (-1 on padding)."""
    n = len(bins)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    labels = np.full((n, width), -100, dtype=np.int64)
    pos = np.zeros((n, width), dtype=np.int64)
    seg = np.full((n, width), -1, dtype=np.int64)
    for b, examples in enumerate(bins):
        at = 0
        for k, r in enumerate(examples):
            m = len(r.ids)
            ids[b, at:at + m] = r.ids
            labels[b, at + r.n_prompt:at + m] = r.ids[r.n_prompt:]
            pos[b, at:at + m] = np.arange(m)
            seg[b, at:at + m] = k
            at += m
        pos[b, at:] = np.arange(width - at)
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "segment_ids": seg}


def packed_batch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Packed rows (`packed_arrays`) as a model batch, trimmed to the longest row: a block-diagonal
    causal mask per example, so its logits equal those of an unpacked forward pass."""
    import torch

    seg = torch.as_tensor(arrays["segment_ids"])
    width = int((seg >= 0).sum(dim=1).max())
    seg = seg[:, :width]
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    mask = causal & (seg[:, :, None] == seg[:, None, :])
    cut = {k: torch.as_tensor(arrays[k])[:, :width].long() for k in ("input_ids", "position_ids", "labels")}
    return {**cut, "attention_mask": mask[:, None]}


def collate_packed(rows: list[Encoded], pad_id: int, row_len: int) -> dict[str, torch.Tensor]:
    """Pack whole examples into rows of at most `row_len` tokens; padding shrinks from ~35% to a few %."""
    bins = pack(rows, row_len)
    return packed_batch(packed_arrays(bins, max(sum(len(r.ids) for r in b) for b in bins), pad_id))
