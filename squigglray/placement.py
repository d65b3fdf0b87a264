"""Where a workload runs on a heterogeneous cluster: a `Placement` per workload and the resource
names the cluster's node types declare. Pure (no ray import); actors/placement.py checks a placement
against the live cluster and hands the options to Ray.

    python -c "from squigglray.placement import DEFAULTS, to_ray_options; print(to_ray_options(DEFAULTS['probe']))"

Resource names (cluster.yaml and `ray start --resources` use exactly these):

==================  ==============================================================================
resource            declared by
==================  ==============================================================================
GPU                 every GPU node (Ray's own), one per GPU
gpu_mem_16g         every GPU with >= 16 GB, one per GPU
gpu_mem_32g         every GPU with >= 32 GB, one per GPU
gpu_mem_40g         every GPU with >= 40 GB, one per GPU
gpu_mem_80g         every GPU with >= 80 GB, one per GPU
accelerator_type:X  GPU nodes of type X (Ray advertises it itself on real GPUs; fake nodes declare it)
sandbox             CPU sandbox nodes (1 per node: a marker; CPUs bound how many sandboxes fit)
==================  ==============================================================================

The "at least" rule: a GPU declares its own memory class *and every smaller one*, so an 80 GB node
with 4 GPUs declares ``{"GPU": 4, "gpu_mem_80g": 4, "gpu_mem_40g": 4, "gpu_mem_32g": 4,
"gpu_mem_16g": 4}`` (`node_resources(4, 80, "H100")`), and a request for ``memory_class="40g"``
(``{"GPU": 1, "gpu_mem_40g": 1}``) lands on 40 GB or 80 GB nodes, never on 16/32 GB ones. A
placement asks for its memory class in the same amount as its GPUs (0.25 GPU -> gpu_mem_16g: 0.25),
so the class keys never run out before the GPUs do: GPU accounting stays Ray's own, the class keys
only filter nodes. A GPU under 16 GB declares no class: only placements without a memory_class land
there.

`DEFAULTS` are the cluster defaults per workload; every config's own default is `Placement()`
(one CPU, no GPU, no custom resource), so the laptop path needs nothing the laptop lacks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

MemoryClass = Literal["16g", "32g", "40g", "80g"]
MEMORY_CLASSES: dict[str, str] = {"16g": "gpu_mem_16g", "32g": "gpu_mem_32g", "40g": "gpu_mem_40g",
                                  "80g": "gpu_mem_80g"}
MEMORY_GB: dict[str, int] = {"16g": 16, "32g": 32, "40g": 40, "80g": 80}
SANDBOX_RESOURCE = "sandbox"
ACCELERATOR_PREFIX = "accelerator_type:"  # Ray's RESOURCE_CONSTRAINT_PREFIX
MARKER = 0.001  # what a placement asks of a marker resource (Ray asks the same of accelerator_type:X)
_RESERVED = {"CPU", "GPU", "memory", "object_store_memory"}


class PlacementError(ValueError):
    """No node of the cluster (nor any node type its autoscaler can launch) can ever run the request."""


class Placement(BaseModel):
    """What one task, actor, Tune trial or Serve replica of a workload needs from a single node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float = Field(1.0, ge=0, description="CPUs per task/actor/trial")
    gpus: float = Field(0.0, ge=0, description="GPUs; a fraction shares one GPU (0.25: four per GPU)")
    memory_class: MemoryClass | None = Field(None, description="minimum GPU memory; bigger GPUs also satisfy it")
    accelerator_type: str | None = Field(None, description="e.g. A100, H100 (Ray's accelerator_type:<X>)")
    sandbox: bool = Field(False, description="on CPU sandbox nodes (resource 'sandbox'); off on a laptop")
    resources: dict[str, float] = Field(default_factory=dict, description="further custom resources")

    @field_validator("accelerator_type")
    @classmethod
    def _accelerator(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or v.startswith(ACCELERATOR_PREFIX)):
            raise ValueError(f"accelerator_type is a type name like 'A100', not {v!r}")
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k in v if k in _RESERVED or k.lower() in ("cpu", "gpu"))
        if bad:
            raise ValueError(f"resources must not name {bad}: use cpus/gpus")
        if any(x < 0 for x in v.values()):
            raise ValueError(f"resource amounts must be >= 0, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Placement:
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ValueError(f"gpus above 1 must be a whole number (Ray's rule), got {self.gpus}")
        if self.gpus == 0 and (self.memory_class or self.accelerator_type):
            raise ValueError("memory_class and accelerator_type describe GPUs: they need gpus > 0")
        return self

    def describe(self) -> str:
        parts = [f"{self.cpus:g} CPU"]
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU" + (f" of >= {self.memory_class}" if self.memory_class else "")
                         + (f" ({self.accelerator_type})" if self.accelerator_type else ""))
        if self.sandbox:
            parts.append("a sandbox node")
        parts += [f"{k}={v:g}" for k, v in sorted(self.resources.items())]
        return ", ".join(parts)


