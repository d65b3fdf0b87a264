"""End to end through Ray's Job Submission API: a private `ray start --head`, a real CLModel job that
writes its artifacts, a job with a bad config that fails with the field's name, every workflow's
smoke entry submitted as `python -m squigglray.jobs.<w>` with the shipped runtime env's upload rules
(examples/runtime_env.yaml), and a clean teardown.

    .venv/bin/python -m pytest tests/test_job_submission.py -q

The head is this module's own, isolated from the session Ray of conftest.py and from anyone else's:
its own ports (free ones picked here, including the ones Ray would otherwise take by default, 10001
for the client server and 52365 for the dashboard agent that runs the jobs), its own short temp dir
/tmp/sqr-<random> (Unix socket paths must stay under ~107 chars, which pytest's tmp_path can break;
`ray start` also writes its `ray_current_cluster` file there, so a bare `ray.init()` elsewhere never
finds this head), and an environment without RAY_ADDRESS.

Token auth is pinned on with a token of its own (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN in the head's
environment, which the jobs inherit; the client sends it as a Bearer header): left alone, `ray start`
turns auth on whenever ~/.ray/auth_token exists (a plain `ray.init()` writes one), and a client
without the token then gets 401 from every dashboard route, /api/version included.

Stopping it safely: `ray stop` cannot be used. It takes no address or temp dir and stops every Ray
process of the machine, the session Ray of the other tests included. So the head runs as
`ray start --head --block` in a process of its own session: with --block, that process owns the
node and, on SIGTERM, kills exactly the processes it started (GCS, raylet, dashboard, agents; the
raylet takes its workers along) and exits. RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 skips the 30 s
drain it would do first. As a backstop, every descendant of that process (snapshotted before the
SIGTERM, since orphans lose their parent link) and every process whose command line names this
head's unique temp dir is SIGKILLed by pid if still alive 15 s later. Nothing is killed by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 180
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}

# A CLModel run that takes seconds: one family, two examples, one warm-up and one joint step.
TINY = [
    "name=jobsub", "seed=0",
    "data.families=[arithmetic]", "data.n_per_family=2", "data.eval_per_family=2", "data.vocab_size=300",
    "train.warmup_steps=1", "train.joint_steps=1", "train.batch_size=2", "train.tools=none", "train.threads=1",
    "eval.tools=none", "eval.latency_examples=2",
    "model.d_model=32", "model.n_heads=2", "model.cond_heads=2", "model.rvq_dim=16", "model.codebook_size=8",
    "model.num_quantizers=1", "model.steps=4", "model.d_state=32", "model.heavy_layers=1", "model.num_branches=2",
]
WHERE = ("python -c 'import squigglray, squigglray.data, actors; "
         "print(\"code from\", squigglray.__file__, squigglray.data.__file__, actors.__file__)'")


def _shipped_runtime_env() -> dict:
    """examples/runtime_env.yaml's upload rules (working_dir, excludes) as users submit them; its pip
    list and env vars describe the cluster's shared storage and offline hub, not this machine."""
    import yaml

    spec = yaml.safe_load((REPO / "examples" / "runtime_env.yaml").read_text())
    assert spec["working_dir"] == "."
    return {"working_dir": str(REPO), "excludes": spec["excludes"]}


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _entrypoint(overrides: list[str], data_dir: Path) -> str:
    sets = " ".join(f"--set '{o}'" for o in overrides)
    return f"python -m squigglray.jobs.clmodel train --num-cpus 1 {sets} --data-dir {data_dir}"


