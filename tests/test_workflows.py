"""The example GPU workflow and this project's CI workflow: audited and shaped right.
The `gpu-runner` command the example runs is tested in test_gpu_runner_script.py."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gpu-training.yml"
CI_WORKFLOW = ROOT / ".github" / "workflows" / "tests.yml"
WORKFLOWS = [EXAMPLE, CI_WORKFLOW]

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


def run_script(job: str, step_index: int = 0) -> str:
    return jobs()[job]["steps"][step_index]["run"]


# --- zizmor ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_zizmor_finds_nothing(path):
    assert summary(zizmor(path)) == []


def test_zizmor_auditor_persona_flags_only_self_hosted_runners_and_repository_secrets():
    """The stricter persona flags what the design is: self-hosted runners, and the
    CI kubeconfig as a repository secret (the contract) rather than an environment's."""
    idents = {ident for ident, _, _ in summary(zizmor(EXAMPLE, "auditor"))}

    assert idents <= {"self-hosted-runner", "secrets-outside-env", "concurrency-limits"}


def test_ci_workflow_passes_the_auditor_persona():
    assert [finding for finding in summary(zizmor(CI_WORKFLOW, "auditor")) if finding[1] != "Low"] == []


# --- shape ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path):
    uses_lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]

    assert uses_lines
    assert [line for line in uses_lines if not SHA_PINNED_USES.match(line)] == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_permissions_are_read_only_and_checkout_keeps_no_credentials(path):
    workflow = load(path)

    assert workflow["permissions"] in ({}, {"contents": "read"})
    for name, job in workflow["jobs"].items():
        permissions = dict(job.get("permissions", {}))
        if name == "guard-gpu-runner":  # it may cancel its own run, and do nothing else
            assert permissions.pop("actions") == "write"
        if name.endswith("-gpu-runner"):  # the cluster's short-lived token comes from the job's OIDC token
            assert permissions.pop("id-token") == "write"
        assert set(permissions.values()) <= READ_ONLY, name
        assert isinstance(job.get("timeout-minutes"), int), f"{name} has no timeout-minutes"
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_no_expression_is_interpolated_into_a_script(path):
    for name, job in load(path)["jobs"].items():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), f"{name}: {step.get('name')}"
            assert "secrets." not in step.get("run", ""), f"{name}: {step.get('name')}"


def test_example_triggers_never_give_fork_code_secrets():
    triggers = load(EXAMPLE)["on"]

    assert set(triggers) == {"pull_request", "workflow_dispatch"}
    assert "pull_request_target" not in EXAMPLE.read_text().replace("never pull_request_target", "")


def test_example_jobs_chain_start_guard_train_stop():
    start, guard, train, stop = (jobs()[name] for name in ("start-gpu-runner", "guard-gpu-runner", "train",
                                                          "stop-gpu-runner"))

    # The one label the broker gives each kind of runner, nothing GitHub may or may not add.
    assert start["runs-on"] == guard["runs-on"] == stop["runs-on"] == "base-runner"
    assert train["runs-on"] == "gpu-runner-${{ github.run_id }}"
    assert train["needs"] == guard["needs"] == "start-gpu-runner"
    assert stop["needs"] == ["start-gpu-runner", "train"]
    assert stop["if"].startswith("always()")
    assert run_script("start-gpu-runner") == "gpu-runner start"
    assert run_script("guard-gpu-runner") == "gpu-runner guard"
    assert run_script("stop-gpu-runner") == "gpu-runner stop"
    assert guard["steps"][0]["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    train_steps = [step.get("run", step.get("uses", "")) for step in train["steps"]]
    assert train_steps[0].startswith("actions/checkout@")
    assert train_steps[1] == "nvidia-smi"


def name_of(step: dict, value: str) -> str:
    return next(name for name, held in step["env"].items() if held == value)


def test_secrets_reach_steps_only_through_env():
    for job in jobs().values():
        for step in job["steps"]:
            with_values = " ".join(str(value) for value in step.get("with", {}).values())
            assert "secrets." not in with_values
            for value in step.get("env", {}).values():
                if "secrets." in value:
                    assert value == "${{ secrets.GCP_K8S_KUBECONFIG }}"
                    assert name_of(step, value) == "GCP_K8S_KUBECONFIG"


def test_ci_workflow_runs_the_project_checks_on_python_311():
    workflow = load(CI_WORKFLOW)
    (job,) = workflow["jobs"].values()

    assert set(workflow["on"]) == {"push", "pull_request"}
    assert job["runs-on"] == "ubuntu-latest"
    assert job["steps"][1]["uses"].startswith("actions/setup-python@")
    assert job["steps"][1]["with"]["python-version"] == "3.11"
    assert job["steps"][-1]["run"] == "bash .ci/run"
