"""cluster.yaml, examples/runtime_env.yaml, the example configs, and every command in
examples/README.md and docs/cluster.md, checked against Ray's own validators and parsers (the
autoscaler's schema and validate_config, RuntimeEnv, `ray`/`serve` click commands), the job modules'
argparse parsers, the `squigglray` CLI, and squigglray.placement. No cluster needed; ~10-20 s,
mostly importing the job modules.

    pytest -q tests/test_cluster_yaml.py
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import importlib.util
import inspect
import io
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from squigglray.placement import DEFAULTS, MEMORY_CLASSES, MEMORY_GB, SANDBOX_RESOURCE, check_nodes, fits, node_resources

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
DOCS = [REPO / "examples" / "README.md", REPO / "docs" / "cluster.md"]
ACCEL = "accelerator_type:"
BIG_CLASSES = {"40g", "80g"}  # the generation nodes: vLLM is installed there and nowhere else


def load_cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def ray_validate(cfg: dict) -> None:
    """What `ray up` checks before it talks to the cloud: the file against Ray's JSON schema, then
    Ray's own prepare_config (the provider's defaults merged in) and validate_config."""
    jsonschema.validate(cfg, ray_schema())
    validate_config(prepare_config(copy.deepcopy(cfg)))


def node_types(cfg: dict) -> dict[str, dict]:
    return cfg["available_node_types"]


def gpu_types(cfg: dict) -> dict[str, dict]:
    return {k: t for k, t in node_types(cfg).items() if t["resources"].get("GPU", 0) > 0}


def largest_class(resources: dict) -> str | None:
    have = [c for c, key in MEMORY_CLASSES.items() if resources.get(key, 0) > 0]
    return max(have, key=MEMORY_GB.__getitem__) if have else None


def setup_lists(cfg: dict) -> dict[str, list[str]]:
    """Every list of setup commands a node can run: the head's, the global fallback, each type's."""
    out = {"head_setup_commands": cfg["setup_commands"] + cfg["head_setup_commands"],
           "worker_setup_commands": cfg["setup_commands"] + cfg["worker_setup_commands"]}
    for name, t in node_types(cfg).items():
        if "worker_setup_commands" in t:
            out[name] = t["worker_setup_commands"]
    return out


def commands_of(cfg: dict, name: str) -> list[str]:
    """The setup commands that node type `name` runs (the head runs head_setup_commands)."""
    lists = setup_lists(cfg)
    if name == cfg["head_node_type"]:
        return lists["head_setup_commands"]
    return lists.get(name, lists["worker_setup_commands"])


# --------------------------------------------------------------------------- Ray's own validation


def test_cluster_yaml_passes_rays_schema_and_validate_config():
    cfg = load_cluster()
    ray_validate(cfg)
    assert cfg["provider"]["type"] == "aws"
    assert cfg["head_node_type"] in node_types(cfg)


BROKEN = [
    ("max_workers is not an integer", lambda c: c.update(max_workers="lots"),
     ["max_workers", "is not of type 'integer'"]),
    ("a node type without resources", lambda c: node_types(c)["gpu_80g"].pop("resources"),
     ["'resources' is a required property", "gpu_80g"]),
    ("a fractional resource amount", lambda c: node_types(c)["cpu_sandbox"]["resources"].update(sandbox=0.5),
     ["0.5 is not of type 'integer'", "cpu_sandbox"]),
    ("a misspelled top-level key", lambda c: c.update(max_worker=3),
     ["Additional properties are not allowed", "max_worker"]),
    ("a misspelled node-type key", lambda c: node_types(c)["gpu_16g"].update(min_worker=1),
     ["Additional properties are not allowed", "min_worker"]),
    ("head_node_type not among the node types", lambda c: c.update(head_node_type="gpu_head"),
     ["`head_node_type` must be one of `available_node_types`"]),
    ("min_workers above the global max_workers", lambda c: node_types(c)["cpu_sandbox"].update(min_workers=99),
     ["smaller than the sum of `min_workers`"]),
]


@pytest.mark.parametrize("what,breaks,expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_copy_fails_naming_the_problem(what, breaks, expected):
    cfg = load_cluster()
    breaks(cfg)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as err:
        ray_validate(cfg)
    for text in expected:
        assert text in str(err.value), f"{what}: {text!r} not in {str(err.value)[:400]!r}"


# --------------------------------------------------------------------------- the project's rules


def test_gpu_node_types_declare_gpus_and_their_memory_classes_as_placement_says():
    cfg = load_cluster()
    assert {largest_class(t["resources"]) for t in gpu_types(cfg).values()} == set(MEMORY_CLASSES)
    for name, t in gpu_types(cfg).items():
        res = t["resources"]
        cls = largest_class(res)
        assert cls, f"{name} declares GPU but no memory-class resource ({sorted(MEMORY_CLASSES.values())})"
        accel = [k[len(ACCEL):] for k in res if k.startswith(ACCEL)]
        assert len(accel) == 1, f"{name}: declare exactly one accelerator_type:<TYPE> for the autoscaler"
        # the "at least" rule: its own class and every smaller one, one unit per GPU, nothing else
        expected = node_resources(res["GPU"], MEMORY_GB[cls], accel[0])
        assert {k: v for k, v in res.items() if k != "CPU"} == expected, name
        assert res.get("CPU", 0) > 0, f"{name}: GPU nodes need CPUs for their workers"
        assert SANDBOX_RESOURCE not in res, f"{name}: sandboxes must stay off GPU nodes"
        assert t["labels"]["squigglray/memory-class"] == cls, name


def test_custom_resource_names_are_exactly_the_placement_codes():
    cfg = load_cluster()
    used = {k for t in node_types(cfg).values() for k in t["resources"]}
    custom = {k for k in used if k not in ("CPU", "GPU", "memory", "object_store_memory") and not k.startswith(ACCEL)}
    assert custom == set(MEMORY_CLASSES.values()) | {SANDBOX_RESOURCE}
    assert {k for k in used if "mem" in k.lower() and k not in ("memory", "object_store_memory")} == \
        set(MEMORY_CLASSES.values())


def test_head_and_sandbox_nodes_have_no_gpu_and_the_head_takes_no_work():
    cfg = load_cluster()
    head = node_types(cfg)[cfg["head_node_type"]]["resources"]
    assert head.get("CPU") == 0 and head.get("GPU", 0) == 0
    sandbox = [n for n, t in node_types(cfg).items() if SANDBOX_RESOURCE in t["resources"]]
    assert sandbox == ["cpu_sandbox"]
    res = node_types(cfg)["cpu_sandbox"]["resources"]
    assert res.get("GPU", 0) == 0 and not largest_class(res) and res[SANDBOX_RESOURCE] >= 1 and res["CPU"] >= 8


def test_autoscaling_bounds():
    cfg = load_cluster()
    total = 0
    for name, t in node_types(cfg).items():
        if name == cfg["head_node_type"]:
            continue
        assert 0 <= t["min_workers"] <= t["max_workers"], name
        total += t["max_workers"]
    assert total <= cfg["max_workers"]
    assert node_types(cfg)["cpu_sandbox"]["min_workers"] >= 1, "Serve's sandboxes and ingress need a CPU node"
    assert all(t["min_workers"] == 0 for t in gpu_types(cfg).values()), "GPU nodes start on demand"


def test_every_placement_default_fits_a_worker_node_type_and_never_the_head():
    cfg = load_cluster()
    workers = [t["resources"] for n, t in node_types(cfg).items() if n != cfg["head_node_type"]]
    head = node_types(cfg)[cfg["head_node_type"]]["resources"]
    for name, p in DEFAULTS.items():
        check_nodes(p, workers, what=f"placement default {name!r}")  # raises PlacementError naming it
        assert fits(p, head), f"{name} would run on the head"
    # the example configs' own placements fit too
    from squigglray.config import load_config
    from squigglray.dcm.config import DcmConfig

    check_nodes(load_config(DcmConfig, REPO / "examples" / "dcm_cluster.yaml").placement, workers)


def test_vllm_extra_only_on_the_big_memory_generation_nodes():
    cfg = load_cluster()
    big = {n for n, t in gpu_types(cfg).items() if largest_class(t["resources"]) in BIG_CLASSES}
    assert big == {"gpu_40g", "gpu_80g"}
    for name, cmds in setup_lists(cfg).items():
        has_vllm = any(re.search(r"\.\[[^\]]*\bvllm\b", c) or re.search(r"pip install .*\bvllm\b", c) for c in cmds)
        assert has_vllm == (name in big), f"{name}: the vllm extra belongs on {sorted(big)} only"


def test_torch_is_pinned_before_the_project_in_every_setup_list():
    cfg = load_cluster()
    for name, cmds in setup_lists(cfg).items():
        torch_at = [i for i, c in enumerate(cmds) if re.search(r"pip install[^;&|]*\btorch==\d", c)]
        project_at = [i for i, c in enumerate(cmds) if re.search(r"pip install -e ", c)]
        assert len(torch_at) == 1 and len(project_at) == 1, f"{name}: one torch pin and one project install"
        assert torch_at[0] < project_at[0], f"{name}: torch must be pinned before `pip install -e .`"
        ray_pin = f"ray[default,tune,serve,data]=={ray.__version__}"
        assert any(ray_pin in c for c in cmds[:project_at[0]]), f"{name}: pin {ray_pin} (the laptop's Ray)"


def test_torch_wheel_matches_each_node_types_hardware():
    cfg = load_cluster()
    for name in node_types(cfg):
        cmds = " ".join(commands_of(cfg, name))
        res = node_types(cfg)[name]["resources"]
        if res.get("GPU", 0) == 0:
            assert "download.pytorch.org/whl/cpu" in cmds, f"{name}: CPU nodes take the CPU wheel"
        else:
            assert "whl/cpu" not in cmds, f"{name}: a GPU node with the CPU wheel"
            if "accelerator_type:V100" in res:
                assert "whl/cu126" in cmds, f"{name}: Volta (sm_70) needs the CUDA 12.6 wheels"


def test_start_commands_dashboard_metrics_and_shared_storage():
    cfg = load_cluster()
    head = " ".join(cfg["head_start_ray_commands"])
    worker = " ".join(cfg["worker_start_ray_commands"])
    assert "--dashboard-host 0.0.0.0" in head or "--dashboard-host=0.0.0.0" in head
    port = re.search(r"--metrics-export-port[ =](\d+)", head).group(1)
    assert re.search(rf"--metrics-export-port[ =]{port}\b", worker)
    for text in (head, worker):
        assert "SQUIGGLRAY_DATA=/mnt/shared/" in text and "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1" in text
    assert any("/mnt/shared" in c and "mount" in c for c in cfg["initialization_commands"])
    remote, local = next(iter(cfg["file_mounts"].items()))
    assert local == "." and all(f"cd {remote} && pip install -e" in " ".join(v)
                                for v in setup_lists(cfg).values())


def test_node_labels_are_valid_ray_labels():
    from ray._private.label_utils import validate_node_label_syntax, validate_node_labels

    for t in node_types(load_cluster()).values():
        validate_node_label_syntax(t.get("labels"))
        validate_node_labels(t.get("labels"))


# --------------------------------------------------------------------------- runtime env, example configs


def test_runtime_env_is_valid_and_uploads_only_the_source(monkeypatch):
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE, _dir_travel, _get_excludes
    from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args
    from ray.runtime_env import RuntimeEnv

    monkeypatch.chdir(REPO)  # `ray job submit --runtime-env examples/runtime_env.yaml` from the repo root
    env = parse_runtime_env_args(runtime_env="examples/runtime_env.yaml")
    RuntimeEnv(**env)  # Ray's own field validation
    root = Path(env["working_dir"]).resolve()
    assert root == REPO
    files: list[Path] = []
    _dir_travel(root, [_get_excludes(root, env["excludes"])], lambda p: p.is_file() and files.append(p),
                include_gitignore=True)
    rel = [f.relative_to(root).as_posix() for f in files]
    assert "squigglray/placement.py" in rel and "cluster.yaml" in rel and "examples/runtime_env.yaml" in rel
    bad = [r for r in rel if r.split("/")[0] in (".venv", ".git", "data") or r.endswith((".parquet", ".safetensors"))]
    assert not bad, bad[:5]
    assert sum(f.stat().st_size for f in files) < min(GCS_STORAGE_MAX_SIZE, 512 << 20) // 8
    assert env["env_vars"]["SQUIGGLRAY_DATA"].startswith("/mnt/shared/")


def test_example_configs_validate():
    from squigglray.clmodel.run import ClmodelRunConfig
    from squigglray.config import load_config
    from squigglray.data.config import SliceConfig
    from squigglray.dcm import data as dcm_data
    from squigglray.dcm.config import DcmConfig
    from squigglray.probes.config import ProbeConfig
    from squigglray.training import BaseTrainConfig

    ex = REPO / "examples"
    load_config(BaseTrainConfig, ex / "quickstart.yaml")
    load_config(SliceConfig, ex / "slice_omr.yaml")
    load_config(ProbeConfig, ex / "probe_cluster.yaml")
    clm = load_config(ClmodelRunConfig, ex / "clmodel.yaml")
    clm.model_config_for(clm.data.vocab_size, 0)  # CLModelConfig's own checks (head sizes, RoPE)
    dcm = load_config(DcmConfig, ex / "dcm_cluster.yaml")
    spec = dict(dcm.dataset)
    inspect.signature(dcm_data._KINDS[spec.pop("kind")]).bind(**spec)  # the loader takes these arguments
    assert dcm.placement is not None and dcm.placement.memory_class == "32g"


def test_ineq_cluster_example_validates():
    from squigglray.config import load_config
    from squigglray.ineq.config import IneqConfig

    cfg = load_config(IneqConfig, REPO / "examples" / "ineq_cluster.yaml")
    assert cfg.generation.use_vllm and cfg.generation.accelerator_type == "A100"


# --------------------------------------------------------------------------- commands in the docs


def doc_commands() -> list[tuple[str, int, str]]:
    """(file, line, command) for each shell command in a ```bash block of the docs, continuation
    lines joined, comments and a trailing `&` dropped."""
    out = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        inside, pending, start = False, "", 0
        for i, line in enumerate(lines, 1):
            if line.startswith("```"):
                inside = line.strip() == "```bash"
                continue
            if not inside:
                continue
            if not pending:
                start = i
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            if text and not text.startswith("#"):
                out.append((path.relative_to(REPO).as_posix(), start, text))
    return out