def make_placement(what: str = "placement", **fields: Any) -> Placement:
    """Placement(**fields), or a one-line ValueError that starts with `what` (for config validators)."""
    try:
        return Placement.model_validate(fields)
    except ValidationError as e:
        reasons = "; ".join(f"{'.'.join(map(str, x['loc'])) + ': ' if x['loc'] else ''}"
                            f"{x['msg'].removeprefix('Value error, ')}" for x in e.errors())
        raise ValueError(f"{what}: {reasons}") from None


def custom_resources(p: Placement) -> dict[str, float]:
    """The custom resources of a placement (not CPU/GPU, not accelerator_type)."""
    out = dict(p.resources)
    if p.memory_class:
        out[MEMORY_CLASSES[p.memory_class]] = p.gpus
    if p.sandbox:
        out[SANDBOX_RESOURCE] = MARKER
    return out


def required_resources(p: Placement) -> dict[str, float]:
    """Everything one node must hold for the placement, in Ray's node resource names."""
    need = {"CPU": p.cpus, "GPU": p.gpus, **custom_resources(p)}
    if p.accelerator_type:
        need[ACCELERATOR_PREFIX + p.accelerator_type] = MARKER
    return {k: v for k, v in need.items() if v > 0}


def to_ray_options(p: Placement) -> dict[str, Any]:
    """`.options(**...)` of a task or actor (also Ray Data's map_batches ray_remote_args)."""
    opts: dict[str, Any] = {"num_cpus": p.cpus, "num_gpus": p.gpus}
    if p.accelerator_type:
        opts["accelerator_type"] = p.accelerator_type
    custom = custom_resources(p)
    if custom:
        opts["resources"] = custom
    return opts


def to_tune_resources(p: Placement) -> dict[str, float]:
    """The dict for `tune.with_resources(trainable, ...)` (unknown keys are custom resources)."""
    out = {"cpu": p.cpus, "gpu": p.gpus, **custom_resources(p)}
    if p.accelerator_type:
        out[ACCELERATOR_PREFIX + p.accelerator_type] = MARKER
    return out


def to_serve_actor_options(p: Placement) -> dict[str, Any]:
    """`ray_actor_options` of a Serve deployment."""
    return to_ray_options(p)


def from_resources(cpus: float = 1.0, gpus: float = 0.0, resources: dict[str, float] | None = None,
                   memory_class: str | None = None, accelerator_type: str | None = None,
                   sandbox: bool = False) -> Placement:
    """A placement from the older flat options (cpus/gpus per trial, a custom resources dict), reading
    gpu_mem_*, accelerator_type:X and sandbox keys of that dict back into their fields."""
    extra = dict(resources or {})
    for key in list(extra):
        if key.startswith(ACCELERATOR_PREFIX):
            accelerator_type = accelerator_type or key[len(ACCELERATOR_PREFIX):]
            extra.pop(key)
        elif key == SANDBOX_RESOURCE:
            sandbox = True
            extra.pop(key)
        elif key in MEMORY_CLASSES.values() and memory_class is None:
            memory_class = next(c for c, k in MEMORY_CLASSES.items() if k == key)
            extra.pop(key)
    return Placement(cpus=cpus, gpus=gpus, memory_class=memory_class, accelerator_type=accelerator_type,
                     sandbox=sandbox, resources=extra)


def trial_placement(what: str, base: Placement | None = None, cpus: float = 0.0, gpus: float = 0.0,
                    memory_class: str | None = None, accelerator_type: str | None = None,
                    resources: dict[str, float] | None = None) -> Placement:
    """A Tune trial's placement from a job's flat options: `base` (default: one CPU) with each option
    that is set (non-zero, not None) laid over it, plus `resources`, a custom-resources dict whose
    gpu_mem_*, accelerator_type:X and sandbox keys are read back into their fields. A bad combination
    raises a one-line ValueError that starts with `what`."""
    base = base or Placement()
    update = {k: v for k, v in (("cpus", cpus), ("gpus", gpus), ("memory_class", memory_class),
                                ("accelerator_type", accelerator_type)) if v}
    p = make_placement(what, **{**base.model_dump(), **update})
    if not resources:
        return p
    extra = from_resources(p.cpus, p.gpus, resources, p.memory_class, p.accelerator_type, p.sandbox)
    return make_placement(what, **{**extra.model_dump(), "resources": {**p.resources, **extra.resources}})


