"""The example GPU workflows and this project's CI workflow: audited, shaped right, and their
gpu-runner steps run for real (bash and the real command) against the broker double."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gpu-training.yml"
MATRIX = ROOT / "examples" / "gpu-matrix.yml"
TRAIN_AND_REPORT = ROOT / "examples" / "train-and-report.yml"
EXAMPLES = [EXAMPLE, MATRIX, TRAIN_AND_REPORT]
CI_WORKFLOW = ROOT / ".github" / "workflows" / "tests.yml"
WORKFLOWS = [EXAMPLE, MATRIX, CI_WORKFLOW]
GPU_JOBS = ("start-gpu-runner", "guard-gpu-runner", "stop-gpu-runner")
# The job each example's GPU runners are for.
TRAINING_JOB = {EXAMPLE: "train", MATRIX: "train", TRAIN_AND_REPORT: "train-and-report"}

SHA_PINNED_USES = re.compile(r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s+v\d+\.\d+\.\d+\s*$")
READ_ONLY = {"read", "none"}


def tool(name: str) -> str:
    """A tool from this venv first, then PATH; fails (never skips) when missing."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -r requirements-dev.txt (or the project's test setup)"
    return found


def load(path: Path) -> dict:
    document = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in document:
        document["on"] = document.pop(True)
    return document


def zizmor(path: Path, persona: str = "regular") -> list[dict]:
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--no-config", f"--persona={persona}", "--format=json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip(), f"zizmor printed nothing (exit {result.returncode}): {result.stderr}"
    return json.loads(result.stdout)


def summary(findings: list[dict]) -> list[tuple[str, str, str]]:
    """(audit, severity, where) per finding, for readable assertion failures."""

    def where(finding: dict) -> str:
        try:  # zizmor's JSON v1 layout; only for messages, so never fail on it
            route = finding["locations"][0]["symbolic"]["route"]["route"]
            return "/".join(str(part.get("Key", part.get("Index"))) for part in route)
        except (KeyError, IndexError, TypeError, AttributeError):
            return "?"

    return [(finding["ident"], finding["determinations"]["severity"], where(finding)) for finding in findings]


def jobs(path: Path = EXAMPLE) -> dict:
    return load(path)["jobs"]


def run_script(job: str, step_index: int = 0, path: Path = EXAMPLE) -> str:
    return jobs(path)[job]["steps"][step_index]["run"]


def ids(path: Path) -> str:
    return path.name


# --- zizmor ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids)
def test_zizmor_finds_nothing(path):
    assert summary(zizmor(path)) == []


@pytest.mark.parametrize("path", [EXAMPLE, MATRIX], ids=ids)
def test_zizmor_auditor_persona_finds_nothing_in_the_examples(path):
    """No secret in the examples any more (CI's kubeconfig is not needed to start a runner),
    a concurrency group, and a runner label that names no self-hosted default."""
    assert summary(zizmor(path, "auditor")) == []


def test_ci_workflow_passes_the_auditor_persona():
    assert [finding for finding in summary(zizmor(CI_WORKFLOW, "auditor")) if finding[1] != "Low"] == []


# --- shape ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids)
def test_every_action_is_pinned_to_a_commit_with_its_version(path):
    uses_lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]

    assert uses_lines
    assert [line for line in uses_lines if not SHA_PINNED_USES.match(line)] == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids)