def _marked(temp_dir: str) -> list[psutil.Process]:
    """This head's processes that name its unique temp dir on their command line (raylet, GCS, workers)."""
    out = []
    for p in psutil.process_iter(["cmdline", "uids"]):
        try:
            if p.info["uids"] and p.info["uids"].real == os.getuid() and \
                    any(temp_dir in arg for arg in p.info["cmdline"] or []):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def _stop_head(proc: subprocess.Popen, temp_dir: str) -> None:
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    tree += [p for p in _marked(temp_dir) if p.pid not in {t.pid for t in tree}]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` kills the node's processes and exits
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(tree, timeout=5)
    for p in alive + [p for p in _marked(temp_dir) if p not in alive]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """(client, data_dir, temp_dir) of a private head started with `ray start --head --block`; stopped after."""
    from ray.job_submission import JobSubmissionClient

    temp_dir = tempfile.mkdtemp(prefix=f"sqr-{uuid.uuid4().hex[:6]}-", dir="/tmp")
    token = uuid.uuid4().hex + uuid.uuid4().hex
    gcs_port, dash_port, client_port, agent_port = _free_ports(4)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's `python` is this venv's
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",  # pinned: `ray start` would follow whether ~/.ray/auth_token exists
        "RAY_AUTH_TOKEN": token,  # this head's own token; ~/.ray is neither read nor written
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
           "--port", str(gcs_port),
           "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
           "--ray-client-server-port", str(client_port), "--dashboard-agent-listen-port", str(agent_port),
           "--num-cpus", "2", "--temp-dir", temp_dir]
    log_path = Path(temp_dir) / "ray-start.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=temp_dir, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        url, client, deadline = f"http://127.0.0.1:{dash_port}", None, time.monotonic() + 90
        while client is None:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                client = JobSubmissionClient(url, headers={"Authorization": f"Bearer {token}"})
                client.list_jobs()
            except Exception as e:
                client = None
                if time.monotonic() > deadline:
                    pytest.fail(f"job server at {url} did not answer in 90 s ({e}):\n"
                                f"{log_path.read_text()[-3000:]}")
                time.sleep(1)
        yield client, tmp_path_factory.mktemp("jobsub-data"), temp_dir
        for job in client.list_jobs():  # leave nothing running if a test gave up on its job
            if str(job.status) not in TERMINAL and job.submission_id:
                client.stop_job(job.submission_id)
    finally:
        _stop_head(proc, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def jobs(head):
    """Both jobs submitted at once (they run side by side): {"ok": id, "bad": id}."""
    client, data_dir, _ = head
    runtime_env = _shipped_runtime_env()
    return {
        "ok": client.submit_job(entrypoint=f"{WHERE} && {_entrypoint(TINY, data_dir)}", runtime_env=runtime_env),
        "bad": client.submit_job(entrypoint=_entrypoint([*TINY, "train.batch_size=0"], data_dir / "bad"),
                                 runtime_env=runtime_env),
    }


def _wait(client, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(client.get_job_status(job_id))
        if status in TERMINAL:
            return status
        time.sleep(1)
    pytest.fail(f"job {job_id} not done in {timeout_s} s; logs:\n{client.get_job_logs(job_id)[-3000:]}")


def test_submitted_clmodel_job_writes_its_run(head, jobs):
    from squigglray.clmodel.run import ClmodelRunConfig, run_id
    from squigglray.config import load_config
    from squigglray.config import packaged_config

    client, data_dir, temp_dir = head
    status = _wait(client, jobs["ok"])
    logs = client.get_job_logs(jobs["ok"])
    assert status == "SUCCEEDED", logs[-3000:]
    assert "training in a Ray task" in logs and "report:" in logs, logs[-3000:]
    # The job runs the uploaded snapshot of the repo (its folder comes first on sys.path), not the
    # editable install in the venv, though both would import.
    where = next(line for line in logs.splitlines() if line.startswith("code from ")).split()[2:]
    assert all(w.startswith(temp_dir) and "working_dir" in w for w in where), where

    rid = run_id(load_config(ClmodelRunConfig, packaged_config("clmodel"), TINY))
    assert [p.name for p in (data_dir / "runs").iterdir()] == [rid], "the job's run id is the config's"
    run = data_dir / "runs" / rid
    conf = json.loads((run / "config.json").read_text())
    for key in ("run_id", "seed", "dataset_slice_hash", "config_hash", "version"):
        assert conf[key] not in (None, ""), key
    assert conf["run_id"] == rid and conf["seed"] == 0
    scalars = pq.read_table(run / "scalars.parquet")
    assert scalars.num_rows >= 1 and {"loss", "stage", "run_id"} <= set(scalars.column_names)
    assert (run / "reports" / "report.md").read_text().strip()
    assert f"report: {run / 'reports' / 'report.md'}" in logs


def test_bad_config_job_fails_naming_the_field(head, jobs):
    client, data_dir, _ = head
    status = _wait(client, jobs["bad"])
    logs = client.get_job_logs(jobs["bad"])
    assert status == "FAILED", logs[-3000:]
    assert "train.batch_size" in logs and "greater than or equal to 1" in logs, logs[-3000:]
    assert "training in a Ray task" not in logs, "the config fails before any work starts"
    assert not (data_dir / "bad").exists()


# ---------------------------------------------------------------------------------- every workflow
# Each workflow's smoke entry as users submit it: `python -m squigglray.jobs.<w>`, the shipped upload
# rules, all submitted at once to the 2-CPU head. A module run as `-m` is `__main__`; anything Ray
# pickled by reference from it would not be found on the workers (the slice job failed so with
# "Can't get attribute '_stage' on <module '__main__'>"), which only a real job shows.

def _ineq_config(verifier: str) -> dict:
    return {
        "name": "jobsub", "base_model": "nano",
        "data": {"families": ["reciprocal", "sos"], "n_per_family": 4},
        "generation": {"engine": {"backend": "hf", "model": "nano"}, "shots": 1, "max_problems": 2, "max_tokens": 16},
        "verification": {"engine": {"backend": "hf", "model": verifier}, "shots": 1, "max_tokens": 4, "timeout_s": 30},
        "sft": {"max_steps": 2, "batch_size": 2, "max_length": 192, "threads": 1, "eval_before": False,
                "logging_steps": 1},
        "eval": {"max_problems": 2, "k_shots": 1, "max_new_tokens": 16, "judge_max_tokens": 4, "timeout_s": 30},
    }


@pytest.fixture(scope="module")
def workflow_jobs(head, solver_store, nano_tokenizer, tmp_path_factory):
    """{workflow: (job id, data dir)}: one smoke job per workflow, all submitted at once."""
    import yaml

    from squigglray.models import build_model

    client, _, _ = head
    root = tmp_path_factory.mktemp("workflows")
    verifier = root / "nano-verifier"
    build_model("nano", nano_tokenizer, 256, seed=1).save_pretrained(verifier)
    nano_tokenizer.save_pretrained(verifier)
    (root / "slice.yaml").write_text(
        "name: jobsub\nsources:\n  - {kind: families, families: [crt, gcd_lcm], per_family_level: 6}\n"
        "quotas: {train: 10, probe_a: 1, holdout: 2}\nfill: {enabled: false}\n")
    (root / "ineq.yaml").write_text(yaml.safe_dump(_ineq_config(str(verifier))))

    def with_model(name: str) -> Path:  # a data dir holding the session's trained nano (preset "nano")
        dest = root / name
        shutil.copytree(solver_store.base, dest)
        return dest

    entries = {
        "slice": (root / "slice", f"slice build --config {root / 'slice.yaml'}"),
        "quickstart": (root / "qs", "quickstart --smoke --no-probes --no-solver-eval --seeds 0,1 "
                                    "--set train.steps=8 --set train.log_every=2 --set train.log_dense_until=4 "
                                    "--set eval.n_per_family=1"),
        "probe": (with_model("probe"), "probe --exp jobsub --base nano --config squigglray/configs/probe_smoke.yaml "
                                       "--families gcd_lcm --seeds 0 --set finetune.steps=2"),
        "dcm": (with_model("dcm"), "dcm run --config squigglray/configs/dcm_smoke.yaml --set model=nano "
                                   "--set dataset.n=2 --set optim.steps=3"),
        "eval_solver": (with_model("eval"), "eval_solver --model nano --families arithmetic --per-family 1 --ns 1 "
                                            "--code-modes code --json"),
        "solve_cli": (with_model("solve"), "solve_cli 'What is 17 * 23?' --model nano --n 2 --json"),
        "ineq": (with_model("ineq"), f"ineq run --config {root / 'ineq.yaml'}"),
    }
    runtime_env = _shipped_runtime_env()
    out = {}
    for name, (data, args) in entries.items():
        module, _, rest = args.partition(" ")
        entry = f"python -m squigglray.jobs.{module} {rest} --data-dir {data}"
        out[name] = (client.submit_job(entrypoint=entry, runtime_env=runtime_env), data)
    return out


WORKFLOW_ARTIFACTS = {
    "slice": "slices/*/manifest.json",
    "quickstart": "experiments/dyn-*/report.md",
    "probe": "experiments/jobsub/probe_report.md",
    "dcm": "experiments/*/result.json",
    "eval_solver": None,  # prints its table as JSON: checked in the log
    "solve_cli": None,
    "ineq": "experiments/ineq-jobsub-*/report.md",
}


@pytest.mark.parametrize("workflow", sorted(WORKFLOW_ARTIFACTS))
def test_every_workflow_runs_as_a_submitted_job(head, workflow_jobs, workflow):
    client, _, _ = head
    job_id, data = workflow_jobs[workflow]
    status = _wait(client, job_id, timeout_s=480)  # seven jobs share the head's two CPUs
    logs = client.get_job_logs(job_id)
    assert status == "SUCCEEDED", f"{workflow}: {logs[-3000:]}"
    pattern = WORKFLOW_ARTIFACTS[workflow]
    if pattern:
        assert list(Path(data).glob(pattern)), f"{workflow}: nothing matches {pattern} under {data}"
    elif workflow == "eval_solver":
        assert '"pass@1"' in logs or "pass@1" in logs, logs[-2000:]
    else:
        assert '"answer"' in logs, logs[-2000:]
