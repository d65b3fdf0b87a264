"""Ray Serve application: CLModel's SymPy / Z3 / math-verify tool verifiers over HTTP.

    serve run serve_apps.verifiers:app_builder workers=2      # CPU, a local Ray
    serve run serve_apps/verifiers.yaml                       # the same from the config file
    python -m squigglray.jobs.serve_verifiers --port 8000     # what `squigglray serve-verifiers` runs

    curl -s 127.0.0.1:8000/verify/equivalence -d '{"a": "\\frac{1}{2}", "b": "0.5"}'
    curl -s 127.0.0.1:8000/verify/z3 -d '{"op": "prove", "claim": "x*x >= 0", "assumptions": []}'
    curl -s 127.0.0.1:8000/tools/factor -d '{"expr": "x**2 - 1"}'

One deployment, `VerifierService` (FastAPI ingress), owning a `squigglray.verify.tools.ToolBox`
(tool worker processes with hard per-call deadlines, a canonicalize -> hash -> memo cache):

- POST /verify/equivalence  {"a", "b", "mode": "answer"|"expression", "syntax"?, "timeout_s"?}
                            -> {"equivalent": bool, ...ToolResult fields};
                            or {"pairs": [[a, b], ...], "mode", ...} -> {"mode", "results": [{"equivalent",
                            "status", ...ToolResult fields}, ...]}: one call_many under the request's
                            Budget (max_calls_per_request worker calls; cache hits are free)
- POST /verify/z3           {"op": "prove"|"satisfiable"|"counterexample", ...the op's args}
- POST /tools/{op}          the op's args (+ optional "timeout_s"); GET /tools lists the ops
- GET /healthz              status, tool stats (calls, cache hits/misses, timeouts, worker restarts), replica

With `require_api_key_env` naming an environment variable, every route but /healthz needs
`Authorization: Bearer <key>` (401 otherwise; squigglray.serve_auth). Handle calls are not HTTP and
need no key.

"answer" mode is math-verify (`answer_equivalent`: `\\boxed{1,234}` = `1234`), "expression" mode is
SymPy (`equivalent`: `(x+1)**2` = `x**2+2*x+1`). Every single call goes through one `@serve.batch`
method: calls arriving together run as one `ToolBox.call_many` (identical calls deduplicated,
spread over the workers) in a thread, so the event loop keeps serving. Deployment handles call `tool(op, args)` on the same path;
`HandleToolClient` wraps that as a `ToolClient` for CLModel's reasoner.

Status codes (the body is always JSON, the error in OpenAI's shape {"error": {"message", "type",
"param", "code"}} plus the ToolResult fields where a tool ran): 400 malformed JSON / missing field /
wrong type, 401 no or wrong API key (where one is required), 404 unknown op, 413 body or expression
too large, 422 unparseable input or another tool error, 429 over the per-request call budget, 504
the tool passed its deadline (its worker is killed and replaced; the replica keeps serving).

Thin on purpose: parsing, canonicalization, caching, deadlines and the tools themselves are
`squigglray.verify`.
"""

# no `from __future__ import annotations`: FastAPI must see the real `Request` class in route signatures
import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any, Literal, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator
from ray import serve
from ray.util import metrics

from serve_apps._http import error, read_json
from squigglray.config import build_config
from squigglray.engines.openai_api import describe, error_body
from squigglray.serve_auth import ApiKeyArgs, BearerAuth, read_api_key
from squigglray.verify.cache import MemoCache
from squigglray.verify.result import ToolResult
from squigglray.verify.tools import Budget, ToolBox
from squigglray.verify.tools import check_args  # the ToolBox's own signature check: 400 here, not the tool's 422

logger = logging.getLogger("ray.serve")

APP_NAME = "verifiers"
DEPLOYMENT = "VerifierService"
LATENCY_BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
# ToolResult.error_type -> HTTP status
STATUS = {"bad_input": 422, "unknown_op": 404, "too_large": 413, "timeout": 504, "budget": 429, "error": 422}
EQUIVALENCE_OPS = {"answer": "answer_equivalent", "expression": "equivalent"}
Z3_OPS = {"prove": "z3_prove", "satisfiable": "z3_satisfiable", "counterexample": "z3_counterexample"}