def split_command(text: str) -> list[str]:
    tokens = shlex.split(text, comments=True)
    for stop in ("&", "&&", ";", "|"):
        if stop in tokens:
            tokens = tokens[:tokens.index(stop)]
    return tokens


COMMANDS = doc_commands()
JOB_COMMANDS = [(f, n, c) for f, n, c in COMMANDS if "python -m squigglray.jobs." in c]
CLI_COMMANDS = [(f, n, c) for f, n, c in COMMANDS if split_command(c)[:1] in (["ray"], ["serve"], ["squigglray"])]


class _Parser(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


@functools.lru_cache(maxsize=None)
def job_parser(module: str) -> argparse.ArgumentParser:
    """The argparse parser a job module's main() builds, caught at its parse_args call."""
    mod = importlib.import_module(module)
    assert hasattr(mod, "main"), f"{module} has no main()"
    original = argparse.ArgumentParser.parse_args

    def grab(self, args=None, namespace=None):
        raise _Parser(self)

    argparse.ArgumentParser.parse_args = grab
    try:
        mod.main(["--help"])
    except _Parser as e:
        return e.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{module}.main() never parsed its command line")


def test_the_docs_have_a_job_command_for_every_pipeline():
    modules = {split_command(c)[split_command(c).index("-m") + 1] for _, _, c in JOB_COMMANDS}
    wanted = {"quickstart", "dynamics", "probe", "probe_confirm", "slice", "dcm", "ineq", "clmodel",
              "eval_solver", "serve_solver", "serve_verifiers"}
    assert {f"squigglray.jobs.{m}" for m in wanted} <= modules
    text = (REPO / "examples" / "README.md").read_text()
    assert "the cluster issue adds" not in text
    for _, _, c in JOB_COMMANDS:
        if c.startswith("ray job submit"):
            assert "--runtime-env examples/runtime_env.yaml" in c, c


@pytest.mark.parametrize("where,line,command", JOB_COMMANDS, ids=[f"{f}:{n}" for f, n, _ in JOB_COMMANDS])
def test_job_command_parses_with_the_modules_own_parser(where, line, command):
    tokens = split_command(command)
    i = tokens.index("python")
    assert tokens[i + 1] == "-m", command
    module, argv = tokens[i + 2], tokens[i + 3:]
    assert importlib.util.find_spec(module) is not None, f"{where}:{line}: no module {module}"
    parser = job_parser(module)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}:{line}: {module} rejects {argv}: {err.getvalue().strip().splitlines()[-1]}")
    for flag, value in zip(argv, argv[1:]):
        if flag in ("--config", "--runtime-env"):
            assert (REPO / value).is_file(), f"{where}:{line}: {value} does not exist"


