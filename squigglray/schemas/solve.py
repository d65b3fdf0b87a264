"""The solver's request and result: what POST /solve accepts and returns, and what the CLI writes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

MAX_PROBLEM_CHARS = 20_000
VoteModeName = Literal["aimo", "majority", "general"]


class SolveOptions(BaseModel):
    """How to solve: N candidates, up to R code rounds each, then a vote. Defaults suit the tiny model."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(16, ge=1, le=1024, description="candidates (best-of-N)")
    rounds: int = Field(4, ge=0, le=16, description="code rounds per candidate (generate, run, feed back)")
    temperature: float = Field(0.8, ge=0.0, le=2.0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling: keep the smallest token set of this mass")
    max_tokens_per_round: int = Field(256, ge=1, le=32_768, description="tokens a candidate writes per round")
    code_timeout_s: float = Field(5.0, gt=0.0, le=120.0, description="wall-clock limit of one code block in the sandbox")
    output_chars: int = Field(600, ge=16, le=20_000, description="code output shown back to the model")
    execute_code: bool = Field(True, description="run the candidates' code (False: text-only sampling)")
    mode: VoteModeName = Field("aimo", description="the vote: aimo (integers in [0, 99999], weighted by "
                                                   "code success), majority, or general (math-verify equivalence)")
    early_stop: bool = Field(True, description="stop sampling once the leader cannot be overtaken or tied")
    agree_k: int | None = Field(None, ge=1, description="also stop once this many candidates agree")
    wave_size: int = Field(16, ge=1, le=1024, description="candidates generated together between vote checks")
    reflexion: bool = Field(True, description="after a failed code run, add a 'fix it' line (prompt style tir)")
    critique: bool = Field(False, description="one draft -> critique -> refine pass once a candidate has an answer")
    prompt: Literal["squigglray", "tir"] = Field("squigglray", description="prompt format: the project's own "
                                                                            "traces, or a generic TIR prompt")
    seed: int = Field(0, description="sampling seed: each candidate gets its own seed derived from it")


class SolveRequest(BaseModel):
    """Body of POST /solve. Unset options fall back to the server's defaults."""

    model_config = ConfigDict(extra="forbid")
    problem: str = Field(..., min_length=1, max_length=MAX_PROBLEM_CHARS)
    n: StrictInt | None = Field(None, ge=1, le=1024)
    rounds: StrictInt | None = Field(None, ge=0, le=16)
    code_timeout_s: float | None = Field(None, gt=0.0, le=120.0)
    mode: VoteModeName | None = None
    seed: StrictInt | None = None
    traces: StrictBool = False

    @field_validator("problem", mode="before")
    @classmethod
    def _problem_is_text(cls, v):
        if not isinstance(v, str):
            raise ValueError(f"problem must be a string, not {type(v).__name__}")
        if not v.strip():
            raise ValueError("problem is empty")
        return v

    def options(self, defaults: SolveOptions) -> SolveOptions:
        overrides = {k: v for k in ("n", "rounds", "code_timeout_s", "mode", "seed")
                     if (v := getattr(self, k)) is not None}
        return defaults.model_copy(update=overrides)


class CodeRun(BaseModel):
    code: str
    status: str
    output: str
    duration_s: float


class CandidateRecord(BaseModel):
    index: int
    answer: str | None
    code_ok: bool
    finished: bool
    rounds: int
    tokens: int
    weight: float
    code_runs: list[CodeRun] = []
    text: str | None = None  # the whole trace, when traces were asked for


class SolveResult(BaseModel):
    answer: str | None
    votes: dict[str, float]
    counts: dict[str, int]
    n_candidates: int  # generated (fewer than requested when the vote stopped early)
    n_requested: int
    stopped_early: bool
    tie_break: str | None = None
    tokens: int
    timings: dict[str, float]
    candidates: list[CandidateRecord] = []