class VerifierAppArgs(ApiKeyArgs):
    """`args:` of the application (YAML, or `serve run serve_apps.verifiers:app_builder key=value ...`);
    `require_api_key_env` (the key clients must send) comes from squigglray.serve_auth.ApiKeyArgs."""

    model_config = ConfigDict(extra="forbid")

    # tools (squigglray.verify.tools.ToolBox)
    timeout_s: float = Field(2.0, gt=0, description="default deadline of one tool call")
    max_timeout_s: float = Field(10.0, gt=0, description="cap on a request's timeout_s (larger ones are clamped)")
    workers: int = Field(1, ge=1, description="tool worker processes per replica")
    startup_timeout_s: float = Field(60.0, gt=0, description="a tool worker's import/start limit")
    cache: bool = Field(True, description="memoize results (canonicalize -> hash -> cache)")
    cache_items: int = Field(100_000, ge=1, description="in-memory cache size per replica")
    cache_path: Optional[str] = Field(None, description="on-disk sqlite layer of the cache (made absolute)")
    max_expr_chars: int = Field(2000, ge=1, description="longer expressions get 413")
    # HTTP and batching
    max_body_bytes: int = Field(256 * 1024, ge=256, description="POST body limit (413 above it)")
    max_batch_size: int = Field(32, ge=1, description="calls run together in one ToolBox.call_many")
    batch_wait_timeout_s: float = Field(0.002, ge=0, description="how long a batch waits to fill")
    max_calls_per_request: int = Field(256, ge=1, description="tool calls one request may make (429 above; "
                                       "cache hits are free)")
    max_seconds_per_request: Optional[float] = Field(None, gt=0, description="tool seconds one request may use")
    # deployment
    num_cpus: float = Field(0.25, ge=0, description="CPUs each replica reserves (the tool workers are its children)")
    max_ongoing_requests: int = Field(64, ge=1)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> "VerifierAppArgs":
        if self.timeout_s > self.max_timeout_s:
            raise ValueError(f"timeout_s={self.timeout_s:g} is above max_timeout_s={self.max_timeout_s:g}")
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} is above max_replicas={self.max_replicas}")
        return self

    def resolved_cache_path(self) -> Optional[str]:
        """Absolute, so replicas whose working directory differs share the same file."""
        return str(Path(self.cache_path).expanduser().resolve()) if self.cache_path else None

    def deployment_options(self) -> dict[str, Any]:
        return {
            "ray_actor_options": {"num_cpus": self.num_cpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "autoscaling_config": {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                                   "initial_replicas": max(1, self.min_replicas),
                                   "target_ongoing_requests": self.target_ongoing_requests},
        }


# ---------------------------------------------------------------------------------------------
# request bodies (strict: `"a": 5` is a 400, not a silent str(5))

class EquivalenceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: Optional[StrictStr] = None
    b: Optional[StrictStr] = None
    pairs: Optional[list[tuple[StrictStr, StrictStr]]] = None
    mode: Literal["answer", "expression"] = "answer"
    syntax: Optional[Literal["auto", "latex", "sympy"]] = None
    timeout_s: Optional[float] = Field(None, gt=0, description="per-call deadline (capped at max_timeout_s)")

    @model_validator(mode="after")
    def _one_shape(self) -> "EquivalenceBody":
        if self.pairs is None and (self.a is None or self.b is None):
            missing = [k for k in ("a", "b") if getattr(self, k) is None]
            raise ValueError(f"send \"a\" and \"b\" (or \"pairs\"); missing {', '.join(missing)}")
        if self.pairs is not None and (self.a is not None or self.b is not None):
            raise ValueError("send either \"a\"/\"b\" or \"pairs\", not both")
        return self

    def args(self, a: str, b: str) -> dict:
        return {"a": a, "b": b, **({"syntax": self.syntax} if self.syntax else {})}


def _object(data: Any, example: str) -> Optional[JSONResponse]:
    if not isinstance(data, dict):
        return error(400, f"the body must be a JSON object like {example}, not {type(data).__name__}")
    return None


def _timeout_arg(args: dict) -> tuple[Optional[float], Optional[JSONResponse]]:
    """Pop the optional "timeout_s" of a tool body."""
    t = args.pop("timeout_s", None)
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf")):
        return None, error(400, f"timeout_s must be a positive number, not {t!r}", param="timeout_s")
    return t, None


def _signature_error(op: str, args: dict) -> Optional[JSONResponse]:
    """400 when args do not fit the op's signature (missing, unexpected, wrong JSON type); input
    that fits but cannot be parsed is the tool's own 'bad_input', a 422."""
    why = check_args(op, args)
    return None if why is None else error(400, f"{op}: {why}", param=_param_of(why))


def _param_of(why: str) -> Optional[str]:
    """The argument a signature complaint is about ("missing argument 'expr' ...", "expr must be ...")."""
    m = re.match(r"missing argument '(\w+)'|unexpected argument\(s\) \['(\w+)'|(\w+) (?:must|is) ", why)
    return next((g for g in m.groups() if g), None) if m else None


def status_of(r: ToolResult) -> int:
    return 200 if r.ok else STATUS.get(r.error_type or "error", 422)


def result_body(r: ToolResult, **extra: Any) -> dict[str, Any]:
    """A ToolResult as a response body: its fields (+ extra) on success; on failure the error in
    OpenAI's shape, with the ToolResult's other fields beside it."""
    fields = {**extra, **r.to_dict()}
    if r.ok:
        return fields
    fields.pop("error")
    return {**error_body(status_of(r), r.error or r.error_type or "tool error", r.error_type or "error"), **fields}


def respond(r: ToolResult, **extra: Any):
    body = result_body(r, **extra)
    return body if r.ok else JSONResponse(body, status_code=status_of(r))


def _verdict(r: ToolResult) -> Optional[bool]:
    return bool(r.result) if r.ok else None


# ---------------------------------------------------------------------------------------------
# the deployment

api = FastAPI(title="squigglray verifiers", description="SymPy / Z3 / math-verify tool verifiers (Ray Serve).")
api.add_middleware(BearerAuth, key=lambda: serve.get_replica_context().servable_object.api_key)


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class VerifierService:
    def __init__(self, args: dict):
        self.args = a = VerifierAppArgs.model_validate(args)
        self.api_key = read_api_key(a.require_api_key_env)  # before the workers start: unset fails here
        cache = MemoCache(max_items=a.cache_items, path=a.resolved_cache_path()) if a.cache else None
        self.toolbox = ToolBox(timeout_s=a.timeout_s, cache=cache, max_expr_chars=a.max_expr_chars,
                               workers=a.workers, startup_timeout_s=a.startup_timeout_s, use_cache=a.cache)
        self.toolbox.start()  # the workers' imports happen now: a ready replica answers its first call fast
        self.ops = self.toolbox.ops()
        self._batched.set_max_batch_size(a.max_batch_size)
        self._batched.set_batch_wait_timeout_s(a.batch_wait_timeout_s)
        self.batches = self.batched_calls = self.largest_batch = 0
        try:
            self.replica = serve.get_replica_context().replica_tag
        except Exception:  # noqa: BLE001 - outside a replica
            self.replica = None
        self.calls = metrics.Counter("squigglray_verifier_calls", "tool calls by op and HTTP status",
                                     tag_keys=("op", "status"))
        self.latency = metrics.Histogram("squigglray_verifier_seconds", "tool call latency by op (queue, batch, tool)",
                                         boundaries=LATENCY_BOUNDS, tag_keys=("op",))
        self.cache_hits = metrics.Counter("squigglray_verifier_cache_hits", "tool calls answered by the cache",
                                          tag_keys=("op",))
        self.batch_size = metrics.Histogram("squigglray_verifier_batch_size", "calls per batched ToolBox.call_many",
                                            boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256])

    # -- the path every single call takes -----------------------------------------------------

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, max_concurrent_batches=2)
    async def _batched(self, items: list[tuple[str, dict, float]]) -> list[ToolResult]:
        """(op, args, timeout_s) calls that arrived together -> one ToolBox.call_many per distinct
        deadline, in threads (identical calls run once; distinct ones spread over the workers).
        Two batches may run at once, so a batch stuck on a slow call does not hold up the next
        one: its cached answers come back at once, its other calls take the free workers."""
        self.batches += 1
        self.batched_calls += len(items)
        self.largest_batch = max(self.largest_batch, len(items))
        self.batch_size.observe(len(items))
        groups: dict[float, list[int]] = {}
        for i, (_, _, timeout) in enumerate(items):
            groups.setdefault(timeout, []).append(i)
        runs = await asyncio.gather(*(
            asyncio.to_thread(self.toolbox.call_many, [items[i][:2] for i in idx], timeout_s=timeout)
            for timeout, idx in groups.items()))
        out: list[Optional[ToolResult]] = [None] * len(items)
        for idx, results in zip(groups.values(), runs):
            for i, r in zip(idx, results):
                out[i] = r
        return out

    def _timeout(self, requested: Optional[float]) -> float:
        return min(requested or self.args.timeout_s, self.args.max_timeout_s)

    def _record(self, r: ToolResult, seconds: float) -> None:
        tag = r.op if r.op in self.ops else "unknown"
        self.calls.inc(1, tags={"op": tag, "status": str(status_of(r))})
        self.latency.observe(seconds, tags={"op": tag})
        if r.cached:
            self.cache_hits.inc(1, tags={"op": tag})

    async def call(self, op: str, args: dict, timeout_s: Optional[float] = None) -> ToolResult:
        """One tool call through the batch; never raises (a failure is an error result)."""
        t0 = time.perf_counter()
        try:
            r = await self._batched((op, args, self._timeout(timeout_s)))
        except Exception as e:  # noqa: BLE001
            logger.exception("tool call %s failed", op)
            r = ToolResult(op=op, ok=False, error_type="error", error=f"{e.__class__.__name__}: {e}")
        self._record(r, time.perf_counter() - t0)
        return r

    async def tool(self, op: str, args: dict, timeout_s: Optional[float] = None) -> dict:
        """For deployment-handle callers (`HandleToolClient`): a ToolResult as a dict."""
        return (await self.call(op, args, timeout_s)).to_dict()

    # -- routes -------------------------------------------------------------------------------

    @api.get("/healthz")
    async def healthz(self):
        return {"status": "ok", "replica": self.replica, "ops": len(self.ops), "workers": self.args.workers,
                "cache": self.args.cache, "stats": self.toolbox.stats(),
                "batching": {"batches": self.batches, "calls": self.batched_calls, "largest": self.largest_batch,
                             "max_batch_size": self.args.max_batch_size}}

    @api.get("/tools")
    async def list_tools(self):
        return {"ops": self.ops}

    @api.post("/verify/equivalence")
    async def equivalence(self, request: Request):
        """{"a", "b", "mode"?, "syntax"?, "timeout_s"?} -> {"equivalent", ...ToolResult};
        {"pairs": [[a, b], ...], ...} -> {"mode", "results": [{"equivalent", "status", ...}, ...]}."""
        data, bad = await read_json(request, self.args.max_body_bytes)
        if bad is not None:
            return bad
        if (bad := _object(data, '{"a": "1/2", "b": "0.5"}')) is not None:
            return bad
        try:
            body = EquivalenceBody.model_validate(data)
        except ValidationError as e:
            message, param = describe(e)
            return error(400, message, param=param)
        op = EQUIVALENCE_OPS[body.mode]
        if body.pairs is None:
            r = await self.call(op, body.args(body.a, body.b), body.timeout_s)
            return respond(r, equivalent=_verdict(r))
        return await self._pairs(op, body)

    async def _pairs(self, op: str, body: EquivalenceBody):
        """A request that is a batch already: one call_many under this request's Budget (worker
        calls and seconds; cache hits are free). Over budget: 429 with the results so far."""
        budget = Budget(max_calls=self.args.max_calls_per_request, max_seconds=self.args.max_seconds_per_request)
        calls = [(op, body.args(a, b)) for a, b in body.pairs]
        results = await asyncio.to_thread(self.toolbox.call_many, calls, timeout_s=self._timeout(body.timeout_s),
                                          budget=budget)
        for r in results:
            self._record(r, r.elapsed_s)
        items = [{**result_body(r, equivalent=_verdict(r)), "status": status_of(r)} for r in results]
        out = {"mode": body.mode, "results": items}
        refused = sum(r.error_type == "budget" for r in results)
        if refused:
            message = (f"{refused} of {len(results)} pairs were not checked: over this server's budget of "
                       f"{self.args.max_calls_per_request} tool calls per request"
                       + (f" / {self.args.max_seconds_per_request:g} tool seconds" if self.args.max_seconds_per_request
                          else "") + " (cached answers are free)")
            return JSONResponse({**error_body(429, message, "budget", "pairs"), **out}, status_code=429)
        return out

    @api.post("/verify/z3")
    async def z3(self, request: Request):
        """{"op": "prove"|"satisfiable"|"counterexample", ...the z3 op's args, "timeout_s"?}."""
        data, bad = await read_json(request, self.args.max_body_bytes)
        if bad is not None:
            return bad
        if (bad := _object(data, '{"op": "prove", "claim": "x*x >= 0"}')) is not None:
            return bad
        args = dict(data)
        kind = args.pop("op", None)
        if kind is None:
            return error(400, f"op: Field required (one of {', '.join(Z3_OPS)})", param="op")
        if not isinstance(kind, str):
            return error(400, f"op must be a string, not {type(kind).__name__}", param="op")
        if kind not in Z3_OPS:
            return error(404, f"unknown z3 op {kind!r}; known: {', '.join(Z3_OPS)}", "unknown_op", "op")
        return await self._run(Z3_OPS[kind], args)

    @api.post("/tools/{op}")
    async def tools(self, op: str, request: Request):
        """The op's args as a JSON object (+ optional "timeout_s")."""
        if op not in self.ops:
            return error(404, f"unknown op {op!r}; known ops: {', '.join(self.ops)}", "unknown_op", "op")
        data, bad = await read_json(request, self.args.max_body_bytes)
        if bad is not None:
            return bad
        if (bad := _object(data, '{"expr": "x**2 - 1"}')) is not None:
            return bad
        return await self._run(op, dict(data))

    async def _run(self, op: str, args: dict):
        timeout, bad = _timeout_arg(args)
        if bad is None:
            bad = _signature_error(op, args)
        if bad is not None:
            self.calls.inc(1, tags={"op": op, "status": str(bad.status_code)})
            return bad
        return respond(await self.call(op, args, timeout))

    def __del__(self):
        if getattr(self, "toolbox", None) is not None:
            self.toolbox.close()


