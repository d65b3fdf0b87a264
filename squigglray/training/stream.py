"""Packed training batches from a stream (`data.stream`; the examples: data/stream.py).

Each step trains `train.global_batch_tokens` token slots (`rows_per_step` packed rows of
`model.max_seq_len`, split over the workers, each worker's share in micro-batches), so `train.steps`
x that is the run's token budget: the stream is read only as far as the budget needs, and starts
over when it runs out. Resume is exact: a run continued at step N+1 replays the N steps before.

    python -m pytest tests/test_stream_data.py
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
from transformers import PreTrainedTokenizerBase

from squigglray.config import ConfigError
from squigglray.data.stream import Encoded, StreamSource, TokenizeRows
from squigglray.training.config import BaseTrainConfig
from squigglray.training.data import packed_arrays, packed_batch


def held_out_problems(cfg: BaseTrainConfig) -> set[str]:
    """The probes' problems, which a stream drops (a pool leaves them out of the probes instead). A
    slice's probes come from its held-out splits, which its stream never reads (only its train
    split, which the slice build kept disjoint from them)."""
    from squigglray.eval.probes import probe_instances  # it imports training

    if not cfg.probes.enabled or cfg.data.slice:
        return set()
    return {x.problem for part in probe_instances(cfg, set()) for _, x in part}


def stream_tokenizer(cfg: BaseTrainConfig, src: StreamSource, tokenizer: PreTrainedTokenizerBase) -> TokenizeRows:
    """The config's TokenizeRows: the curriculum's one phase selects levels (and families, where
    it weights them); the probes' problems (`held_out_problems`) never reach training."""
    phase = cfg.curriculum[0]
    levels = [lv for lv, w in phase.levels.items() if w > 0]
    families = [f for f, w in phase.families.items() if w > 0] or None
    return TokenizeRows(tokenizer, cfg.model.max_seq_len, src.kind, held_out_problems(cfg), levels, families)


def rows_per_step(cfg: BaseTrainConfig, world: int = 1) -> int:
    """Packed rows of `model.max_seq_len` tokens each step trains, over all workers (each of `world`
    workers trains its share: a clear error when they cannot share them evenly)."""
    rows = cfg.train.global_batch_tokens // cfg.model.max_seq_len if cfg.train.global_batch_tokens else cfg.train.batch_size
    if rows % world:
        raise ConfigError(f"{world} workers cannot share the {rows} packed rows of a step evenly: make "
                          f"train.global_batch_tokens / model.max_seq_len a multiple of {world}")
    return rows


class StreamBatches:
    """`Trainer` batches from a stream of examples (`TokenizeRows` tables, from `epoch()`; a new
    epoch starts when one runs out): step s packs the stream's next examples, in order, first-fit
    into `rows` rows of `row_len` tokens (an example that fits no row waits for the next step, up to
    2 x `rows` of them), and returns them as micro-batches of `micro_batch_size` rows (0: one), each with
    `num_items_in_batch`, the trained tokens of the step over all workers (an all-reduce where
    torch.distributed runs). The first call replays the steps before it without training, so a run
    resumed at step N+1 trains what it would have (at tokenizer speed, far above training's)."""

    def __init__(self, epoch: Callable[[], Iterable[pa.Table]], rows: int, row_len: int, pad_id: int, seed: int,
                 micro_batch_size: int = 0):
        self.epoch, self.rows, self.row_len, self.pad_id = epoch, rows, row_len, pad_id
        self.micro = micro_batch_size or rows
        self.rng = np.random.default_rng(seed)
        self.epochs, self._it, self._shuffle, self._waiting, self._next_step = 0, None, [], [], 1

    def _read(self) -> pa.Table:
        """The stream's next table with an example in it, a new epoch after the last one."""
        fresh = self._it is None
        while True:
            if self._it is None:
                self._it, self.epochs = iter(self.epoch()), self.epochs + 1
            for t in self._it:
                if t.num_rows:
                    return t
            if fresh:  # a whole epoch without an example
                raise ValueError("the training stream holds no trainable example (every row held out, filtered "
                                 "by the curriculum's levels/families, or without a solution)")
            self._it, fresh = None, True

    def _examples(self) -> Iterator[Encoded]:
        """Examples that waited first, then the stream's through a shuffle buffer of SHUFFLE_BUFFER
        (the seed's order: a slice is one file, and seeds should not all see it alike)."""
        while self._waiting:
            yield self._waiting.pop(0)
        while True:
            while len(self._shuffle) < SHUFFLE_BUFFER:
                t = self._read()
                ids = t["ids"].combine_chunks()
                flat, offsets = ids.values.to_numpy(), ids.offsets.to_numpy()
                self._shuffle += [Encoded(flat[offsets[i]:offsets[i + 1]], int(n))
                                  for i, n in enumerate(t["n_prompt"].to_numpy())]
            yield self._shuffle.pop(int(self.rng.integers(len(self._shuffle))))

    def _pack_step(self) -> list[list[Encoded]]:
        bins: list[list[Encoded]] = [[] for _ in range(self.rows)]
        room = [self.row_len] * self.rows
        held: list[Encoded] = []
        for e in self._examples():
            i = next((j for j, free in enumerate(room) if free >= len(e.ids)), None)
            if i is None:
                held.append(e)
                if len(held) >= 2 * self.rows or max(room) < MIN_ROOM:
                    break
                continue
            bins[i].append(e)
            room[i] -= len(e.ids)
            if max(room) < MIN_ROOM:
                break
        self._waiting = held + self._waiting
        return bins

    def __call__(self, step: int) -> list[dict[str, torch.Tensor]]:
        for _ in range(step - self._next_step):  # resumed: replay the steps trained before
            self._pack_step()
        self._next_step = step + 1
        arrays = packed_arrays(self._pack_step(), self.row_len, self.pad_id)
        total = torch.tensor(int((arrays["labels"][:, 1:] != -100).sum()))
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
        return [{**packed_batch({k: v[i:i + self.micro] for k, v in arrays.items()}), "num_items_in_batch": total}
                for i in range(0, self.rows, self.micro)]


MIN_ROOM = 16  # a step's rows count as full when none has this many free tokens left
SHUFFLE_BUFFER = 256  # examples the seed draws each next one from (about 2 MB at context 2k)
