"""Process-isolation core for running model-written Python (see README "What the sandbox does not
protect against"). Domain code: no Ray here; actors/sandbox_pool.py puts Sandboxes behind Ray actors."""

from squigglray.solve.sandbox.client import Sandbox, SandboxError
from squigglray.solve.sandbox.result import STATUSES, Limits, RunResult, RunStatus

__all__ = ["Limits", "RunResult", "RunStatus", "STATUSES", "Sandbox", "SandboxError"]
