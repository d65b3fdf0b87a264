"""Ray Serve application: the AIMO-style solver over HTTP.

    serve run serve_apps.solver:app_builder model=tiny       # CPU, the project's tiny model (./data)
    serve run serve_apps/solver.yaml                         # the same from the config file
    python -m squigglray.jobs.serve_solver --port 8000       # what `squigglray serve` runs

Two deployments and a pool of actors:

- `SolverEngine` holds one generation engine (hf on CPU by default; vllm with num_gpus on a cluster;
  openai pointed at any OpenAI-compatible server, e.g. a ray.serve.llm app).
- `SolverIngress` (FastAPI): POST /solve, GET /healthz, and POST /v1/completions + GET /v1/models
  forwarded to the engine, so <base>/v1 is an OpenAI-compatible server for the served model. It owns
  a `SandboxPool` (actors/sandbox_pool.py) that runs the candidates' code.

Limits a client cannot lift: n (max_n), max_tokens of /v1/completions (max_tokens_limit, checked in
the ingress before the engine sees the request), traces (only where allow_traces), and, when
require_api_key_env names a variable, the API key on every route but /healthz (squigglray.serve_auth).

Thin on purpose: the TIR loop and vote are `squigglray.solve.tir.solve`, request validation is
`squigglray.schemas.solve.SolveRequest`, the completions surface is `squigglray.engines.openai_api`.
Errors use OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

# no `from __future__ import annotations`: FastAPI must see the real `Request` class in route signatures
import asyncio
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, Optional

import ray
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from ray import serve
from ray.util import metrics

from actors.sandbox_pool import SandboxPool
from serve_apps._http import error, read_json
from squigglray.config import build_config
from squigglray.engines import Completion, Engine, EngineConfig, SamplingParams
from squigglray.engines.openai_api import describe, http_response, models_body, respond, validated
from squigglray.paths import default_root
from squigglray.placement import MemoryClass, Placement, make_placement, to_serve_actor_options
from squigglray.schemas.solve import SolveOptions, SolveRequest
from squigglray.serve_auth import ApiKeyArgs, BearerAuth, read_api_key
from squigglray.solve.tir import solve as solve_problem
from squigglray.solve.sandbox import Limits

logger = logging.getLogger("ray.serve")

ENGINE_DEPLOYMENT = "SolverEngine"
INGRESS_DEPLOYMENT = "SolverIngress"
LATENCY_BOUNDS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
# Ray exports a histogram's _sum from bucket midpoints (the open last bucket counts as twice its
# bound), so the bounds end at the largest possible value: 1024 candidates, a share of 1.
CANDIDATE_BOUNDS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
SHARE_BOUNDS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0]


class SolverAppArgs(ApiKeyArgs):
    """`args:` of the application (YAML, or `serve run serve_apps.solver:app_builder key=value ...`);
    `require_api_key_env` (the key clients must send) comes from squigglray.serve_auth.ApiKeyArgs."""

    model_config = ConfigDict(extra="forbid")

    # engine (see squigglray.engines.EngineConfig)
    model: str = Field("tiny", description="preset (through data_dir), checkpoint folder, hub id, or served name")
    backend: Literal["hf", "openai", "vllm"] = "hf"
    base_url: Optional[str] = Field(None, description="openai backend: e.g. http://127.0.0.1:8000/llm/v1")
    api_key_env: Optional[str] = Field(None, description="openai backend: name of the environment variable holding "
                                                         "the upstream server's key (sent to base_url); not the key "
                                                         "clients of this app send (require_api_key_env)")
    served_model_name: Optional[str] = Field(None, description="name on /v1/models (default: model)")
    device: str = "auto"
    dtype: Optional[str] = None
    max_batch_size: int = Field(64, ge=1)
    vllm_args: dict[str, Any] = Field(default_factory=dict)
    data_dir: Optional[str] = Field(None, description="artifact root holding presets; default $SQUIGGLRAY_DATA or ./data")
    engine_num_cpus: float = Field(0.25, ge=0)
    engine_num_gpus: float = Field(0, ge=0)
    engine_memory_class: Optional[MemoryClass] = Field(None, description="minimum GPU memory of the engine's GPU "
                                                                          "(16g, 32g, 40g, 80g; bigger GPUs qualify)")
    engine_accelerator_type: Optional[str] = Field(None, description="the engine's GPU type, e.g. A100, H100")
    engine_threads: Optional[int] = Field(None, ge=1, description="torch threads in the hf engine replica")
    engine_max_ongoing_requests: int = Field(64, ge=1)
    # ingress
    ingress_num_cpus: float = Field(0.25, ge=0)
    ingress_max_ongoing_requests: int = Field(16, ge=1)
    defaults: SolveOptions = Field(default_factory=SolveOptions, description="server-side SolveOptions")
    max_n: int = Field(64, ge=1, le=1024, description="largest n a request may ask for")
    max_tokens_limit: int = Field(4096, ge=1, description="largest max_tokens a POST /v1/completions request may ask "
                                  "for (400 above it, before the engine sees the request); also caps "
                                  "defaults.max_tokens_per_round, which a /solve request cannot set")
    allow_traces: bool = Field(False, description="POST /solve may return the candidates' traces (\"traces\": true: "
                               "the model's whole text, its code and the sandbox's output); when false such a "
                               "request gets 400")
    max_body_bytes: int = Field(64 * 1024, ge=256, description="POST /solve body limit (413 above it)")
    max_completion_body_bytes: int = Field(8 << 20, ge=256, description="POST /v1/completions body limit")
    solve_timeout_s: float = Field(600, gt=0, description="wall-clock limit of one /solve (504 after it)")
    equivalence_timeout_s: float = Field(2.0, gt=0, description="math-verify per comparison (mode 'general')")
    # sandbox pool
    sandbox_workers: int = Field(1, ge=1)
    sandbox_num_cpus: float = Field(0.25, ge=0)
    sandbox_max_in_flight: int = Field(2, ge=1)
    sandbox_isolation: Literal["auto", "process"] = "auto"
    sandbox_allow_weak_isolation: bool = Field(False, description="where no namespaces exist, run the sandbox in weak "
                                               "process mode instead of refusing to start (laptop only; see "
                                               "docs/sandbox.md)")
    sandbox_nodes: bool = Field(False, description="sandbox actors only on CPU sandbox nodes (resource 'sandbox')")
    sandbox_limits: dict[str, Any] = Field(default_factory=dict, description="squigglray.solve.sandbox.Limits fields")

    @field_validator("defaults", "vllm_args", "sandbox_limits", mode="before")
    @classmethod
    def _text_to_mapping(cls, v):
        """`serve run ... defaults='{n: 8}'` passes text; read it as YAML/JSON."""
        return yaml.safe_load(v) if isinstance(v, str) else v

    @field_validator("sandbox_limits")
    @classmethod
    def _limits(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            Limits(**v)
        except TypeError as e:
            raise ValueError(f"not squigglray.solve.sandbox.Limits fields ({e})") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SolverAppArgs":
        if self.defaults.n > self.max_n:
            raise ValueError(f"defaults.n={self.defaults.n} is above max_n={self.max_n}")
        if self.defaults.max_tokens_per_round > self.max_tokens_limit:
            raise ValueError(f"defaults.max_tokens_per_round={self.defaults.max_tokens_per_round} is above "
                             f"max_tokens_limit={self.max_tokens_limit}")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/llm/v1)")
        self.engine_placement()
        return self

    def engine_placement(self) -> Placement:
        """Where the engine replica runs (squigglray.placement): CPUs, GPUs, memory class, GPU type."""
        return make_placement("engine placement", cpus=self.engine_num_cpus, gpus=self.engine_num_gpus,
                              memory_class=self.engine_memory_class, accelerator_type=self.engine_accelerator_type)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(backend=self.backend, model=self.model, base_url=self.base_url,
                            api_key_env=self.api_key_env, device=self.device, dtype=self.dtype,
                            max_batch_size=self.max_batch_size, vllm_args=self.vllm_args)

    def resolved_data_dir(self) -> str:
        """Absolute, so replicas whose working directory differs still find the presets."""
        root = self.data_dir or default_root()
        return root if "://" in root else str(Path(root).expanduser().resolve())

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model


# ---------------------------------------------------------------------------------------------
# the engine deployment

@serve.deployment(name=ENGINE_DEPLOYMENT, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
class EngineDeployment:
    """One generation engine; `generate` for the solver, `completions` for OpenAI clients."""

    def __init__(self, engine: dict, data_dir: Optional[str] = None, served_model_name: Optional[str] = None,
                 threads: Optional[int] = None):
        from squigglray.engines import make_engine
        from squigglray.paths import ArtifactStore

        cfg = EngineConfig.model_validate(engine)
        if cfg.backend == "hf" and cfg.device == "auto" and not ray.get_gpu_ids():
            cfg = cfg.model_copy(update={"device": "cpu"})  # a CPU replica may still see the node's GPUs
        if cfg.backend == "hf" and threads:
            import torch

            torch.set_num_threads(threads)
        self.cfg = cfg
        self.engine = make_engine(cfg, ArtifactStore(data_dir) if data_dir else None)
        self.model_name = served_model_name or cfg.model
        self.created = int(time.time())
        self.tokens = metrics.Counter("squigglray_engine_tokens", "tokens through the engine deployment",
                                      tag_keys=("kind",))

    def _count(self, prompt: int, completion: int) -> None:
        for kind, n in (("prompt", prompt), ("completion", completion)):
            if n:  # Counter.inc rejects 0
                self.tokens.inc(n, tags={"kind": kind})

    async def generate(self, prompts: list[str], params: dict, seeds: Optional[list[int]] = None) -> list[list[dict]]:
        outs = await self.engine.generate(prompts, SamplingParams(**params), seeds)
        # a prompt's samples share its prompt tokens: count them once per prompt
        self._count(sum(row[0].prompt_tokens for row in outs if row),
                    sum(c.completion_tokens for row in outs for c in row))
        return [[asdict(c) for c in row] for row in outs]

    async def completions(self, body: Any, route: str = "completions") -> tuple[int, dict]:
        """OpenAI /v1/completions or, with route "chat", /v1/chat/completions: (status, JSON body),
        the same behaviour as openai_api.build_app."""
        status, payload = await respond(self.engine, body, self.model_name, route)
        usage = payload.get("usage") or {}
        self._count(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
        return status, payload

    async def render_chat(self, messages: list[dict]) -> Optional[str]:
        return await self.engine.render_chat(messages)

    def models(self) -> dict:
        return models_body(self.model_name, self.created)

    def info(self) -> dict:
        return {"model": self.model_name, "backend": self.cfg.backend, "device": self.cfg.device}

    async def __del__(self):
        if getattr(self, "engine", None) is not None:
            await self.engine.aclose()


class HandleEngine(Engine):
    """The engine deployment behind the `Engine` protocol, so `solve()` runs on it unchanged."""

    name = "serve"

    def __init__(self, handle, model_name: str):
        self.handle = handle
        self._model = model_name

    @property
    def model_name(self) -> str:
        return self._model

    async def generate(self, prompts: list[str], params: SamplingParams,
                       seeds: Optional[list[int]] = None) -> list[list[Completion]]:
        rows = await self.handle.generate.remote(list(prompts), asdict(params), None if seeds is None else list(seeds))
        return [[Completion(**d) for d in row] for row in rows]

    async def render_chat(self, messages: list[dict[str, str]]) -> Optional[str]:
        return await self.handle.render_chat.remote(messages)


# ---------------------------------------------------------------------------------------------
# the ingress

api = FastAPI(title="squigglray solver", description="Tool-integrated best-of-N math solver (Ray Serve).")
api.add_middleware(BearerAuth, key=lambda: serve.get_replica_context().servable_object.api_key)


@serve.deployment(name=INGRESS_DEPLOYMENT, max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class SolverIngress:
    def __init__(self, engine, args: dict):
        self.args = SolverAppArgs.model_validate(args)
        self.api_key = read_api_key(self.args.require_api_key_env)  # before anything starts: unset fails here
        self.engine_handle = engine
        self.engine = HandleEngine(engine, self.args.served_name)
        self.pool = SandboxPool(size=self.args.sandbox_workers, limits=Limits(**self.args.sandbox_limits),
                                num_cpus=self.args.sandbox_num_cpus, max_in_flight=self.args.sandbox_max_in_flight,
                                sandbox_nodes=self.args.sandbox_nodes, isolation=self.args.sandbox_isolation,
                                allow_weak_isolation=self.args.sandbox_allow_weak_isolation)
        self._equivalence = None
        self.requests = metrics.Counter("squigglray_solve_requests", "POST /solve by HTTP status",
                                        tag_keys=("status",))
        self.latency = metrics.Histogram("squigglray_solve_seconds", "POST /solve wall time (200s)",
                                         boundaries=LATENCY_BOUNDS)
        self.candidates = metrics.Histogram("squigglray_solve_candidates", "candidates generated per /solve (200s)",
                                            boundaries=CANDIDATE_BOUNDS)
        self.vote_share = metrics.Histogram("squigglray_solve_vote_share",
                                            "the winning answer's share of the weighted vote (200s with an answer)",
                                            boundaries=SHARE_BOUNDS)

    async def _equivalence_checker(self):
        """math-verify in a subprocess (its signal.alarm timeouts cannot work in a replica's threads);
        started off the event loop, since importing math-verify takes seconds."""
        if self._equivalence is None:
            from squigglray.solve.equivalence import EquivalenceChecker

            checker = EquivalenceChecker(timeout_s=self.args.equivalence_timeout_s)
            await asyncio.to_thread(checker.equivalent, "1", "2")  # two different answers start the worker
            if self._equivalence is None:
                self._equivalence = checker
            else:
                checker.close()
        return self._equivalence

    def _done(self, response, t0: Optional[float] = None):
        status = response.status_code if isinstance(response, JSONResponse) else 200
        self.requests.inc(1, tags={"status": str(status)})
        if t0 is not None and status == 200:
            self.latency.observe(time.perf_counter() - t0)
        return response

    @api.get("/healthz")
    async def healthz(self):
        """200 when the engine deployment and every sandbox worker answer; 503 naming which does not."""
        try:
            info = await asyncio.wait_for(self.engine_handle.info.remote(), 30)
        except Exception as e:  # noqa: BLE001 - report any failure as unhealthy
            return error(503, f"engine deployment not responding: {e.__class__.__name__}: {e}", "unavailable")
        try:
            workers = await asyncio.wait_for(asyncio.to_thread(self.pool.ready, 60), 65)
        except Exception as e:  # noqa: BLE001
            return error(503, f"sandbox pool not ready: {e.__class__.__name__}: {e}", "unavailable")
        if not all(w["alive"] for w in workers):
            return error(503, "a sandbox worker's zygote is down", "unavailable")
        return {"status": "ok", **info, "sandbox": {"workers": len(workers), "mode": workers[0]["mode"],
                                                  "isolation": workers[0]["isolation"]},
                "defaults": self.args.defaults.model_dump(), "max_n": self.args.max_n,
                "max_tokens_limit": self.args.max_tokens_limit, "allow_traces": self.args.allow_traces}

    @api.post("/solve")
    async def solve(self, request: Request):
        """Body: SolveRequest (problem, optional n, rounds, code_timeout_s, mode, seed, traces)."""
        t0 = time.perf_counter()
        data, bad = await read_json(request, self.args.max_body_bytes)
        if bad is not None:
            return self._done(bad)
        if not isinstance(data, dict):
            return self._done(error(422, f"the body must be a JSON object like {{\"problem\": \"...\"}}, "
                                         f"not {type(data).__name__}"))
        try:
            req = SolveRequest.model_validate(data)
        except ValidationError as e:
            message, param = describe(e)
            return self._done(error(422, message, param=param))
        if req.traces and not self.args.allow_traces:
            return self._done(error(400, "traces: this server does not return traces (its allow_traces is false); "
                                         "leave traces out", param="traces"))
        opts = req.options(self.args.defaults)
        if opts.n > self.args.max_n:
            return self._done(error(422, f"n: {opts.n} is above this server's limit of {self.args.max_n} candidates",
                                    param="n"))
        equivalence = await self._equivalence_checker() if opts.mode == "general" else None
        try:
            result = await asyncio.wait_for(
                solve_problem(req.problem, self.engine, self.pool, opts, equivalence=equivalence, traces=req.traces),
                self.args.solve_timeout_s)
        except asyncio.TimeoutError:
            return self._done(error(504, f"solve took longer than {self.args.solve_timeout_s} s", "timeout"))
        except ValueError as e:
            return self._done(error(422, str(e)))
        except Exception as e:  # noqa: BLE001 - the engine or a worker failed: say so, keep serving
            logger.exception("solve failed")
            return self._done(error(500, f"solve failed: {e.__class__.__name__}: {e}", "server_error"))
        self.candidates.observe(result.n_candidates)
        total_votes = sum(result.votes.values())
        if result.answer is not None and total_votes > 0:
            self.vote_share.observe(result.votes.get(result.answer, 0.0) / total_votes)
        body = result.model_dump(mode="json")
        if not req.traces:
            body["candidates"] = []
        body["model"] = self.args.served_name
        logger.info("solve n=%d -> %r (%d candidates, %.2fs)", opts.n, result.answer, result.n_candidates,
                    result.timings.get("total_s", 0.0))
        return self._done(body, t0)

    async def _openai(self, request: Request, route: str):
        """An OpenAI body checked here (fields this server does not honour, max_tokens above
        max_tokens_limit: a 400 before the engine sees it), answered by the engine deployment; JSON,
        or server-sent events when it asks to stream."""
        data, bad = await read_json(request, self.args.max_completion_body_bytes)
        if bad is not None:
            return bad
        req, refusal = validated(route, data)
        if refusal is not None:
            return JSONResponse(refusal[1], status_code=refusal[0])
        if req.max_tokens > self.args.max_tokens_limit:
            field = "max_completion_tokens" if route == "chat" and "max_completion_tokens" in data else "max_tokens"
            return error(400, f"{field}: {req.max_tokens} is above this server's limit of "
                              f"{self.args.max_tokens_limit} tokens (max_tokens_limit)", param=field)
        status, payload = await self.engine_handle.completions.remote(data, route)
        return http_response(status, payload, data)

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        """OpenAI's completion body (`stream` too)."""
        return await self._openai(request, "completions")

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        """OpenAI's chat completion body (`stream` too): text messages through the model's chat
        template, or the project's raw format (Engine.render_chat)."""
        return await self._openai(request, "chat")

    @api.get("/v1/models")
    async def models(self):
        return await self.engine_handle.models.remote()

    def __del__(self):
        if getattr(self, "_equivalence", None) is not None:
            self._equivalence.close()
        if getattr(self, "pool", None) is not None:
            self.pool.shutdown()


def app_builder(args: dict) -> serve.Application:
    """The solver application from `args` (SolverAppArgs fields); bad args raise ConfigError naming them.

    Built on the cluster (`serve run/deploy <config>`, squigglray.jobs.serve_solver), an engine placement
    that no node can hold raises PlacementError, so the deploy fails with the node types there are
    instead of a replica pending forever. Called in a driver, it only binds (checks nothing)."""
    a = build_config(SolverAppArgs, dict(args or {}))
    placement = a.engine_placement()
    if ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
        from actors.placement import check_feasible

        check_feasible(placement, what=f"the solver engine replica ({a.model})")
    engine_opts = to_serve_actor_options(placement)
    engine = EngineDeployment.options(
        ray_actor_options=engine_opts, max_ongoing_requests=a.engine_max_ongoing_requests,
    ).bind(a.engine_config().model_dump(mode="json"), a.resolved_data_dir(), a.served_name, a.engine_threads)
    return SolverIngress.options(
        ray_actor_options={"num_cpus": a.ingress_num_cpus}, max_ongoing_requests=a.ingress_max_ongoing_requests,
    ).bind(engine, a.model_dump(mode="json"))
