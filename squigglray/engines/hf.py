"""Local generation with a transformers causal LM: our own batched sampling loop over a KV cache.

Why not `model.generate`: it draws every row from one global RNG, so a row's sample depends on
its batch neighbours. Here each row (prompt i, sample k) pre-draws its uniforms from its own CPU
generator seeded with derive_seed(seed_i, k) and samples by inverse CDF, so the same prompt and
seed give the same text whatever the batch holds (exactly, on CPU, for identical calls).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from dataclasses import dataclass, field, replace

import torch

from squigglray.engines.base import (
    Completion, Engine, EngineError, SamplingParams, derive_seed, encode_prompt, resolve_seeds, template_prompt,
)
from squigglray.models.compat import cache_kwargs


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class _Row:
    prompt: int  # index into the request's prompts
    k: int  # sample index within the prompt
    seed: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[dict] | None = None  # SamplingParams.logprobs: one entry per token
    result: Completion | None = None


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """Next token per row: argmax at temperature 0, else inverse-CDF sampling with uniforms `u`.

    Inverse CDF with a pre-drawn uniform is a pure function of (logits, u): tiny float noise in
    the logits moves the choice only when u lands right on a boundary.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs  # mass strictly ahead of each token
        probs = probs.masked_fill(before >= top_p, 0.0)  # the top token always survives
    cdf = probs.cumsum(dim=-1)
    target = (u.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    last = (probs > 0).long().cumsum(-1).argmax(-1, keepdim=True)  # index of the last candidate
    idx = torch.searchsorted(cdf, target, right=True).clamp(max=last)
    if order is not None:
        idx = order.gather(-1, idx)
    return idx.squeeze(-1)


class HFEngine(Engine):
    """Batched sampling from a transformers causal LM, one seeded RNG per (prompt, sample)."""

    name = "hf"
    supports_logprobs = True

    def __init__(self, model, tokenizer, device: str = "auto", max_batch_size: int = 64,
                 model_name: str | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size} must be >= 1")
        self.device = pick_device(device)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self._name = model_name or getattr(model.config, "name_or_path", "") or type(model).__name__
        self._lock = threading.Lock()  # one generation at a time, from any thread or event loop
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        ids |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else {gen_eos}
        self.stop_ids = {i for i in ids if i is not None}
        self.pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)

    @classmethod
    def from_pretrained(cls, spec: str, store=None, device: str = "auto", dtype: str | None = None,
                        max_batch_size: int = 64) -> HFEngine:
        """Load by folder, preset (through `store`) or hub id; bf16 on CUDA unless `dtype` says otherwise."""
        from squigglray.models.loading import load_model

        dev = pick_device(device)
        if dtype is None:
            torch_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        else:
            torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype, None)
            if not isinstance(torch_dtype, (str, torch.dtype)):
                raise ValueError(f"dtype={dtype!r} is not a torch dtype name (e.g. 'bfloat16', 'float16', 'float32')")
        model, tokenizer = load_model(spec, store, dtype=torch_dtype)
        return cls(model, tokenizer, device=str(dev), max_batch_size=max_batch_size, model_name=spec)

    @property
    def model_name(self) -> str:
        return self._name

    async def render_chat(self, messages: list[dict[str, str]]) -> str | None:
        return template_prompt(self.tokenizer, messages)

    async def generate(self, prompts: list[str], params: SamplingParams,
                       seeds: list[int] | None = None) -> list[list[Completion]]:
        return await asyncio.to_thread(self.generate_sync, prompts, params, seeds)

    def generate_sync(self, prompts: list[str], params: SamplingParams,
                      seeds: list[int] | None = None) -> list[list[Completion]]:
        """Blocking form of `generate` for scripts and tests."""
        if self.model is None:
            raise EngineError(f"HFEngine({self._name!r}) is closed")
        per_prompt = resolve_seeds(len(prompts), params, seeds)
        per_prompt = [s if s is not None else secrets.randbits(63) for s in per_prompt]
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        if any(not ids for ids in encoded):
            raise ValueError("a prompt encodes to no tokens (empty prompt and the tokenizer has no BOS)")
        rows = [_Row(i, k, derive_seed(per_prompt[i], k)) for i in range(len(prompts)) for k in range(params.n)]
        rows.sort(key=lambda r: len(encoded[r.prompt]))  # similar lengths share a chunk: less padding
        with self._lock, torch.inference_mode():
            was_training = self.model.training  # a trainer may hand us its live model: give it back as it was
            self.model.eval()
            try:
                for start in range(0, len(rows), self.max_batch_size):
                    self._run_chunk(rows[start : start + self.max_batch_size], encoded, params)
            finally:
                self.model.train(was_training)
        out: list[list[Completion]] = [[None] * params.n for _ in prompts]  # type: ignore[list-item]
        for r in rows:
            out[r.prompt][r.k] = r.result if r.logprobs is None else replace(r.result, logprobs=r.logprobs)
        return out

    def _run_chunk(self, rows: list[_Row], encoded: list[list[int]], params: SamplingParams) -> None:
        from transformers import DynamicCache

        dev = self.device
        uniq = list(dict.fromkeys(r.prompt for r in rows))  # prefill each prompt once, then fan out
        width = max(len(encoded[p]) for p in uniq)
        ids = torch.full((len(uniq), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(uniq), width), dtype=torch.long)
        for j, p in enumerate(uniq):
            ids[j, width - len(encoded[p]):] = torch.tensor(encoded[p])
            mask[j, width - len(encoded[p]):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         **cache_kwargs(self.model, cache), use_cache=True, logits_to_keep=1)
        fan = torch.tensor([uniq.index(r.prompt) for r in rows], device=dev)
        cache.batch_select_indices(fan)
        logits, mask, next_pos = out.logits[fan, -1], mask.to(dev)[fan], pos.to(dev)[fan, -1] + 1
        uniforms = torch.stack([
            torch.rand(params.max_tokens, generator=torch.Generator().manual_seed(r.seed), dtype=torch.float64)
            for r in rows
        ]).to(dev)
        active = list(range(len(rows)))
        for step in range(params.max_tokens):
            tok = sample_next(logits, params.temperature, params.top_p, uniforms[active, step])
            picked = tok.tolist()
            if params.logprobs is not None:
                self._log_probs([rows[i] for i in active], logits, tok, params.logprobs)
            keep = [b for b, i in enumerate(active) if not self._advance(rows[i], picked[b], encoded, params)]
            if not keep:
                return
            if len(keep) < len(active):  # finished rows leave the batch and stop costing compute
                sel = torch.tensor(keep, device=dev)
                cache.batch_select_indices(sel)
                tok, mask, next_pos = tok[sel], mask[sel], next_pos[sel]
                active = [active[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            out = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                             **cache_kwargs(self.model, cache), use_cache=True)
            logits, next_pos = out.logits[:, -1], next_pos + 1

    def _log_probs(self, rows: list[_Row], logits: torch.Tensor, tok: torch.Tensor, k: int) -> None:
        """Each row's next token's log-probability under the model (before temperature and top_p),
        and the k most likely tokens'."""
        lp = torch.log_softmax(logits.float(), dim=-1)
        chosen = lp.gather(-1, tok[:, None]).squeeze(-1).tolist()
        top = lp.topk(k, dim=-1)
        for row, t, v, ids, vals in zip(rows, tok.tolist(), chosen, top.indices.tolist(), top.values.tolist()):
            if row.logprobs is None:
                row.logprobs = []
            row.logprobs.append({"token": self._decode_one(t), "id": t, "logprob": v,
                                 "top_logprobs": [[self._decode_one(i), x] for i, x in zip(ids, vals)]})

    def _decode_one(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def _advance(self, row: _Row, token: int, encoded: list[list[int]], params: SamplingParams) -> bool:
        """Append one token; on finishing, set row.result and return True."""
        row.tokens.append(token)
        n_prompt = len(encoded[row.prompt])
        if token in self.stop_ids:
            row.result = Completion(self._decode(row.tokens[:-1]), "stop", None, n_prompt, len(row.tokens))
            return True
        # A new stop match must end in the newest token; a UTF-8 char is <= 4 bytes and a token >= 1,
        # so decoding the last 4*len+1 tokens finds it without re-decoding the whole completion.
        window = 4 * max((len(s) for s in params.stop), default=0) + 1
        if params.stop and any(s in self._decode(row.tokens[-window:]) for s in params.stop):
            text = self._decode(row.tokens)
            hits = [(text.find(s), s) for s in params.stop if s in text]
            if hits:
                at, s = min(hits, key=lambda h: h[0])
                row.result = Completion(text[:at], "stop", s, n_prompt, len(row.tokens))
                return True
        if len(row.tokens) >= params.max_tokens:
            row.result = Completion(self._decode(row.tokens), "length", None, n_prompt, len(row.tokens))
            return True
        return False

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    async def aclose(self) -> None:
        self.model = None  # let the weights be collected; the engine is done
