"""The AIMO-style solver: tool-integrated best-of-N sampling, a sandbox for the code, weighted vote.

Domain code (no Ray): the TIR loop talks to an `Engine` (squigglray.engines) and a `CodeExecutor`
(a LocalExecutor here, or actors.sandbox_pool.SandboxPool on Ray).
"""

from squigglray.schemas.solve import SolveOptions, SolveRequest, SolveResult
from squigglray.solve.answers import as_aimo_integer, extract_answer, normalize_answer
from squigglray.solve.executor import CodeExecutor, LocalExecutor
from squigglray.solve.tir import sample_candidates, solve
from squigglray.solve.vote import CandidateAnswer, VoteResult, weighted_vote

__all__ = [
    "CandidateAnswer", "CodeExecutor", "LocalExecutor", "SolveOptions", "SolveRequest", "SolveResult",
    "VoteResult", "as_aimo_integer", "extract_answer", "normalize_answer", "sample_candidates", "solve",
    "weighted_vote",
]
