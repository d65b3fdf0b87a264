"""Adaptive complexity routing (seed 003): the entry router picks the first branch, the step router
may promote/demote by one branch per reasoning step.

Why Gumbel straight-through: branches are discrete (exactly one sub-tower runs), but the routers
must learn from the task loss; the forward pass uses a hard one-hot, the backward pass the softmax.
Why hysteresis and budgets: without them a router can ping-pong between branches (each move costs
a PUSH/POP and possibly a lazy VQ level) and spend unbounded latency; both are enforced by masking
the router's logits, so a forbidden move is never sampled and never receives gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from squigglray.clmodel.config import CLModelConfig

N_STATS = 2  # prompt_stats: fraction of the padded width in use, log length
MOVES = ("demote", "stay", "promote")
DEMOTE, STAY, PROMOTE = range(len(MOVES))
N_FEATURES = 10  # step_features: 5 confidence/value features, 2 lookahead, 3 budgets


def prompt_stats(mask: Tensor) -> Tensor:
    """(B, N_STATS) prompt statistics for the entry router: longer prompts tend to be harder."""
    n = mask.float().sum(1)
    return torch.stack([n / mask.shape[1], torch.log1p(n) / 10.0], -1)


def gumbel_st(logits: Tensor, tau: float = 1.0, hard: bool = True, training: bool = True) -> Tensor:
    """Gumbel-softmax over the last dim; hard: straight-through one-hot (forward hard, backward soft).
    Not training: no noise, so the hard choice is the argmax (deterministic eval)."""
    if training:
        logits = logits - torch.empty_like(logits).exponential_().log()
    y = F.softmax(logits / tau, -1)
    if not hard:
        return y
    one = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
    return one - y.detach() + y


class EntryRouter(nn.Module):
    """Picks the initial branch from the skim encoder's pooled h and prompt statistics (and VQ-L1's
    slot e1 when the caller has it). The trainer gives its parameters() a slow learning rate."""

    def __init__(self, cfg: CLModelConfig, n_stats: int = N_STATS):
        super().__init__()
        D = cfg.d_model
        self.norm_h, self.norm_e = nn.RMSNorm(D), nn.RMSNorm(D)
        self.net = nn.Sequential(nn.Linear(2 * D + n_stats, D), nn.SiLU(), nn.Linear(D, cfg.num_branches))

    def forward(self, h_skim: Tensor, stats: Tensor, e1: Tensor | None = None) -> Tensor:
        e1 = torch.zeros_like(h_skim) if e1 is None else e1
        return self.net(torch.cat([self.norm_h(h_skim), self.norm_e(e1), stats], -1))


def shift(branch: Tensor, delta: int) -> Tensor:
    """Move a (B, nb) one-hot by delta branches, clamped to [0, nb-1]; linear, so gradients pass."""
    nb = branch.shape[-1]
    i = torch.arange(nb, device=branch.device)
    P = torch.zeros(nb, nb, dtype=branch.dtype, device=branch.device)
    P[i, (i + delta).clamp(0, nb - 1)] = 1
    return branch @ P


def apply_move(branch: Tensor, move: Tensor) -> Tensor:
    """New branch one-hot from the (B, 3) straight-through move {demote, stay, promote}."""
    return move[:, DEMOTE:DEMOTE + 1] * shift(branch, -1) + move[:, STAY:STAY + 1] * branch \
        + move[:, PROMOTE:PROMOTE + 1] * shift(branch, 1)


def step_features(action_logits: Tensor, invalid_logits: Tensor, values: Tensor, branch: Tensor,
                  lookahead: Tensor, budget: Tensor, lambda_cost: float, k: int = 3) -> Tensor:
    """(B, N_FEATURES): top-k mass, normalised entropy and top-2 margin of the policy, max invalid-op
    probability, value gap V_{b+1} - V_b - lambda_cost, the shadow lookahead (B, 2), budgets left (B, 3)."""
    n = action_logits.shape[-1]
    p = action_logits.softmax(-1)
    mass = p.topk(min(k, n), -1).values.sum(-1)
    ent = -(p * action_logits.log_softmax(-1)).sum(-1) / math.log(n) if n > 1 else torch.zeros_like(mass)
    top2 = p.topk(min(2, n), -1).values
    margin = top2[:, 0] - top2[:, 1] if n > 1 else torch.ones_like(mass)
    invalid = invalid_logits.sigmoid().max(-1).values
    gap = (values * shift(branch, 1)).sum(-1) - (values * branch).sum(-1) - lambda_cost
    return torch.cat([torch.stack([mass, ent, margin, invalid, gap], -1), lookahead, budget], -1)


class StepRouter(nn.Module):
    """Logits over {demote, stay, promote} from step features and the current branch; the branch
    input lets the router calibrate the value gap per branch. Starts biased to "stay"."""

    def __init__(self, cfg: CLModelConfig, n_features: int = N_FEATURES):
        super().__init__()
        D = cfg.d_model
        self.net = nn.Sequential(nn.Linear(n_features + cfg.num_branches, D), nn.SiLU(), nn.Linear(D, len(MOVES)))
        with torch.no_grad():
            self.net[-1].bias.copy_(torch.tensor([0.0, 1.0, 0.0]))

    def forward(self, features: Tensor, branch: Tensor) -> Tensor:
        return self.net(torch.cat([features, branch], -1))


@dataclass
class BranchTracker:
    """Per-row routing bookkeeping: hysteresis cooldown and promotion/demotion counts."""

    cooldown: Tensor  # (B,) long: steps left during which the branch may not change
    promotions: Tensor  # (B,) long
    demotions: Tensor  # (B,) long

    @classmethod
    def start(cls, B: int, device) -> BranchTracker:
        z = torch.zeros(B, dtype=torch.long, device=device)
        return cls(z, z.clone(), z.clone())

    def allowed(self, bidx: Tensor, active: Tensor, cfg: CLModelConfig) -> Tensor:
        """(B, 3) bool: stay always; a move only for active rows out of cooldown, inside [0, nb-1],
        and promotion only within cfg.max_promotions."""
        free = active & (self.cooldown == 0)
        return torch.stack([free & (bidx > 0), torch.ones_like(free),
                            free & (bidx < cfg.num_branches - 1) & (self.promotions < cfg.max_promotions)], -1)

    def record(self, move_idx: Tensor, cfg: CLModelConfig) -> None:
        moved = move_idx != STAY
        self.promotions = self.promotions + (move_idx == PROMOTE).long()
        self.demotions = self.demotions + (move_idx == DEMOTE).long()
        window = torch.full_like(self.cooldown, cfg.hysteresis)
        self.cooldown = torch.where(moved, window, (self.cooldown - 1).clamp(min=0))


def route(router: nn.Module, features: Tensor, branch: Tensor, tracker: BranchTracker, active: Tensor,
          cfg: CLModelConfig, training: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One step-router decision. Returns the new branch one-hot (straight-through), the move index
    (B,) and (B, nb) log-probabilities of the next branch (for an aux branch-prediction loss)."""
    bidx = branch.argmax(-1)
    logits = router(features, branch).masked_fill(~tracker.allowed(bidx, active, cfg), float("-inf"))
    move = gumbel_st(logits, cfg.gumbel_tau, hard=True, training=training)
    move_idx = move.argmax(-1)
    tracker.record(move_idx, cfg)
    target = (bidx[:, None] + torch.arange(-1, 2, device=bidx.device)).clamp(0, cfg.num_branches - 1)
    p_next = branch.new_zeros(branch.shape).scatter_add(1, target, logits.softmax(-1))
    return apply_move(branch, move), move_idx, p_next.clamp_min(1e-6).log()