# ---------------------------------------------------------------------------------------------
# a ToolClient over a deployment handle

class HandleToolClient:
    """`ToolClient` over the verifier deployment: `call(op, args) -> ToolResult`, as the in-process
    ToolBox answers, so CLModel's reasoner runs on the service unchanged.

        client = HandleToolClient(serve.get_app_handle("verifiers"))
        client.call("simplify", {"expr": "sin(x)**2 + cos(x)**2"}).result   # '1'

    `call` blocks (`DeploymentHandle...result()`): use it from plain threads, Ray tasks and actors;
    inside an asyncio event loop `await client.acall(op, args)`.
    """

    def __init__(self, handle, timeout_s: Optional[float] = None, request_timeout_s: Optional[float] = 120):
        self.handle = handle
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s

    def call(self, op: str, args: dict) -> ToolResult:
        d = self.handle.tool.remote(op, dict(args), self.timeout_s).result(timeout_s=self.request_timeout_s)
        return ToolResult.from_dict(d)

    async def acall(self, op: str, args: dict) -> ToolResult:
        return ToolResult.from_dict(await self.handle.tool.remote(op, dict(args), self.timeout_s))

    def call_many(self, calls: list[tuple[str, dict]]) -> list[ToolResult]:
        """Sent together, so the replica batches them."""
        responses = [self.handle.tool.remote(op, dict(args), self.timeout_s) for op, args in calls]
        return [ToolResult.from_dict(r.result(timeout_s=self.request_timeout_s)) for r in responses]


def app_builder(args: Optional[dict] = None) -> serve.Application:
    """The verifier application from `args` (VerifierAppArgs fields); bad args raise ConfigError naming them."""
    a = build_config(VerifierAppArgs, dict(args or {}))
    return VerifierService.options(**a.deployment_options()).bind(a.model_dump(mode="json"))
