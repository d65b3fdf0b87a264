"""Residual vector quantization: CLModel's concept inventory (seed 003, "Residual vector quantization").

The codebook math follows lucidrains' vector-quantize-pytorch (`EuclideanCodebook`): codes are
buffers updated by EMA (decay `decay`) of cluster sizes and sums with Laplace-smoothed cluster sizes
(eps 1e-5), in training mode only; codes whose EMA cluster size falls below `dead_code_threshold`
are replaced by random vectors of the current batch's residuals with their cluster size reset to the
threshold (its `threshold_ema_dead_code`); the commitment loss is ||r - sg(q)||^2 (mean squared error)
* `commitment_weight`, and the output is straight-through.

What it does not have, hence this module rather than a dependency (the EMA math is a few lines):
- lazy per-row levels: VQ-L1 always, deeper levels per row on demand (`levels`), and `extend()` continues
  from a saved residual for some rows only, giving exactly what a full pass would have given;
- append-only ids: the codebook has `capacity` rows, ids are never reused or renumbered; `split`
  appends a perturbed copy at the next free id, `merge` retires a code and records it in a remap
  table (a buffer, so in state_dict), and `resolve` maps ids saved before a merge to live codes.
  (Dead-code recycling, as in lucidrains, gives a new vector to a live id nobody is using; retired
  ids are never recycled.)
- per-level freeze and an `active_levels` cap, for the staged warm-up L1 -> Lk;
- a diversity regulariser: `diversity_weight` * (log(n_live) - entropy of the batch-mean soft
  assignment softmax(-dist)), 0 when usage is uniform; and usage logging (perplexity, dead fraction).

Conventions: `level` arguments are 0-based (VQ-L1 is level 0, matching `out.indices[:, level]`);
`levels` in `forward` is a count (1..num_quantizers). z_q = x + (sum of codes - x).detach(), so its
gradient to x is the identity whatever the row's depth; `per_level[:, l]` is r_l + (q_l - r_l).detach()
per computed level. Usage counts update in training mode only, so an eval forward has no side effect.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from squigglray.clmodel.config import CLModelConfig
from squigglray.clmodel.types import RVQOutput

EPS = 1e-5
SPLIT_NOISE = 1e-2  # relative size of the perturbation that tells a split code from its parent


def _perplexity(counts: Tensor) -> float:
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0].double() / total
    return float(torch.exp(-(p * p.log()).sum()))


class ResidualVQ(nn.Module):
    def __init__(self, dim: int, codebook_size: int, num_quantizers: int, capacity: int | None = None,
                 decay: float = 0.9, commitment_weight: float = 0.25, diversity_weight: float = 0.05,
                 dead_code_threshold: float = 0.05, seed: int = 0):
        super().__init__()
        capacity = 2 * codebook_size if capacity is None else capacity
        if not (dim > 0 and num_quantizers >= 1 and 1 <= codebook_size <= capacity and 0 <= decay < 1):
            raise ValueError("ResidualVQ: need dim > 0, num_quantizers >= 1, 1 <= codebook_size <= capacity, "
                             "0 <= decay < 1")
        self.dim, self.codebook_size, self.num_quantizers, self.capacity = dim, codebook_size, num_quantizers, capacity
        self.decay, self.commitment_weight = decay, commitment_weight
        self.diversity_weight, self.dead_code_threshold = diversity_weight, dead_code_threshold
        self._gen = torch.Generator().manual_seed(seed)  # init, dead-code samples, split noise
        self._active = num_quantizers
        L, K = num_quantizers, capacity
        embed = torch.randn(L, K, dim, generator=self._gen) * dim ** -0.5
        live = torch.zeros(L, K, dtype=torch.bool)
        live[:, :codebook_size] = True
        cluster = live.float()  # one pseudo-count per live code, consistent with embed_avg = embed
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed * cluster[..., None])
        self.register_buffer("cluster_size", cluster)
        self.register_buffer("live", live)
        self.register_buffer("next_id", torch.full((L,), codebook_size, dtype=torch.long))
        self.register_buffer("remap", torch.arange(K).repeat(L, 1))
        self.register_buffer("code_usage", torch.zeros(L, K))
        self.register_buffer("frozen_mask", torch.zeros(L, dtype=torch.bool))

    @classmethod
    def from_config(cls, cfg: CLModelConfig, seed: int = 0) -> ResidualVQ:
        return cls(cfg.rvq_dim, cfg.codebook_size, cfg.num_quantizers, capacity=cfg.codebook_capacity,
                   decay=cfg.ema_decay, commitment_weight=cfg.commitment_weight,
                   diversity_weight=cfg.diversity_weight, dead_code_threshold=cfg.dead_code_threshold, seed=seed)

    # ---- staged warm-up -------------------------------------------------------------------------
    @property
    def active_levels(self) -> int:
        return self._active

    @active_levels.setter
    def active_levels(self, k: int) -> None:
        if not 1 <= k <= self.num_quantizers:
            raise ValueError(f"active_levels must be in 1..{self.num_quantizers}, got {k}")
        self._active = int(k)

    @property
    def frozen(self) -> set[int]:
        return {int(i) for i in self.frozen_mask.nonzero().flatten()}

    def freeze(self, levels: Iterable[int]) -> None:
        for lvl in levels:
            self.frozen_mask[self._level(lvl)] = True

    def unfreeze(self, levels: Iterable[int] | None = None) -> None:
        """Unfreeze `levels` (None: all)."""
        for lvl in range(self.num_quantizers) if levels is None else levels:
            self.frozen_mask[self._level(lvl)] = False

    def _level(self, level: int) -> int:
        if not 0 <= level < self.num_quantizers:
            raise ValueError(f"level is 0-based, in 0..{self.num_quantizers - 1}; got {level}")
        return int(level)

    # ---- quantization ---------------------------------------------------------------------------
    def forward(self, x: Tensor, levels: int | Tensor | None = None) -> RVQOutput:
        """Quantize levels 1..levels[b] of each row (None: all active levels; at least 1, at most active)."""
        x = x.float()
        B = x.shape[0]
        if levels is None:
            want = torch.full((B,), self._active, dtype=torch.long, device=x.device)
        elif isinstance(levels, int):
            want = torch.full((B,), levels, dtype=torch.long, device=x.device)
        else:
            want = levels.to(device=x.device, dtype=torch.long)
        per_level = x.new_zeros(B, self.num_quantizers, self.dim)
        indices = torch.full((B, self.num_quantizers), -1, dtype=torch.long, device=x.device)
        parts: list = [None] * self.num_quantizers
        return self._quantize(x - x.detach(), per_level, indices, x, want.clamp(1, self._active), parts)

    def extend(self, out: RVQOutput, rows: Tensor, upto: int) -> RVQOutput:
        """Compute levels up to `upto` (capped by active_levels) for `rows`, continuing from out.residual."""
        depth = out.computed.sum(1)
        rows = rows.to(device=depth.device, dtype=torch.bool)
        want = torch.where(rows, depth.clamp_min(min(upto, self._active)), depth)
        parts = list(out.stats["loss_parts"])
        return self._quantize(out.z_q, out.per_level, out.indices.clone(), out.residual, want, parts)

    def _quantize(self, z_q: Tensor, per_level: Tensor, indices: Tensor, residual: Tensor, want: Tensor,
                  parts: list) -> RVQOutput:
        for lvl in range(int(want.max()) if want.numel() else 0):
            rows = ((want > lvl) & (indices[:, lvl] < 0)).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            r = residual.index_select(0, rows)
            dist = self._dist(lvl, r)
            idx = dist.argmin(1)
            q = self.embed[lvl].index_select(0, idx)
            indices[rows, lvl] = idx
            per_level = per_level.index_put((rows, torch.full_like(rows, lvl)), r + (q - r).detach())
            residual = residual.index_put((rows,), r - q)
            z_q = z_q.index_add(0, rows, q)
            parts[lvl] = self._add_loss(parts[lvl], lvl, r, q, dist)
            if self.training:
                self._update(lvl, r.detach(), idx)
        terms = [(self.commitment_weight * c / (n * self.dim) + d / n) for c, d, n in filter(None, parts)]
        loss = torch.stack(terms).mean() if terms else z_q.new_zeros(())
        ppl = [_perplexity(torch.bincount(col[col >= 0], minlength=self.capacity)) for col in indices.T]
        return RVQOutput(z_q=z_q, per_level=per_level, indices=indices, computed=indices >= 0, residual=residual,
                         loss=loss, stats={"perplexity": torch.tensor(ppl), "loss_parts": parts})

    def _dist(self, lvl: int, r: Tensor) -> Tensor:
        e = self.embed[lvl].clone()  # autograd keeps it for backward; a training step then updates the buffer
        dist = r.pow(2).sum(1, keepdim=True) - 2 * r @ e.T + e.pow(2).sum(1)[None]
        return dist.masked_fill(~self.live[lvl][None], float("inf"))

    def _add_loss(self, acc, lvl: int, r: Tensor, q: Tensor, dist: Tensor):
        """Per-level accumulators (commitment sum, rows * diversity, rows), so extend() can add rows."""
        n = r.shape[0]
        commit = (r - q).pow(2).sum()
        p = torch.softmax(-dist, dim=1).mean(0)
        entropy = -(p * (p + 1e-12).log()).sum()
        diversity = self.diversity_weight * (math.log(int(self.live[lvl].sum())) - entropy)
        if acc is None:
            return commit, n * diversity, n
        return acc[0] + commit, acc[1] + n * diversity, acc[2] + n

    @torch.no_grad()
    def _update(self, lvl: int, r: Tensor, idx: Tensor) -> None:
        """EMA step, Laplace smoothing and dead-code expiry of one level (lucidrains' semantics)."""
        self.code_usage[lvl].index_add_(0, idx, torch.ones_like(idx, dtype=self.code_usage.dtype))
        if self.frozen_mask[lvl]:
            return
        live = self.live[lvl]
        counts = torch.bincount(idx, minlength=self.capacity).to(r.dtype)
        self.cluster_size[lvl].mul_(self.decay).add_(counts, alpha=1 - self.decay)
        sums = torch.zeros_like(self.embed_avg[lvl]).index_add_(0, idx, r)
        self.embed_avg[lvl].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        cs = self.cluster_size[lvl]
        n = cs[live].sum()
        smoothed = (cs + EPS) / (n + int(live.sum()) * EPS) * n
        self.embed[lvl] = torch.where(live[:, None], self.embed_avg[lvl] / smoothed[:, None], self.embed[lvl])
        dead = (live & (cs < self.dead_code_threshold)).nonzero().squeeze(1)
        if self.dead_code_threshold > 0 and dead.numel():
            k, m = dead.numel(), r.shape[0]
            pick = torch.randperm(m, generator=self._gen)[:k] if m >= k else torch.randint(m, (k,), generator=self._gen)
            sampled = r[pick.to(r.device)]
            self.embed[lvl, dead] = sampled
            self.embed_avg[lvl, dead] = sampled * self.dead_code_threshold
            self.cluster_size[lvl, dead] = self.dead_code_threshold
            self.code_usage[lvl, dead] = 0

    # ---- append-only ids ------------------------------------------------------------------------
    def _check_live(self, level: int, code: int) -> int:
        level = self._level(level)
        if not (0 <= code < self.capacity and self.live[level, code]):
            raise ValueError(f"code {code} is not a live code of level {level}")
        return level

    @torch.no_grad()
    def split(self, level: int, code: int) -> int:
        """Append a perturbed copy of `code` at the next free id (both share its EMA mass); returns the new id."""
        level = self._check_live(level, code)
        new = int(self.next_id[level])
        if new >= self.capacity:
            raise RuntimeError(f"level {level} codebook is full (capacity {self.capacity})")
        e = self.embed[level, code]
        noise = torch.randn(self.dim, generator=self._gen).to(e)
        self.cluster_size[level, code] /= 2
        self.embed_avg[level, code] /= 2
        self.embed[level, new] = e + noise * SPLIT_NOISE * e.pow(2).mean().sqrt().clamp_min(1e-6)
        self.cluster_size[level, new] = self.cluster_size[level, code]
        self.embed_avg[level, new] = self.embed[level, new] * self.cluster_size[level, new]
        self.live[level, new] = True
        self.next_id[level] += 1
        return new

    @torch.no_grad()
    def merge(self, level: int, keep: int, drop: int) -> None:
        """Retire `drop` into `keep`: keep absorbs its EMA mass and usage; ids resolving to drop now resolve to keep."""
        level = self._check_live(level, keep)
        self._check_live(level, drop)
        if keep == drop:
            raise ValueError("merge: keep and drop are the same code")
        self.cluster_size[level, keep] += self.cluster_size[level, drop]
        self.embed_avg[level, keep] = self.embed[level, keep] * self.cluster_size[level, keep]
        self.code_usage[level, keep] += self.code_usage[level, drop]
        self.live[level, drop] = False
        self.cluster_size[level, drop] = 0
        self.embed_avg[level, drop] = 0
        self.code_usage[level, drop] = 0
        self.remap[level][self.remap[level] == drop] = keep

    def resolve(self, level: int, ids: Tensor) -> Tensor:
        """Map ids (possibly saved before merges; -1 stays -1) to the live codes they now mean."""
        table = self.remap[self._level(level)]
        ids = ids.to(table.device)
        return torch.where(ids >= 0, table[ids.clamp_min(0)], ids)

    # ---- usage logging --------------------------------------------------------------------------
    def usage(self, level: int) -> Tensor:
        """Running count of assignments per code id (training mode; reset when a code is recycled)."""
        return self.code_usage[self._level(level)].clone()

    def perplexity(self, level: int) -> float:
        level = self._level(level)
        return _perplexity(self.code_usage[level][self.live[level]])

    def dead_fraction(self, level: int) -> float:
        live = self.live[self._level(level)]
        dead = live & (self.cluster_size[level] < self.dead_code_threshold)
        return float(dead.sum()) / max(int(live.sum()), 1)

    def health(self) -> dict[int, dict[str, float]]:
        out = {}
        for lvl in range(self.num_quantizers):
            live = self.live[lvl]
            out[lvl] = {"perplexity": self.perplexity(lvl), "used_codes": int((self.code_usage[lvl][live] > 0).sum()),
                        "dead_fraction": self.dead_fraction(lvl), "live_codes": int(live.sum())}
        return out
