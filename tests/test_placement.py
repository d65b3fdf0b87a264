"""Placement policy: the pure rules (options, the "at least" memory-class rule, per-workload defaults),
the workloads' wiring, fail-fast checks on the session's laptop Ray, and a simulated heterogeneous
cluster (tests/cluster_scenarios.py, in a subprocess) where each workload lands on its node type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from squigglray.config import ConfigError, build_config, config_hash
from squigglray.placement import (
    DEFAULTS, MARKER, MEMORY_CLASSES, SANDBOX_RESOURCE, Placement, PlacementError, check_nodes, default_for, fits,
    from_resources, make_placement, node_resources, required_resources, to_ray_options, to_serve_actor_options,
    to_tune_resources,
)

ROOT = Path(__file__).resolve().parents[1]


# -- the pure module ----------------------------------------------------------------------------

def test_resource_names_are_the_shared_contract():
    assert MEMORY_CLASSES == {"16g": "gpu_mem_16g", "32g": "gpu_mem_32g", "40g": "gpu_mem_40g",
                              "80g": "gpu_mem_80g"}
    assert SANDBOX_RESOURCE == "sandbox"


@pytest.mark.parametrize("gpus, memory_gb, accelerator, expected", [
    (4, 80, "H100", {"GPU": 4, "gpu_mem_16g": 4, "gpu_mem_32g": 4, "gpu_mem_40g": 4, "gpu_mem_80g": 4,
                     "accelerator_type:H100": 1}),
    (8, 40, "A100", {"GPU": 8, "gpu_mem_16g": 8, "gpu_mem_32g": 8, "gpu_mem_40g": 8, "accelerator_type:A100": 1}),
    (1, 48, None, {"GPU": 1, "gpu_mem_16g": 1, "gpu_mem_32g": 1, "gpu_mem_40g": 1}),  # L40S: >= 40g
    (2, 24, "RTX4090", {"GPU": 2, "gpu_mem_16g": 2, "accelerator_type:RTX4090": 1}),
    (1, 12, None, {"GPU": 1}),                # below every class: only class-less requests land there
    (1, 141, "H200", {"GPU": 1, **{k: 1 for k in MEMORY_CLASSES.values()}, "accelerator_type:H200": 1}),
    (0, 0, None, {}),
])
def test_node_resources_declare_their_class_and_every_smaller_one(gpus, memory_gb, accelerator, expected):
    assert node_resources(gpus, memory_gb, accelerator) == expected


def test_sandbox_nodes_declare_the_marker():
    assert node_resources(0, 0, sandbox=True) == {"sandbox": 1}


MEMORY_TABLE = [  # (requested class, GPU memory of the node, lands there?)
    ("16g", 16, True), ("16g", 24, True), ("16g", 80, True), ("16g", 12, False),
    ("32g", 24, False), ("32g", 32, True), ("32g", 40, True), ("32g", 80, True),
    ("40g", 32, False), ("40g", 40, True), ("40g", 48, True), ("40g", 80, True),
    ("80g", 40, False), ("80g", 48, False), ("80g", 80, True), ("80g", 141, True),
]


@pytest.mark.parametrize("cls, memory_gb, lands", MEMORY_TABLE)
def test_at_least_memory_rule(cls, memory_gb, lands):
    node = {"CPU": 8, **node_resources(1, memory_gb, "X")}
    p = Placement(gpus=1, memory_class=cls)
    assert (fits(p, node) == []) is lands
    # a fraction of a GPU asks for the same fraction of its class, so the class never runs out first
    quarter = Placement(gpus=0.25, memory_class=cls)
    assert (fits(quarter, node) == []) is lands and to_ray_options(quarter)["resources"] == {MEMORY_CLASSES[cls]: 0.25}


def test_ray_tune_and_serve_options():
    p = Placement(cpus=2, gpus=1, memory_class="40g", accelerator_type="A100", resources={"fast_disk": 1})
    assert to_ray_options(p) == {"num_cpus": 2, "num_gpus": 1, "accelerator_type": "A100",
                                 "resources": {"fast_disk": 1, "gpu_mem_40g": 1}}
    assert to_serve_actor_options(p) == to_ray_options(p)
    assert to_tune_resources(p) == {"cpu": 2, "gpu": 1, "fast_disk": 1, "gpu_mem_40g": 1,
                                    "accelerator_type:A100": 0.001}
    assert required_resources(p) == {"CPU": 2, "GPU": 1, "fast_disk": 1, "gpu_mem_40g": 1,
                                     "accelerator_type:A100": 0.001}
    # the laptop default: one CPU, nothing a laptop lacks
    assert to_ray_options(Placement()) == {"num_cpus": 1, "num_gpus": 0}
    assert to_tune_resources(Placement()) == {"cpu": 1, "gpu": 0}
    sandbox = Placement(cpus=0.5, sandbox=True)
    assert to_ray_options(sandbox) == {"num_cpus": 0.5, "num_gpus": 0, "resources": {"sandbox": 0.001}}


def test_defaults_per_workload():
    assert set(DEFAULTS) == {"generation", "probe", "dcm", "sandbox", "sft", "solver_engine"}
    assert DEFAULTS["generation"].memory_class == "80g" and DEFAULTS["sft"].memory_class == "80g"
    assert DEFAULTS["solver_engine"].memory_class == "40g"
    for name in ("probe", "dcm"):
        assert DEFAULTS[name].memory_class == "16g" and 0 < DEFAULTS[name].gpus <= 1
    assert DEFAULTS["probe"].gpus < 1  # probes share a GPU
    assert DEFAULTS["sandbox"].sandbox and DEFAULTS["sandbox"].gpus == 0
    assert all(not p.sandbox for name, p in DEFAULTS.items() if name != "sandbox")
    assert default_for("probe", gpus=0.5) == Placement(cpus=1, gpus=0.5, memory_class="16g")
    with pytest.raises(ValueError, match="known workloads"):
        default_for("nope")


@pytest.mark.parametrize("fields, needle", [
    ({"memory_class": "40g"}, "need gpus > 0"),
    ({"accelerator_type": "A100"}, "need gpus > 0"),
    ({"gpus": 1.5}, "whole number"),
    ({"gpus": 1, "memory_class": "24g"}, "memory_class"),
    ({"resources": {"CPU": 1}}, "use cpus/gpus"),
    ({"gpus": 1, "accelerator_type": "accelerator_type:A100"}, "type name"),
    ({"cpus": -1}, "cpus"),
])
def test_bad_placements_name_the_problem(fields, needle):
    with pytest.raises(ValueError, match=needle):
        make_placement("probe placement", **fields)


def test_from_flat_resources():
    p = from_resources(2, 0.5, {"gpu_mem_40g": 0.5, "accelerator_type:A100": 0.001, "nvme": 1})
    assert p == Placement(cpus=2, gpus=0.5, memory_class="40g", accelerator_type="A100", resources={"nvme": 1})
    assert from_resources(1, 0, {"sandbox": 1}).sandbox


def test_no_fitting_node_is_an_error_naming_request_and_node_types():
    nodes = [{"CPU": 2, "node:10.0.0.1": 1, "memory": 1e9},
             {"CPU": 8, **node_resources(1, 80, "H100")}, {"CPU": 8, **node_resources(1, 80, "H100")}]
    check_nodes(Placement(gpus=1, memory_class="80g"), nodes)  # fits: no error
    with pytest.raises(PlacementError) as e:
        check_nodes(Placement(gpus=2, memory_class="80g"), nodes, "the generation actor")
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert "the generation actor" in msg and "2 GPU of >= 80g" in msg
    assert "1 x {CPU: 2}" in msg and "2 x {CPU: 8, GPU: 1, accelerator_type:H100: 1" in msg
    assert "node:" not in msg and "memory" not in msg.split("The cluster has")[1].split(".")[0]


# -- the workloads' wiring (no Ray needed) ------------------------------------------------------

def test_probe_sweep_options_translate_to_a_placement():
    from squigglray.jobs.probe import SweepOptions

    assert SweepOptions().trial_placement() == Placement()
    assert SweepOptions().resolved().cpus_per_trial == 1 and SweepOptions().resolved().threads_per_trial == 1
    old = SweepOptions(cpus_per_trial=2, gpus_per_trial=0.25, resources_per_trial={"A100": 1})
    assert old.trial_placement() == Placement(cpus=2, gpus=0.25, resources={"A100": 1})
    assert to_tune_resources(old.trial_placement()) == {"cpu": 2, "gpu": 0.25, "A100": 1}  # as before
    cluster = SweepOptions(placement=DEFAULTS["probe"], accelerator_type="H100")
    assert cluster.trial_placement() == Placement(cpus=1, gpus=0.25, memory_class="16g", accelerator_type="H100")
    assert SweepOptions(placement=DEFAULTS["probe"], gpus_per_trial=0.5).trial_placement().gpus == 0.5
    with pytest.raises(ConfigError, match="need gpus > 0"):
        build_config(SweepOptions, {"memory_class": "16g"})


def test_probe_cli_flags(monkeypatch):
    import squigglray.jobs.probe as probe

    seen = {}
    monkeypatch.setattr(probe, "run_probe_sweep", lambda cfg, exp, base, data_dir, opts: seen.update(opts=opts)
                        or {"family_table": [], "probes": 0, "ran": 0})  # main() prints the (empty) ranking
    probe.main(["--exp", "e", "--placement", "probe", "--accelerator-type", "A100", "--families", "arithmetic"])
    assert seen["opts"].trial_placement() == Placement(cpus=1, gpus=0.25, memory_class="16g", accelerator_type="A100")
    probe.main(["--exp", "e", "--gpus-per-trial", "1", "--memory-class", "40g", "--families", "arithmetic"])
    assert seen["opts"].trial_placement() == Placement(gpus=1, memory_class="40g")


def test_dynamics_options_translate_to_a_placement():
    from squigglray.jobs.dynamics import DynamicsOptions, main

    assert DynamicsOptions().trial_placement() == Placement(cpus=0)  # 0: resolved to a share of the CPUs later
    opts = DynamicsOptions(cpus_per_trial=2, gpus_per_trial=1, memory_class="40g", accelerator_type="A100")
    assert to_tune_resources(opts.trial_placement()) == {"cpu": 2, "gpu": 1, "gpu_mem_40g": 1,
                                                         "accelerator_type:A100": MARKER}
    old = DynamicsOptions(gpus_per_trial=1, resources_per_trial={"gpu_mem_16g": 1, "nvme": 1})
    assert old.trial_placement() == Placement(cpus=0, gpus=1, memory_class="16g", resources={"nvme": 1})
    with pytest.raises(ConfigError, match="seed trial placement.*need gpus > 0"):
        build_config(DynamicsOptions, {"memory_class": "16g"})
    with pytest.raises(ConfigError, match="seed trial placement.*need gpus > 0"):
        main(["--smoke", "--memory-class", "80g"])  # the job's flags fail before Ray starts


def test_cli_placement_flags_reach_the_jobs(monkeypatch):
    from typer.testing import CliRunner

    import squigglray.jobs.dynamics as dynamics
    import squigglray.jobs.eval_solver as eval_solver
    import squigglray.jobs.probe as probe
    from squigglray.cli import app

    seen = {}

    def stop(key):
        def record(*args, **kwargs):
            seen[key] = (args, kwargs)
            raise SystemExit(0)
        return record

    monkeypatch.setattr(dynamics, "run_dynamics", stop("dynamics"))
    monkeypatch.setattr(probe, "run_probe_sweep", stop("probe"))
    monkeypatch.setattr(eval_solver, "eval_solver", stop("eval"))
    run = CliRunner().invoke
    run(app, ["dynamics", "--smoke", "--gpus-per-trial", "1", "--memory-class", "32g", "--accelerator-type", "V100"])
    assert seen["dynamics"][0][1].trial_placement() == Placement(cpus=0, gpus=1, memory_class="32g",
                                                                 accelerator_type="V100")
    run(app, ["probe", "--exp", "e", "--families", "arithmetic", "--gpus-per-trial", "0.25", "--memory-class", "16g"])
    assert seen["probe"][0][4].trial_placement() == Placement(gpus=0.25, memory_class="16g")
    run(app, ["eval-solver", "--sandbox-nodes"])
    assert seen["eval"][1]["sandbox_nodes"] is True
    bad = run(app, ["dynamics", "--smoke", "--memory-class", "24g"])
    assert bad.exit_code != 0 and "memory_class" in bad.output


def test_dcm_placement_from_config_or_flags_and_outside_the_hash():
    from squigglray.dcm.config import DcmConfig
    from squigglray.jobs.dcm import experiment_id, trial_placement

    plain = DcmConfig()
    placed = DcmConfig.model_validate({"placement": {"cpus": 2, "gpus": 1, "memory_class": "16g"}})
    assert config_hash(plain) == config_hash(placed) and experiment_id(plain) == experiment_id(placed)
    assert "placement" not in placed.model_dump()
    assert trial_placement(plain, 1.0, 0.0) == Placement()          # what `squigglray dcm sweep` passes
    assert trial_placement(plain, 2.0, 1.0) == Placement(cpus=2, gpus=1)
    assert trial_placement(placed, 1.0, 0.0) == placed.placement      # the flags' defaults leave it alone
    assert trial_placement(placed, 4.0, 0.5).model_dump() == {**placed.placement.model_dump(), "cpus": 4, "gpus": 0.5}
    assert trial_placement(plain, None, None, DEFAULTS["dcm"], accelerator_type="A100").accelerator_type == "A100"
    with pytest.raises(ConfigError, match="DCM trial placement"):
        trial_placement(plain, 1.0, 0.0, memory_class="16g")
    with pytest.raises(ConfigError, match="placement"):
        build_config(DcmConfig, {"placement": {"gpus": 1, "memory_class": "12g"}})


def test_ineq_stages_take_a_memory_class():
    from squigglray.ineq.config import IneqConfig

    cfg = build_config(IneqConfig, {"generation": {"num_gpus": 1, "memory_class": "80g", "accelerator_type": "H100"},
                                    "eval": {"num_gpus": 1, "memory_class": "40g"},
                                    "sft_num_gpus": 1, "sft_memory_class": "80g"})
    assert cfg.generation.placement() == Placement(cpus=0, gpus=1, memory_class="80g", accelerator_type="H100")
    assert cfg.verification.placement(threads=2) == Placement(cpus=2)
    assert cfg.eval.placement() == Placement(gpus=1, memory_class="40g")
    assert cfg.sft_placement() == Placement(gpus=1, memory_class="80g")
    # where a step runs is not part of the cached steps' keys
    assert "memory_class" not in cfg.model_dump()["generation"]
    vllm = build_config(IneqConfig, {"generation": {"use_vllm": True, "accelerator_type": "A100",
                                                     "memory_class": "80g"}})
    assert vllm.generation.placement() == Placement(gpus=1, memory_class="80g", accelerator_type="A100")
    with pytest.raises(ConfigError, match="generation.*need gpus > 0"):
        build_config(IneqConfig, {"generation": {"memory_class": "80g"}})
    with pytest.raises(ConfigError, match="SFT placement"):
        build_config(IneqConfig, {"sft_memory_class": "80g"})


def test_solver_engine_placement_args():
    from serve_apps.solver import ENGINE_DEPLOYMENT, SolverAppArgs, app_builder

    app = app_builder({"backend": "vllm", "model": "m", "engine_num_cpus": 4, "engine_num_gpus": 1,
                       "engine_memory_class": "40g", "engine_accelerator_type": "A100", "sandbox_nodes": True})
    engine = app._bound_deployment.init_args[0]._bound_deployment
    assert engine.name == ENGINE_DEPLOYMENT
    assert engine.ray_actor_options == {"num_cpus": 4, "num_gpus": 1, "accelerator_type": "A100",
                                        "resources": {"gpu_mem_40g": 1}}
    assert SolverAppArgs().engine_placement() == Placement(cpus=0.25)
    with pytest.raises(ConfigError, match="engine placement.*need gpus > 0"):
        app_builder({"engine_memory_class": "40g"})


def test_solver_gpu_yaml_carries_the_engine_placement():
    import yaml

    app = yaml.safe_load((ROOT / "serve_apps" / "solver_gpu.yaml").read_text())["applications"][0]
    assert app["args"]["engine_memory_class"] == "40g" and app["args"]["sandbox_nodes"] is True
    engine = next(d for d in app["deployments"] if d["name"] == "SolverEngine")
    assert engine["ray_actor_options"]["resources"] == {"gpu_mem_40g": 1}


# -- fail fast on the session's laptop Ray (one node, 2 CPUs, no GPU) ----------------------------

def test_check_feasible_on_the_laptop(ray_session):
    from actors.placement import check_feasible, cluster_nodes, options

    assert any(n.get("CPU", 0) >= 1 for n in cluster_nodes())
    check_feasible(Placement())
    assert options(Placement(cpus=0.5)) == {"num_cpus": 0.5, "num_gpus": 0}
    t0 = time.perf_counter()
    with pytest.raises(PlacementError, match=r"0.25 GPU of >= 16g.*1 x {CPU: 2}"):
        check_feasible(DEFAULTS["probe"], what="a probe trial")
    assert time.perf_counter() - t0 < 3
    check_feasible(DEFAULTS["probe"], nodes=[{"CPU": 4, **node_resources(1, 24)}])  # given nodes: no Ray read


def test_sandbox_pool_on_sandbox_nodes_fails_fast_on_a_laptop(ray_session):
    from actors.sandbox_pool import SandboxPool

    t0 = time.perf_counter()
    with pytest.raises(PlacementError, match="sandbox"):
        SandboxPool(size=1, num_cpus=0.25, sandbox_nodes=True)
    assert time.perf_counter() - t0 < 3


def test_workloads_fail_before_starting_work(ray_session, tmp_path):
    import ray

    from actors.ineq_llm import engine_stage
    from squigglray.dcm.config import DcmConfig
    from squigglray.jobs.dcm import run_sweep
    from squigglray.jobs.dynamics import DynamicsOptions, run_dynamics
    from squigglray.jobs.eval_solver import SolverEvalConfig, _make_executor
    from squigglray.config import load_config
    from squigglray.jobs.probe import SweepOptions, run_trials
    from squigglray.config import packaged_config
    from squigglray.paths import ArtifactStore
    from squigglray.training import BaseTrainConfig

    t0 = time.perf_counter()
    with pytest.raises(PlacementError, match="a probe trial of exp-x"):
        run_trials(ArtifactStore(tmp_path), SimpleNamespace(experiment_id="exp-x", config_hash="h" * 64),
                   [{"target": "arithmetic", "seed": 0}], SweepOptions(gpus_per_trial=1).resolved())
    with pytest.raises(PlacementError, match="a DCM trial"):
        run_sweep(DcmConfig(), [4], [0], None, str(tmp_path), placement=DEFAULTS["dcm"], log=lambda *_: None)
    with pytest.raises(PlacementError, match="a seed trial of"):
        run_dynamics(load_config(BaseTrainConfig, packaged_config("smoke")),
                     DynamicsOptions(seeds=[0], gpus_per_trial=1, memory_class="16g"), str(tmp_path))
    with pytest.raises(PlacementError, match="sandbox"):
        _make_executor("ray", SolverEvalConfig(sandbox_nodes=True))
    with pytest.raises(PlacementError, match="engine actor of the llm_text step"):
        engine_stage(ray.data.from_items([{"prompt": "x"}]), {"backend": "hf", "model": "tiny"}, None, {}, "prompt",
                     "llm_text", 1, 1, 4, memory_class="80g")
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "experiments").exists() or not any((tmp_path / "experiments").rglob("tune"))


def test_solver_app_built_on_the_cluster_checks_the_engine(ray_session):
    """`serve run/deploy <config>` builds the app in a Ray task: there an engine no node can hold fails."""
    import ray

    @ray.remote(num_cpus=0.1)
    def build(args):
        from serve_apps.solver import app_builder

        app_builder(args)
        return "built"

    assert ray.get(build.remote({}), timeout=120) == "built"
    with pytest.raises(PlacementError, match="solver engine replica"):
        ray.get(build.remote({"backend": "vllm", "model": "m", "engine_num_gpus": 1, "engine_memory_class": "80g"}),
                timeout=120)


# -- a simulated heterogeneous cluster ----------------------------------------------------------

def run_scenario(name: str, timeout_s: float = 240) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "cluster_scenarios.py"), name], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SCENARIO_RESULT ")]
    assert proc.returncode == 0 and lines, f"scenario {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1].split(" ", 1)[1])


def test_each_workload_lands_on_its_node_type():
    out = run_scenario("placement")
    node = {v: k for k, v in out["nodes"].items()}
    landed = {name: node[nid] for name, nid in out["tasks"].items()}
    gpu_nodes = {"rtx5090", "a100_40g", "h100_80g"}
    assert landed["generation"] == "h100_80g" and landed["sft"] == "h100_80g"      # 80g: only the H100
    assert landed["solver_engine"] in {"a100_40g", "h100_80g"}                     # 40g: 40 GB or more
    assert landed["a100_40g_or_more"] == "a100_40g"
    assert landed["rtx_32g"] == "rtx5090"
    assert landed["probe"] in gpu_nodes and landed["dcm"] in gpu_nodes             # 16g: any of them
    assert landed["sandbox"] == "sandbox_head"
    assert node[out["tune_probe_trial"]] == "h100_80g"                             # a Tune trial, probe placement
    assert node[out["sandbox_actor"]["node"]] == "sandbox_head"                    # a sandbox actor of the pool
    assert out["sandbox_actor"]["status"] == "ok" and out["sandbox_actor"]["stdout"] == "42\n"
    for name, r in out["infeasible"].items():
        assert r["raised"], f"{name} did not raise PlacementError"
        assert r["seconds"] < 3, (name, r["seconds"])
        assert "accelerator_type:H100" in r["message"] and "sandbox: 1" in r["message"], r["message"]
    assert "2 GPU of >= 80g" in out["infeasible"]["two_80g_gpus"]["message"]
    assert "accelerator_type:V100" in out["infeasible"]["v100"]["message"]
    assert "a probe trial of exp-x" in out["infeasible"]["probe_sweep"]["message"]
