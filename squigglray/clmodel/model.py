"""`CLModel`: the stable forward contract of seed 003, assembled from swappable parts.

    model = CLModel(CLModelConfig.nano())
    out = model(ids, mask)            # logits_tok (B,T,C), logits_seq (B,C), vq_loss, indices, stop_logits, action_logits
    out = model(ids, mask, debug=True)  # + out.debug: routing, reasoner heads, RVQ stats, aux-head logits

The data path: skim encoder -> entry router (branch b0, Gumbel straight-through) -> heavy encoder on
rows with b0 >= heavy_from_branch (reusing the skim's work) -> residual VQ with levels 1..b0+1
(deeper levels are computed later, per row, only when the step router promotes a row) -> concept
slots -> cross-attention conditioning -> ReasonerV2 (typed state, ops, tools) -> UnifiedDecoder.

The entry router reads the skim encoder's pooled h and prompt statistics: VQ-L1 of the final h
(seed 003's e1) cannot exist before the router has chosen the encoder path, so e1 enters the
step router instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from squigglray.clmodel.conditioning import ConceptConditioning
from squigglray.clmodel.config import CLModelConfig
from squigglray.clmodel.decoder import UnifiedDecoder
from squigglray.clmodel.encoder import Encoder
from squigglray.clmodel.reasoner import ReasonerV2
from squigglray.clmodel.routing import EntryRouter, gumbel_st, prompt_stats
from squigglray.clmodel.rvq import ResidualVQ
from squigglray.clmodel.types import CLModelOutput
from squigglray.verify.result import ToolClient

WEIGHTS, CONFIG = "model.safetensors", "clmodel_config.json"


class CLModel(nn.Module):
    def __init__(self, cfg: CLModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.to_rvq = nn.Linear(cfg.d_model, cfg.rvq_dim)
        self.rvq = ResidualVQ.from_config(cfg)
        self.conditioning = ConceptConditioning(cfg)
        self.entry_router = EntryRouter(cfg)
        self.reasoner = ReasonerV2(cfg)
        self.decoder = UnifiedDecoder(cfg)
        # seed 003: auxiliary index-prediction heads on the encoder keep gradients flowing to it
        self.index_heads = nn.ModuleList(nn.Linear(cfg.d_model, cfg.codebook_capacity) for _ in range(cfg.num_quantizers))

    def forward(self, ids: Tensor, mask: Tensor, *, tools: ToolClient | None = None,
                tool_inputs: list[str | None] | None = None, op_targets: Tensor | None = None,
                tool_dropout: float = 0.0, debug: bool = False) -> CLModelOutput:
        cfg = self.cfg
        mask = mask.bool()
        skim = self.encoder.skim(ids, mask)
        entry_logits = self.entry_router(skim.h, prompt_stats(mask))
        branch0 = gumbel_st(entry_logits, cfg.gumbel_tau, hard=True, training=self.training)
        b0 = branch0.argmax(-1)
        enc = self.encoder(ids, mask, heavy=b0 >= cfg.heavy_from_branch, skim_out=skim)
        rvq_state = {"out": self.rvq(self.to_rvq(enc.h), levels=b0 + 1)}  # capped by rvq.active_levels
        slots, slot_mask = self.conditioning.slots(rvq_state["out"])
        H = self.conditioning(enc.H, slots, slot_mask)

        def need_level(rows: Tensor, level: int):
            """Lazy VQ: a promoted row gets its deeper level now; the others keep theirs."""
            rvq_state["out"] = self.rvq.extend(rvq_state["out"], rows, upto=level)
            return self.conditioning.slots(rvq_state["out"])

        r = self.reasoner(H, mask, enc.h, slots, slot_mask, branch0, e1=slots[:, 0], need_level=need_level,
                          tools=tools, tool_inputs=tool_inputs, op_targets=op_targets,
                          tool_dropout=tool_dropout, debug=debug)
        logits_tok, logits_seq, rationale = self.decoder(r.H_reasoned, r.s_final, mask)
        vq = rvq_state["out"]
        out = CLModelOutput(
            logits_tok=logits_tok, logits_seq=logits_seq, vq_loss=vq.loss,
            indices=[vq.indices[:, level] for level in range(cfg.num_quantizers)],
            stop_logits=r.stop_logits, action_logits=r.action_logits)
        if debug:
            out.debug = {
                "entry_logits": entry_logits, "branch0": b0, "heavy": enc.heavy, "rvq": vq, "reasoner": r,
                "rationale_logits": rationale,
                "index_logits": [head(enc.h) for head in self.index_heads],
            }
        return out

    # -- Hugging Face-style persistence ---------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG).write_text(json.dumps(self.cfg.to_dict(), indent=2))
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS))

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str = "cpu") -> CLModel:
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise FileNotFoundError(f"{path} holds no {CONFIG}: not a saved CLModel")
        model = cls(CLModelConfig.from_dict(json.loads((path / CONFIG).read_text())))
        model.load_state_dict(load_file(str(path / WEIGHTS), device=map_location))
        return model.eval()
