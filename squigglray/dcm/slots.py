"""The frozen model seen through soft prompts: [BOS] + mode + K content slots + target tokens.

Loss is on the target tokens only: the last prompt position predicts the first target token.
Rows are right-padded whole sequences, each with its own prompt length, so slot prompts and text
prompts (the baselines) go through the same code; padding sits after every real token of a row
and a causal model never sees it (so no attention mask is needed).

The last target token is never fed: nothing reads what it predicts.

Models without a BOS token (Qwen2.5, DeepSeek-R1-Distill) get no BOS; without a pad token the
padding id is EOS (or 0): padded positions are masked anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Frozen:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    embed: torch.Tensor  # [V, d] input embedding matrix (frozen)
    bos_id: int | None
    eos_id: int | None
    pad_id: int
    mode_emb: dict[str, torch.Tensor]  # mode -> [d]
    emb_std: torch.Tensor  # [d] per-dimension std of the embedding matrix
    device: torch.device

    @property
    def dim(self) -> int:
        return self.embed.shape[1]

    def prefix(self) -> torch.Tensor:
        """[0 or 1, d]: the BOS embedding when the model has one."""
        if self.bos_id is None:
            return self.embed[:0].float()
        return self.embed[self.bos_id : self.bos_id + 1].float()

    def encode(self, text: str, eos: bool) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids + ([self.eos_id] if eos and self.eos_id is not None else [])


def freeze(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, mode_words: dict[str, str]) -> Frozen:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    embed = model.get_input_embeddings().weight.detach()
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    modes = {}
    for mode, word in mode_words.items():
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        modes[mode] = embed[ids].float().mean(0)
    return Frozen(model=model, tokenizer=tokenizer, embed=embed, bos_id=tokenizer.bos_token_id, eos_id=eos,
                  pad_id=pad, mode_emb=modes, emb_std=embed.float().std(0), device=embed.device)


def row_losses(fz: Frozen, prompts: list[torch.Tensor] | torch.Tensor,
               targets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: mean cross-entropy over its target tokens, and its teacher-forced token accuracy.

    prompts: [R, P, d] (equal lengths: the optimizer's hot path) or a list of [P_i, d]; they may
    require grad. targets[i]: token ids (non-empty).
    """
    dev, dtype = fz.device, next(fz.model.parameters()).dtype
    n, t_max = len(targets), max(len(t) for t in targets)
    t_len = torch.tensor([len(t) for t in targets], device=dev)
    ids = torch.tensor([t + [fz.pad_id] * (t_max - len(t)) for t in targets], device=dev)
    tgt = fz.embed[ids[:, :-1]].to(dtype)  # the last target token predicts nothing that is scored
    if isinstance(prompts, torch.Tensor):
        p_len = torch.full((n,), prompts.shape[1], device=dev)
        full = torch.cat([prompts.to(dtype), tgt], 1)
    else:
        p_len = torch.tensor([p.shape[0] for p in prompts], device=dev)
        full = fz.embed.new_zeros(n, int(p_len.max()) + t_max - 1, fz.dim, dtype=dtype)
        for i, p in enumerate(prompts):
            full[i, : p.shape[0]] = p.to(dtype)
            full[i, p.shape[0] : p.shape[0] + len(targets[i]) - 1] = tgt[i, : len(targets[i]) - 1]
    steps = torch.arange(t_max, device=dev)
    valid = steps[None] < t_len[:, None]
    # No attention mask: padding only follows a row's real tokens, and causal attention never looks
    # ahead, so the positions read below are exactly those of the unpadded row (and SDPA keeps its
    # fast causal kernel, which matters most in the backward pass).
    # Logits only from the first position that predicts a target token on: the lm_head and softmax
    # over the slot positions would be thrown away.
    first = int(p_len.min()) - 1
    logits = fz.model(inputs_embeds=full, logits_to_keep=full.shape[1] - first).logits
    pos = (p_len - 1 - first)[:, None] + steps[None]  # the last prompt position predicts the first target token
    pos = pos.clamp(max=logits.shape[1] - 1)
    sel = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1])).float()
    labels = ids.masked_fill(~valid, -100)
    ce = F.cross_entropy(sel.transpose(1, 2), labels, reduction="none", ignore_index=-100)
    losses = ce.sum(1) / t_len
    accs = ((sel.argmax(-1) == ids) & valid).sum(1).float() / t_len
    return losses, accs.detach()


def slot_prompt(fz: Frozen, mode: str, slots: torch.Tensor) -> torch.Tensor:
    """[BOS] + mode embedding + the K slots: [P, d]."""
    return torch.cat([fz.prefix(), fz.mode_emb[mode][None], slots])


def slot_prompts(fz: Frozen, modes: list[str], slots: torch.Tensor) -> torch.Tensor:
    """[R, P, d] prompts for rows with these modes and slots [R, K, d], in one tensor."""
    n = slots.shape[0]
    mode = torch.stack([fz.mode_emb[m] for m in modes])[:, None]
    return torch.cat([fz.prefix()[None].expand(n, -1, -1), mode, slots], 1)


@torch.no_grad()
def greedy_decode(fz: Frozen, prompts: list[torch.Tensor], max_new: list[int]) -> list[list[int]]:
    """Greedy continuation of each prompt (same-length prompts batch together), stopping at EOS."""
    out: list[list[int]] = [[] for _ in prompts]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.shape[0], []).append(i)
    dtype = next(fz.model.parameters()).dtype
    for idx in groups.values():
        x = torch.stack([prompts[i] for i in idx]).to(dtype)
        past, done = None, torch.zeros(len(idx), dtype=torch.bool, device=fz.device)
        for step in range(max(max_new[i] for i in idx)):
            res = fz.model(inputs_embeds=x, past_key_values=past, use_cache=True)
            past = res.past_key_values
            nxt = res.logits[:, -1].float().argmax(-1)
            for j, i in enumerate(idx):
                if not done[j] and step < max_new[i]:
                    out[i].append(int(nxt[j]))
                    done[j] = bool(fz.eos_id is not None and int(nxt[j]) == fz.eos_id)
            if bool(done.all()):
                break
            x = fz.embed[nxt][:, None].to(dtype)
    return out