def node_resources(gpu_count: int, memory_gb: float, accelerator: str | None = None,
                   sandbox: bool = False) -> dict[str, float]:
    """The resources a node type declares: GPU, the memory classes its GPUs satisfy (each of them,
    one per GPU), accelerator_type:<X> when given, and the sandbox marker for sandbox nodes.

    node_resources(4, 80, "H100") -> {"GPU": 4, "gpu_mem_16g": 4, "gpu_mem_32g": 4, "gpu_mem_40g": 4,
    "gpu_mem_80g": 4, "accelerator_type:H100": 1}. CPUs are the node's own (num_cpus). With
    `ray.cluster_utils.Cluster.add_node` pass GPU as num_gpus and the rest as resources.
    """
    out: dict[str, float] = {}
    if gpu_count:
        out["GPU"] = gpu_count
        for cls, key in MEMORY_CLASSES.items():
            if memory_gb >= MEMORY_GB[cls]:
                out[key] = gpu_count
        if accelerator:
            out[ACCELERATOR_PREFIX + accelerator] = 1
    if sandbox:
        out[SANDBOX_RESOURCE] = 1
    return out


def fits(p: Placement, node: dict[str, float]) -> list[str]:
    """What the node (its total resources) lacks for the placement; empty when it fits."""
    missing = []
    for key, amount in required_resources(p).items():
        have = float(node.get(key, 0.0))
        if have + 1e-9 < amount:
            missing.append(f"{key} {amount:g} (has {have:g})" if have else key)
    return missing


def _signature(node: dict[str, float]) -> str:
    keep = {k: v for k, v in node.items() if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(keep.items())) + "}"


def check_nodes(p: Placement, nodes: list[dict[str, float]], what: str = "the request") -> None:
    """Raise PlacementError naming the request and the node types there are, unless a node fits."""
    if any(not fits(p, n) for n in nodes):
        return
    kinds: dict[str, int] = {}
    for n in nodes:
        kinds[_signature(n)] = kinds.get(_signature(n), 0) + 1
    listing = "; ".join(f"{count} x {sig}" for sig, count in kinds.items()) or "no alive node"
    raise PlacementError(
        f"no node can run {what} ({p.describe()}; needs {_signature(required_resources(p))} on one node). "
        f"The cluster has: {listing}. A node of a memory class declares that class and every smaller one "
        f"(squigglray.placement.node_resources); lower the request or add such a node type.")


# Cluster defaults per workload (the laptop default is Placement()): where each runs on a
# heterogeneous GPU cluster unless its config says otherwise.
DEFAULTS: dict[str, Placement] = {
    # ineq / large-model batch generation (Ray Data): a big model on one large GPU
    "generation": Placement(cpus=4, gpus=1, memory_class="80g"),
    # the solver's engine replica (a 7B-class model under vLLM): 40 GB or more
    "solver_engine": Placement(cpus=4, gpus=1, memory_class="40g"),
    # SFT of the base model (full fine-tune): a large GPU
    "sft": Placement(cpus=4, gpus=1, memory_class="80g"),
    # LoRA micro-finetune probes: small, four to a 16 GB+ GPU
    "probe": Placement(cpus=1, gpus=0.25, memory_class="16g"),
    # DCM soft-prompt trials: a frozen small model and [B, K, d] slots, one 16 GB+ GPU
    "dcm": Placement(cpus=1, gpus=1, memory_class="16g"),
    # sandbox executor actors: CPU sandbox nodes, never a GPU node
    "sandbox": Placement(cpus=1, sandbox=True),
}


def default_for(workload: str, **update: Any) -> Placement:
    """A workload's cluster default with some fields changed, e.g. default_for("probe", gpus=0.5)."""
    if workload not in DEFAULTS:
        raise ValueError(f"no placement default for {workload!r}; known workloads: {sorted(DEFAULTS)}")
    return Placement.model_validate({**DEFAULTS[workload].model_dump(), **update})


# An options field: a Placement, or a workload's name (the --placement flag) standing for its default.
NamedPlacement = Annotated[Placement | None, BeforeValidator(lambda v: default_for(v) if isinstance(v, str) else v)]