def test_permissions_are_read_only_and_checkout_keeps_no_credentials(path):
    workflow = load(path)

    assert workflow["permissions"] in ({}, {"contents": "read"})
    for name, job in workflow["jobs"].items():
        permissions = dict(job.get("permissions", {}))
        if name == "guard-gpu-runner":  # it reads this run's jobs and may cancel its own run, and does nothing else
            assert permissions.pop("actions") == "write"
        if name in GPU_JOBS:
            assert permissions == {}, f"{name}: gpu-runner needs no GitHub token of its own"
        assert set(permissions.values()) <= READ_ONLY, name
        assert isinstance(job.get("timeout-minutes"), int), f"{name} has no timeout-minutes"
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids)
def test_no_expression_is_interpolated_into_a_script(path):
    for name, job in load(path)["jobs"].items():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), f"{name}: {step.get('name')}"
            assert "secrets." not in step.get("run", ""), f"{name}: {step.get('name')}"


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_gpu_runs_only_on_pull_requests_and_dispatch_never_giving_fork_code_secrets(path):
    triggers = load(path)["on"]

    assert set(triggers) == {"pull_request", "workflow_dispatch"}, "no GPU node for every push to main"
    assert "pull_request_target" not in path.read_text().replace("never pull_request_target", "")
    assert "head.repo.full_name == github.repository" in jobs(path)["start-gpu-runner"]["if"]


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_one_run_at_a_time_per_pull_request_a_new_push_cancelling_the_old(path):
    assert load(path)["concurrency"] == {
        "group": "${{ github.workflow }}-${{ github.event.pull_request.number || github.ref }}",
        "cancel-in-progress": "${{ github.event_name == 'pull_request' }}",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_starting_guarding_and_stopping_need_no_cluster_credential(path):
    text = path.read_text()

    assert "GCP_K8S_KUBECONFIG" not in text and "GCP_SERVICE_ACCOUNT" not in text
    for name in GPU_JOBS:
        for step in jobs(path)[name]["steps"]:
            assert set(step.get("env", {})) <= {"GITHUB_TOKEN", "GPU_RUNNER_TIMEOUT_SECONDS"}, name


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_jobs_chain_start_guard_train_stop(path):
    training = TRAINING_JOB[path]
    start, guard, train, stop = (
        jobs(path)[name] for name in ("start-gpu-runner", "guard-gpu-runner", training, "stop-gpu-runner")
    )

    # The one label the broker gives each kind of runner, nothing GitHub may or may not add.
    assert start["runs-on"] == guard["runs-on"] == stop["runs-on"] == "base-runner"
    assert train["runs-on"] == "gpu-runner-${{ github.run_id }}"
    assert train["needs"] == guard["needs"] == "start-gpu-runner"
    assert stop["needs"] == ["start-gpu-runner", training]
    assert stop["if"] == "always() && needs.start-gpu-runner.result != 'skipped'"
    assert shlex.split(run_script("start-gpu-runner", path=path))[:2] == ["gpu-runner", "start"]
    assert run_script("stop-gpu-runner", path=path) == "gpu-runner stop"
    assert guard["steps"][0]["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    # guard knows the job by the name GitHub shows: the training job's `name:`.
    assert shlex.split(run_script("guard-gpu-runner", path=path)) == ["gpu-runner", "guard", "--job", train["name"]]


def test_gpu_training_shows_the_gpu_on_one_runner():
    train = jobs()["train"]
    steps = [step.get("run", step.get("uses", "")) for step in train["steps"]]

    assert run_script("start-gpu-runner") == "gpu-runner start"
    assert steps[0].startswith("actions/checkout@")
    assert steps[1] == "nvidia-smi"


def test_the_matrix_asks_for_one_runner_per_gpu_job():
    start, train = jobs(MATRIX)["start-gpu-runner"], jobs(MATRIX)["train"]
    matrix = train["strategy"]["matrix"]

    assert shlex.split(run_script("start-gpu-runner", path=MATRIX)) == ["gpu-runner", "start", "--count", "2"]
    assert [len(values) for values in matrix.values()] == [2]
    assert train["strategy"]["fail-fast"] is False, "a cancelled instance would leave its runner waiting"
    assert start["timeout-minutes"] * 60 > int(start["steps"][0]["env"]["GPU_RUNNER_TIMEOUT_SECONDS"])


def test_secrets_reach_steps_only_through_env():
    for path in WORKFLOWS:
        for job in jobs(path).values():
            for step in job["steps"]:
                with_values = " ".join(str(value) for value in step.get("with", {}).values())
                assert "secrets." not in with_values
                assert not any("secrets." in value for value in step.get("env", {}).values())


def test_ci_workflow_runs_the_project_checks_on_python_311():
    workflow = load(CI_WORKFLOW)
    (job,) = workflow["jobs"].values()

    assert set(workflow["on"]) == {"push", "pull_request"}
    assert job["runs-on"] == "ubuntu-latest"
    assert job["steps"][1]["uses"].startswith("actions/setup-python@")
    assert job["steps"][1]["with"]["python-version"] == "3.11"
    assert job["steps"][-1]["run"] == "bash .ci/run"


# --- the gpu-runner steps, for real ------------------------------------------------------

RUN_ID, RUN_ATTEMPT, REPOSITORY = "4242", "1", "acme/models"
GITHUB_TOKEN = "ghs_fake_token_of_the_guard_job"


def run_step(path: Path, job: str, base: dict[str, str]) -> subprocess.CompletedProcess:
    """The job's one step as GitHub runs it: bash -eo pipefail, with the step's env (expressions evaluated)."""
    [step] = jobs(path)[job]["steps"]
    env = {
        **base,
        **{name: value.replace("${{ github.token }}", GITHUB_TOKEN) for name, value in step.get("env", {}).items()},
    }
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_the_start_guard_and_stop_steps_work_on_a_base_runner(tmp_path, path):
    """On a base runner: its pod's broker variables, GitHub's run variables, `gpu-runner` on PATH."""
    from fake_broker import FakeBroker, GpuFleet
    from fake_github import FakeGitHub, Reply

    count = 2 if path == MATRIX else 1
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gpu-runner").symlink_to(ROOT / "runner_image" / "gpu-runner")
    (tmp_path / "token").write_text("fake-projected-token.of-a-base-runner-pod")
    training = jobs(path)[TRAINING_JOB[path]]
    names = [
        f"{training['name']} ({value})"
        for value in training.get("strategy", {}).get("matrix", {}).get("learning-rate", [])
    ] or [training["name"]]
    with FakeBroker(fleet=GpuFleet(gpus=2)) as broker, FakeGitHub() as github:
        base = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "RUNNER_BROKER_URL": broker.url,
            "RUNNER_BROKER_TOKEN_FILE": str(tmp_path / "token"),
            "GITHUB_RUN_ID": RUN_ID,
            "GITHUB_RUN_ATTEMPT": RUN_ATTEMPT,
            "GITHUB_REPOSITORY": REPOSITORY,
            "GITHUB_API_URL": github.url,
            "GITHUB_OUTPUT": str(tmp_path / "output"),
            "GPU_RUNNER_POLL_SECONDS": "0.01",
        }
        started = run_step(path, "start-gpu-runner", base)
        runners = broker.fleet.jobs_of(RUN_ID, RUN_ATTEMPT)
        for runner in runners:  # each training job takes a runner
            broker.fleet.take(runner)
        github.default(
            f"/repos/{REPOSITORY}/actions/runs/{RUN_ID}/attempts/{RUN_ATTEMPT}/jobs",
            Reply(
                200,
                {
                    "total_count": count,
                    "jobs": [
                        {"name": name, "run_id": int(RUN_ID), "runner_name": runner}
                        for name, runner in zip(names, runners, strict=True)
                    ],
                },
            ),
        )
        guarded = run_step(path, "guard-gpu-runner", base)
        stopped = run_step(path, "stop-gpu-runner", base)
        left = broker.fleet.jobs_of(RUN_ID, RUN_ATTEMPT)

    assert started.returncode == 0, started.stdout + started.stderr
    assert len(runners) == count
    assert (tmp_path / "output").read_text() == f"label=gpu-runner-{RUN_ID}\n"
    assert guarded.returncode == 0, guarded.stdout + guarded.stderr
    assert re.search(r"::notice::(the GPU runner has|all 2 GPU runners have) taken", guarded.stdout)
    assert github.requests[0].headers["authorization"] == f"Bearer {GITHUB_TOKEN}"
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert left == []
