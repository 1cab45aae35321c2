"""The example GPU workflow and this project's CI workflow: audited, shaped right, and
the example's shell steps run against a stub kubectl."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
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
        assert set(job.get("permissions", {}).values()) <= READ_ONLY, name
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


def test_example_jobs_chain_start_train_stop():
    start, train, stop = (jobs()[name] for name in ("start-gpu-runner", "train", "stop-gpu-runner"))

    # The one label the broker gives each kind of runner, nothing GitHub may or may not add.
    assert start["runs-on"] == "base-runner"
    assert stop["runs-on"] == "base-runner"
    assert train["runs-on"] == "gpu-runner-${{ github.run_id }}"
    assert train["needs"] == "start-gpu-runner"
    assert stop["needs"] == ["start-gpu-runner", "train"]
    assert stop["if"].startswith("always()")
    assert "kubectl delete \"job/gpu-runner-${GITHUB_RUN_ID}-${GITHUB_RUN_ATTEMPT}\"" in run_script("stop-gpu-runner")
    train_steps = [step.get("run", step.get("uses", "")) for step in train["steps"]]
    assert train_steps[0].startswith("actions/checkout@")
    assert train_steps[1] == "nvidia-smi"


def test_secrets_reach_steps_only_through_env():
    for job in jobs().values():
        for step in job["steps"]:
            with_values = " ".join(str(value) for value in step.get("with", {}).values())
            assert "secrets." not in with_values
            for value in step.get("env", {}).values():
                if "secrets." in value:
                    assert value == "${{ secrets.GCP_K8S_KUBECONFIG }}"


def test_ci_workflow_runs_the_project_checks_on_python_311():
    workflow = load(CI_WORKFLOW)
    (job,) = workflow["jobs"].values()

    assert set(workflow["on"]) == {"push", "pull_request"}
    assert job["runs-on"] == "ubuntu-latest"
    assert job["steps"][1]["uses"].startswith("actions/setup-python@")
    assert job["steps"][1]["with"]["python-version"] == "3.11"
    assert job["steps"][-1]["run"] == "bash .ci/run"


@pytest.mark.parametrize("job", ["start-gpu-runner", "stop-gpu-runner"])
def test_example_scripts_pass_shellcheck(job):
    result = subprocess.run(
        [tool("shellcheck"), "--shell=bash", "--severity=style", "-"],
        input=run_script(job),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


# --- the example's scripts, run against a stub kubectl -----------------------------------

KUBECONFIG_SECRET = (
    "apiVersion: v1\nkind: Config\nusers:\n- name: ci\n  user:\n    token: sa-token-that-must-stay-secret\n"
)
TEMPLATE = textwrap.dedent(
    """\
    apiVersion: batch/v1
    kind: Job
    metadata:
      name: gpu-runner-${GITHUB_RUN_ID}-${GITHUB_RUN_ATTEMPT}
    spec:
      template:
        spec:
          containers:
            - name: runner
              env:
                - name: RUN_LABEL
                  value: run-${GITHUB_RUN_ID}
                - name: LEFT_ALONE
                  value: $HOME ${RUNNER_NAME} $(POD_NAME)
    """
)

STUB_KUBECTL = """\
#!{python}
import json, os, stat, sys
kubeconfig = os.environ.get("KUBECONFIG", "")
record = {{"argv": sys.argv[1:], "kubeconfig": kubeconfig}}
if os.path.exists(kubeconfig):
    record["kubeconfig_mode"] = stat.S_IMODE(os.stat(kubeconfig).st_mode)
    record["kubeconfig_text"] = open(kubeconfig).read()
if sys.argv[1:2] == ["create"]:
    record["stdin"] = sys.stdin.read()
with open({log!r}, "a") as log:
    log.write(json.dumps(record) + "\\n")
if sys.argv[1:3] == ["get", "configmap"]:
    sys.stdout.write(os.environ["STUB_TEMPLATE"])
