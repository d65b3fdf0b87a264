"""The AIMO-style solver: tool-integrated best-of-N sampling, a sandbox for the code, weighted vote.

Domain code (no Ray): the TIR loop (`solve.tir.solve`) talks to an `Engine` (squigglray.engines) and
a `CodeExecutor` (`solve.executor.LocalExecutor` here, or actors.sandbox_pool.SandboxPool on Ray).
Import from the modules: this package imports nothing, so `squigglray.solve.answers` (stdlib only,
the one box parser that data.rules reads too) stays light.
"""