def click_cli(name: str):
    import typer.main
    from ray.scripts.scripts import cli as ray_cli
    from ray.serve.scripts import cli as serve_cli

    from squigglray.cli import app

    return {"ray": ray_cli, "serve": serve_cli}.get(name) or typer.main.get_command(app)


@pytest.mark.parametrize("where,line,command", CLI_COMMANDS, ids=[f"{f}:{n}" for f, n, _ in CLI_COMMANDS])
def test_ray_serve_and_squigglray_commands_parse_with_their_cli(where, line, command, monkeypatch):
    """`ray ...` and `serve ...` against Ray's own click CLI, `squigglray ...` against the project's."""
    import click

    monkeypatch.chdir(REPO)  # paths in the commands are relative to the repo root
    tokens = split_command(command)
    if "--" in tokens:
        tokens = tokens[:tokens.index("--") + 2]  # the entry point is checked by the test above
    cmd, args = click_cli(tokens[0]), tokens[1:]
    while isinstance(cmd, click.Group):
        name, args = args[0], args[1:]
        cmd = cmd.get_command(click.Context(cmd), name)
        assert cmd is not None, f"{where}:{line}: no command {name!r} in {command!r}"
    try:
        ctx = cmd.make_context(cmd.name, list(args))
    except click.ClickException as e:
        pytest.fail(f"{where}:{line}: {e.format_message()} in {command!r}")
    params = ctx.params
    for key in ("runtime_env", "config"):
        if isinstance(params.get(key), str):
            assert (REPO / params[key]).is_file(), f"{where}:{line}: {params[key]} does not exist"
    for key in ("entrypoint_resources", "resources"):
        if params.get(key):
            json.loads(params[key])
    if params.get("labels"):
        from ray._private.label_utils import parse_node_labels_string

        parse_node_labels_string(params["labels"])