verb = sys.argv[1].upper() + ("_POD" if sys.argv[1:3] == ["wait", "pod"] else "")
sys.exit(int(os.environ.get("STUB_EXIT_" + verb, "0")))
"""


def run_step(tmp_path: Path, job: str, **stub_env: str) -> tuple[subprocess.CompletedProcess, list[dict], Path]:
    """Run a job's script as GitHub would (`bash -eo pipefail`) with a stub kubectl."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "kubectl.jsonl"
    log.touch()
    kubectl = stubs / "kubectl"
    kubectl.write_text(STUB_KUBECTL.format(python=sys.executable, log=str(log)))
    kubectl.chmod(0o755)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    env = {
        "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_RUN_ID": "4242",
        "GITHUB_RUN_ATTEMPT": "3",
        "KUBECONFIG_DATA": KUBECONFIG_SECRET,
        "STUB_TEMPLATE": TEMPLATE,
        **stub_env,
    }
    script = tmp_path / "step.sh"
    script.write_text(run_script(job))
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        # The worst runner: files world-readable unless the script says otherwise.
        preexec_fn=lambda: os.umask(0),
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return result, calls, runner_temp


def assert_kubeconfig_handled_privately(calls: list[dict], runner_temp: Path, result: subprocess.CompletedProcess):
    assert calls
    for call in calls:
        assert Path(call["kubeconfig"]).parent == runner_temp
        assert call["kubeconfig_mode"] == 0o600
        assert call["kubeconfig_text"].strip() == KUBECONFIG_SECRET.strip()
        assert "sa-token-that-must-stay-secret" not in " ".join(call["argv"])
    assert list(runner_temp.iterdir()) == [], "the kubeconfig must be removed"
    assert "sa-token-that-must-stay-secret" not in result.stdout + result.stderr


def test_start_creates_the_run_attempts_job_from_the_cluster_template(tmp_path):
    result, calls, runner_temp = run_step(tmp_path, "start-gpu-runner")

    assert result.returncode == 0, result.stderr
    assert [call["argv"] for call in calls] == [
        ["get", "configmap", "gpu-runner-template", "-o", r"jsonpath={.data.runner-gpu\.yaml}"],
        ["create", "-f", "-"],
        ["wait", "job/gpu-runner-4242-3", "--for=jsonpath={.status.active}=1", "--timeout=2m"],
        [
            "wait", "pod", "--selector=batch.kubernetes.io/job-name=gpu-runner-4242-3",
            "--for=condition=Ready", "--timeout=20m",
        ],  # fmt: skip
    ]
    manifest = yaml.safe_load(calls[1]["stdin"])
    assert manifest["metadata"]["name"] == "gpu-runner-4242-3"
    env = {item["name"]: item["value"] for item in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"RUN_LABEL": "run-4242", "LEFT_ALONE": "$HOME ${RUNNER_NAME} $(POD_NAME)"}
    assert_kubeconfig_handled_privately(calls, runner_temp, result)


def test_start_fails_and_still_removes_the_kubeconfig_when_create_fails(tmp_path):
    result, calls, runner_temp = run_step(tmp_path, "start-gpu-runner", STUB_EXIT_CREATE="1")

    assert result.returncode != 0
    assert_kubeconfig_handled_privately(calls, runner_temp, result)


def test_start_fails_when_the_gpu_runner_never_gets_ready(tmp_path):
    result, calls, runner_temp = run_step(tmp_path, "start-gpu-runner", STUB_EXIT_WAIT_POD="1")

    assert result.returncode == 1
    assert "::error::GPU runner gpu-runner-4242-3 not ready" in result.stdout
    assert calls[-1]["argv"][:3] == ["get", "pods", "--selector=batch.kubernetes.io/job-name=gpu-runner-4242-3"]
    assert_kubeconfig_handled_privately(calls, runner_temp, result)


def test_start_refuses_an_empty_template(tmp_path):
    result, calls, runner_temp = run_step(tmp_path, "start-gpu-runner", STUB_TEMPLATE="")

    assert result.returncode != 0
    assert "gpu-runner-template" in result.stdout
    assert [call["argv"][0] for call in calls] == ["get"]
    assert_kubeconfig_handled_privately(calls, runner_temp, result)


def test_stop_deletes_the_run_attempts_job_without_waiting(tmp_path):
    result, calls, runner_temp = run_step(tmp_path, "stop-gpu-runner")

    assert result.returncode == 0, result.stderr
    assert [call["argv"] for call in calls] == [
        ["delete", "job/gpu-runner-4242-3", "--ignore-not-found", "--wait=false"]
    ]
    assert_kubeconfig_handled_privately(calls, runner_temp, result)

