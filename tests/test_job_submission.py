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

from test_ineq_pipeline import _ran, small, small_dict

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


def _succeeded(client, job_id: str, what: str, timeout_s: float = 480) -> str:
    """The logs of a job that must succeed; else fail with its status message and log tail (the
    workflow jobs share the head's two CPUs, hence the longer wait)."""
    status = _wait(client, job_id, timeout_s)
    logs = client.get_job_logs(job_id)
    assert status == "SUCCEEDED", f"{what}: {client.get_job_info(job_id).message}\n{logs[-3000:]}"
    return logs


def test_submitted_clmodel_job_writes_its_run(head, jobs):
    from squigglray.clmodel.run import ClmodelRunConfig, run_id
    from squigglray.config import load_config
    from squigglray.config import packaged_config

    client, data_dir, temp_dir = head
    logs = _succeeded(client, jobs["ok"], "clmodel", JOB_TIMEOUT_S)
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
    (root / "ineq.yaml").write_text(yaml.safe_dump(small_dict(str(verifier))))

    def with_model(name: str) -> Path:  # a data dir holding the session's trained nano (preset "nano")
        dest = root / name
        shutil.copytree(solver_store.base, dest)
        return dest

    entries = {
        "slice": (root / "slice", f"slice build --config {root / 'slice.yaml'}"),
        "quickstart": (root / "qs", f"quickstart --smoke {' '.join(QUICKSTART)}"),
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


# The smoke quickstart, narrowed where other tests cover the breadth: two seeds (the least that seed
# invariance needs), two probe families (test_probes_sweep has the rest). test_quickstart_job_*
# checks it whole; in-process reruns on its data dir check what a second run reuses.
QUICKSTART = ["--seeds", "0,1", "--probe-families", "gcd_lcm,mod_power", "--set", "train.steps=20",
              "--set", "eval.n_per_family=2"]

WORKFLOW_ARTIFACTS = {
    "slice": "slices/*/manifest.json",
    "quickstart": "experiments/dyn-*/report.md",
    "probe": "experiments/jobsub/probe_report.md",
    "dcm": "experiments/*/result.json",
    "eval_solver": None,  # prints its table as JSON: checked in the log
    "solve_cli": None,
    "ineq": "experiments/ineq-t-*/report.md",
}


@pytest.mark.parametrize("workflow", sorted(WORKFLOW_ARTIFACTS))
def test_every_workflow_runs_as_a_submitted_job(head, workflow_jobs, workflow):
    client, _, _ = head
    job_id, data = workflow_jobs[workflow]
    logs = _succeeded(client, job_id, workflow)
    pattern = WORKFLOW_ARTIFACTS[workflow]
    if pattern:
        assert list(Path(data).glob(pattern)), f"{workflow}: nothing matches {pattern} under {data}"
    elif workflow == "eval_solver":
        assert '"pass@1"' in logs or "pass@1" in logs, logs[-2000:]
    else:
        assert '"answer"' in logs, logs[-2000:]


def test_quickstart_job_trains_evaluates_and_a_rerun_reuses(head, workflow_jobs, ray_session):
    """The submitted smoke quickstart's artifacts; then the same job run again in-process (what a
    user's second `squigglray quickstart` does) reuses every stage and evaluates nothing again."""
    from squigglray.families import list_families
    from squigglray.jobs.quickstart import EVAL_PROVENANCE, main, stored_eval
    from squigglray.paths import ArtifactStore

    client, _, _ = head
    job_id, data = workflow_jobs["quickstart"]
    logs = _succeeded(client, job_id, "quickstart")
    assert "held-out accuracy:" in logs and "solver accuracy:" in logs and "DIS ranking:" in logs, logs[-3000:]
    [report] = Path(data).glob("runs/*/reports/heldout_summary.json")
    run = report.parents[1]
    rid = run.name
    summary = json.loads(report.read_text())
    assert summary["provenance"]["run_id"] == rid and summary["provenance"]["seed"] == 0
    for rel in ("config.json", "run.json", "scalars.parquet", "checkpoints/final/model.safetensors",
                "reports/report.md", "reports/plots/loss.png", "reports/heldout_eval.parquet"):
        assert (run / rel).exists(), rel
    rows = pq.read_table(run / "reports" / "heldout_eval.parquet").to_pylist()
    assert {r["family_id"] for r in rows} == set(list_families())
    assert len(rows) == 2 * len(list_families())
    assert all(r["run_id"] == rid and r["config_hash"] == summary["provenance"]["config_hash"] for r in rows)
    table = {r["family_id"]: r for r in summary["table"]}
    assert table["ALL"]["n"] == len(rows)
    md = (run / "reports" / "report.md").read_text()
    assert "| family |" in md and "mod_power" in md

    # the small solver evaluation (smoke size: N in 1,4 on one problem of 4 families, Ray sandbox actors)
    for rel in ("solver_eval.json", "solver_eval.parquet", "solver_eval.md", "plots/solver_accuracy.png"):
        assert (run / "reports" / rel).exists(), rel
    solver = json.loads((run / "reports" / "solver_eval.json").read_text())
    assert {(r["code"], r["n"]) for r in solver["table"]} == {(c, n) for c in (True, False) for n in (1, 4)}
    assert solver["provenance"]["run_id"] == rid and len(solver["families"]) == 4
    assert "## Solver" in md and "weighted@N" in md and "plots/solver_accuracy.png" in md

    # the probe sweep of the checkpoint: 2 families x 2 seeds + 2 controls x 2 seeds, ranked by DIS
    exp = Path(data) / "experiments" / f"probe-{rid}"
    probes = pq.read_table(exp / "aggregated" / "probe_summaries.parquet").to_pylist()
    assert len(probes) == 8 and len(list((exp / "summaries").iterdir())) == 8
    assert {r["family_id"] for r in probes if r["role"] == "family"} == {"gcd_lcm", "mod_power"}
    assert sum(r["role"] == "family" for r in probes) == 4 and all(r["dis"] is not None for r in probes)
    assert "## Probe sweep: DIS ranking" in md

    again = main(["--smoke", *QUICKSTART, "--data-dir", str(data)])
    assert again["reused"] and again["run"].provenance.run_id == rid
    evaluated = [{k: v for k, v in r.items() if k not in EVAL_PROVENANCE} for r in rows]
    assert again["rows"] == evaluated  # read back from heldout_eval.parquet (stored_eval), not evaluated again
    assert again["solver"]["table"] == solver["table"]
    assert again["solver"]["seconds"] == solver["seconds"]  # read back from solver_eval.json, not sampled again
    assert again["probe_sweep"]["ran"] == 0
    assert again["experiment"]["analysis_reused"]  # the dynamics analysis is read back too
    again_md = (run / "reports" / "report.md").read_text()
    assert again_md.count("## Events") == md.count("## Events") == 1 and "## Solver" in again_md
    assert again["probe_sweep"]["family_table"][0]["family_id"] in again_md

    # held-out rows of another package version (or config) are evaluated again, not reused
    store = ArtifactStore(str(data))
    assert stored_eval(store, again["run"]) == evaluated
    path = run / "reports" / "heldout_eval.parquet"
    t = pq.read_table(path)
    pq.write_table(t.set_column(t.column_names.index("package_version"), "package_version",
                                [["0.0.0"] * t.num_rows]), path)
    assert stored_eval(store, again["run"]) is None


def test_ineq_job_runs_every_step_and_a_rerun_resumes(head, workflow_jobs, ray_session):
    """The submitted inequality pipeline (test_ineq_pipeline's test size) wrote every step; reruns
    in-process on its data dir resume from the cache and redo only what a changed section needs."""
    from squigglray.jobs.ineq import run

    client, _, _ = head
    job_id, data = workflow_jobs["ineq"]
    _succeeded(client, job_id, "ineq")
    verifier_model = str(Path(data).parent / "nano-verifier")
    [exp] = Path(data).glob("experiments/ineq-t-*")
    out = json.loads((exp / "result.json").read_text())
    assert out["experiment_id"] == exp.name
    for rel in ("problems/problems.jsonl", "candidates/candidates.parquet", "split/train.jsonl", "split/test.jsonl",
                "baseline/eval.parquet", "final/eval.parquet", "sft/model/config.json", "learning_curve/curve.json",
                "report.md", "plots/sft_loss.png", "plots/learning_curve.png", "result.json"):
        assert (exp / rel).exists(), rel
    cands = pq.read_table(exp / "candidates/candidates.parquet").to_pylist()
    by = {r["generated_by"] for r in cands}
    assert by == {"reference", "nano"} and all(r["verified_by"] == verifier_model for r in cands)
    assert all(r["mech_score"] == 1 for r in cands if r["generated_by"] == "reference")
    ref = [r for r in cands if r["generated_by"] == "reference"]
    assert all(r["mech_claim_verified"] is True and json.loads(r["mech_justification"]) for r in ref)
    assert all(j["justified"] and j["rule"] for r in ref for j in json.loads(r["mech_justification"]))
    assert out["candidates"]["by_source"]["reference"]["claim_verified"] == len(ref)
    assert out["split"]["train"] >= 8 and out["split"]["test"] >= 3

    train = [json.loads(line) for line in (exp / "split/train.jsonl").read_text().splitlines()]
    mix = out["split"]["target_source"]
    assert {r["target_source"] for r in train} <= {"llm", "reference"} and sum(mix.values()) == len(train)
    passed_llm = {r["problem_id"] for r in cands if r["generated_by"] == "nano" and r["mech_score"] == 1}
    assert mix["llm"] == sum(r["problem_id"] in passed_llm for r in train)  # a passing LLM proof is preferred
    assert "SFT targets (train rows)" in (exp / "report.md").read_text()
    base = pq.read_table(exp / "baseline/eval.parquet").to_pylist()
    final = pq.read_table(exp / "final/eval.parquet").to_pylist()
    assert {r["mode"] for r in base} == {"few_shot"} and {r["mode"] for r in final} == {"zero_shot"}
    assert all(r["shots_used"] >= 1 for r in base) and all(r["shots_used"] == 0 for r in final)
    assert {"score_mechanical", "score_llm"} <= set(base[0])
    assert [r["n"] for r in out["learning_curve"]["curve"]] == [4, 8]
    assert "| **all** |" in (exp / "report.md").read_text()
    assert out["sft"]["steps"] == 4

    logs: list[str] = []
    (exp / "final/_done.json").unlink()
    again = run(small(verifier_model), str(data), log=logs.append)
    assert _ran(logs) == ["final"] and again["final"]["n"] == out["final"]["n"], logs

    logs.clear()  # a changed eval section reruns the evaluations only; SFT and the data are reused
    changed = run(small(verifier_model, eval={**small(verifier_model).eval.model_dump(), "max_new_tokens": 24}),
                  str(data), log=logs.append)
    assert changed["experiment_id"] == out["experiment_id"]
    assert _ran(logs) == ["baseline", "final", "learning_curve"], logs