def test_on_prem_ray_start_lines_declare_what_placement_expects():
    starts = [split_command(c) for f, _, c in CLI_COMMANDS if f == "docs/cluster.md" and c.startswith("ray start")]
    seen: set[str] = set()
    for tokens in starts:
        opts = dict(t[2:].split("=", 1) for t in tokens if t.startswith("--") and "=" in t)
        if "head" in [t[2:] for t in tokens]:
            assert opts["num-cpus"] == "0" and opts["dashboard-host"] == "0.0.0.0" and "metrics-export-port" in opts
            seen.add("head")
            continue
        assert "metrics-export-port" in opts, tokens
        resources = json.loads(opts.get("resources", "{}"))
        gpus = int(opts.get("num-gpus", 0))
        if not gpus:
            assert resources == {SANDBOX_RESOURCE: 1}, tokens
            seen.add("sandbox")
            continue
        cls = largest_class(resources)
        assert {"GPU": gpus, **resources} == node_resources(gpus, MEMORY_GB[cls]), tokens
        assert f"squigglray/memory-class={cls}" in opts["labels"]
        seen.add(cls)
    assert seen == {"head", "sandbox", *MEMORY_CLASSES}, seen


def test_metrics_named_in_the_guide_are_exported_by_the_code():
    """docs/cluster.md names metrics as Prometheus stores them (ray_ prefix, _total/_bucket suffixes)."""
    names = set(re.findall(r"ray_(squigglray_[a-z_]+)", (REPO / "docs" / "cluster.md").read_text()))
    assert names
    code = "\n".join(p.read_text() for d in ("squigglray", "actors", "serve_apps", "tune_spaces")
                     for p in (REPO / d).rglob("*.py"))
    defined = set(re.findall(r"[\"'](squigglray_[a-z_]+)[\"']", code))
    for name in names:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert base in defined, f"docs/cluster.md names ray_{name}, but no metric {base!r} is defined"
