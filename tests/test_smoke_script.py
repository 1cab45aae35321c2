"""scripts/smoke-test.sh, run against stub `pulumi` and `kubectl`, a recording `curl`
wrapper and a fake GitHub API."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.documents import operator_kubeconfig
from fake_github import FakeGitHub, Reply

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "smoke-test.sh"

TOKEN = "ghp_smoke-test-token-never-shown"
NAMESPACE = "github-runners"
IMAGE = "us-central1-docker.pkg.dev/acme-ml/gpu-runners-ghcr/acme/gpu-runner@sha256:" + "ab" * 32
RUNNERS_PATH = "/repos/o/r/actions/runners"
KUBECONFIG_TEXT = operator_kubeconfig("gpu-runners", "203.0.113.10", "Q0EK")
SHORT_GPU_WAIT = {"SMOKE_GPU_TIMEOUT_SECONDS": "1", "SMOKE_POLL_SECONDS": "0.2"}
GPU_LINE = "GPU 0: Tesla T4 (UUID: GPU-0a1b2c3d-0000-1111-2222-333344445555)"

STUB = """\
#!{python} -S
# A stub {tool}: records its argv, stdin and KUBECONFIG, answers from the scenario.
import json, os, stat, sys

tool = {tool!r}
args = sys.argv[1:]
scenario = json.load(open(os.environ["STUB_SCENARIO"]))
record = {{"tool": tool, "argv": args}}
kubeconfig = os.environ.get("KUBECONFIG")
if tool == "kubectl" and kubeconfig:
    record["kubeconfig"] = kubeconfig
    if os.path.exists(kubeconfig):
        record["kubeconfig_mode"] = stat.S_IMODE(os.stat(kubeconfig).st_mode)
        record["kubeconfig_text"] = open(kubeconfig).read()
if "-" in args:
    record["stdin"] = sys.stdin.read()
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")


def answer(reply):
    sys.stdout.write(reply.get("stdout", ""))
    sys.stderr.write(reply.get("stderr", ""))
    sys.exit(reply.get("exit", 0))


if tool == "pulumi":
    answer(scenario["pulumi"][" ".join(args[:2])])
verb = args[args.index("-n") + 2] if "-n" in args else args[0]
if verb == "get":
    # Pod states in order, the last one repeated.
    counter = os.environ["STUB_LOG"] + ".get-count"
    count = int(open(counter).read()) if os.path.exists(counter) else 0
    open(counter, "w").write(str(count + 1))
    states = scenario["kubectl"]["get"]
    answer(states[min(count, len(states) - 1)])
answer(scenario["kubectl"].get(verb, {{}}))
"""

CURL_WRAPPER = """\
#!/usr/bin/env bash
# Records curl's argv, then runs the real curl.
printf '%s\\0' "$@" >>"$STUB_LOG.curl"
exec {curl} "$@"
"""


def pod(phase: str, **status) -> dict:
    return {"stdout": json.dumps({"kind": "Pod", "status": {"phase": phase, **status}})}


UNSCHEDULABLE = pod(
    "Pending",
    conditions=[
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        }
    ],
)


def scenario(**changes) -> dict:
    """Everything healthy, unless `changes` says otherwise."""
    healthy = {
        "pulumi": {
            "stack output": {
                "stdout": json.dumps(
                    {
                        "clusterName": "gpu-runners",
                        "clusterLocation": "us-central1-a",
                        "kubeconfig": KUBECONFIG_TEXT,
                        "namespace": NAMESPACE,
                        "runnerImage": "ghcr.io/acme/gpu-runner@sha256:" + "ab" * 32,
                        "clusterRunnerImage": IMAGE,
                        "gpuRunnerTemplate": "kind: Job\n",
                    }
                )
            },
            "config get": {"stdout": "o/r\n"},
        },
        "kubectl": {
            "rollout": {"stdout": 'deployment "base-runner" successfully rolled out\n'},
            "create": {"stdout": "pod/gpu-smoke-test created\n"},
            "get": [UNSCHEDULABLE, pod("Running"), pod("Succeeded")],
            "logs": {"stdout": GPU_LINE + "\n"},
            "delete": {"stdout": ""},
        },
        "runners": Reply(
            200,
            {
                "total_count": 2,
                "runners": [
                    {
                        "name": "base-runner-7d9f-abcde",
                        "status": "online",
                        "labels": [{"name": "self-hosted"}, {"name": "base-runner"}],
                    },
                    {"name": "gpu-runner-1-1", "status": "offline", "labels": [{"name": "gpu-runner"}]},
                ],
            },
        ),
    }
    for key, value in changes.items():
        section, _, item = key.partition("__")
        if item:
            healthy[section][item.replace("_", " ") if section == "pulumi" else item] = value
        else:
            healthy[section] = value
    return healthy


class Run:
    """One run of the script, and everything the stubs and the fake GitHub saw."""

    def __init__(self, result: subprocess.CompletedProcess, log: Path, github: FakeGitHub):
        self.returncode = result.returncode
        self.output = result.stdout + result.stderr
        self.stdout = result.stdout
        self.calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        curl_log = Path(f"{log}.curl")
        self.curl_argv = curl_log.read_text().split("\0") if curl_log.exists() else []
        self.github_requests = github.requests

    def kubectl(self, verb: str) -> list[dict]:
        return [call for call in self.calls if call["tool"] == "kubectl" and verb in call["argv"]]

    def line(self, prefix: str) -> str:
        lines = [line for line in self.stdout.splitlines() if line.startswith(prefix)]
        assert len(lines) == 1, self.output
        return lines[0]

    def created_manifest(self) -> dict:
        (create,) = self.kubectl("create")
        return json.loads(create["stdin"])


def make_tools(directory: Path) -> Path:
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for tool in ("pulumi", "kubectl"):
        stub = bin_dir / tool
        stub.write_text(STUB.format(python=sys.executable, tool=tool))
        stub.chmod(0o755)
    curl = bin_dir / "curl"
    real_curl = shutil.which("curl")
    assert real_curl, "curl is not on PATH"
    curl.write_text(CURL_WRAPPER.format(curl=real_curl))
    curl.chmod(0o755)
    return bin_dir


@pytest.fixture
def tools(tmp_path) -> Path:
    return make_tools(tmp_path)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> tuple[Run, Path]:
    """One run with everything healthy, shared by the tests that only read it."""
    tmp_path = tmp_path_factory.mktemp("healthy")
    return smoke(tmp_path, make_tools(tmp_path), scenario()), tmp_path


def environment(tmp_path: Path, tools: Path, github: FakeGitHub, the_scenario: dict, **env: str) -> dict:
    github.default(RUNNERS_PATH, the_scenario.pop("runners"))
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(json.dumps(the_scenario))
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    base = {
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp),
        "STUB_SCENARIO": str(scenario_file),
        "STUB_LOG": str(tmp_path / "calls.jsonl"),
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_API_URL": github.url,
        "SMOKE_RUNNER_TIMEOUT_SECONDS": "0",
        "SMOKE_ROLLOUT_TIMEOUT_SECONDS": "5",
        "SMOKE_GPU_TIMEOUT_SECONDS": "30",
        "SMOKE_POLL_SECONDS": "0",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    base.update(env)
    return {key: value for key, value in base.items() if value is not None}


def smoke(tmp_path: Path, tools: Path, the_scenario: dict, *args: str, **env: str) -> Run:
    with FakeGitHub() as github:
        full_env = environment(tmp_path, tools, github, the_scenario, **env)
        result = subprocess.run(
            [str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=60, check=False
        )
        return Run(result, Path(full_env["STUB_LOG"]), github)


def assert_token_kept_secret(run: Run):
    assert TOKEN not in run.output
    for call in run.calls:
        assert TOKEN not in " ".join(call["argv"])
    assert run.curl_argv, "curl was not called"
    assert TOKEN not in " ".join(run.curl_argv)


def assert_pod_deleted(run: Run):
    (create,) = run.kubectl("create")
    name = run.created_manifest()["metadata"]["name"]
    deletes = run.kubectl("delete")
    assert [call["argv"] for call in deletes] == [
        ["-n", NAMESPACE, "delete", "pod", name, "--ignore-not-found", "--wait=false"]
    ]
    assert run.calls.index(deletes[0]) > run.calls.index(create)


# --- tests ------------------------------------------------------------------------------


def test_shellcheck_finds_nothing():
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run(
        [str(shellcheck) if shellcheck.exists() else "shellcheck", "--severity=style", str(SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_script_is_executable_bash_in_strict_mode():
    text = SCRIPT.read_text()
    assert os.access(SCRIPT, os.X_OK)
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -Eeuo pipefail\n" in text


def test_help_prints_usage_and_touches_nothing(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(), "--help")

    assert run.returncode == 0
    assert "Usage: scripts/smoke-test.sh" in run.stdout
    assert "GITHUB_TOKEN" in run.stdout and "gh auth token" in run.stdout
    assert "SMOKE_GPU_TIMEOUT_SECONDS" in run.stdout
    assert run.calls == []


def test_all_checks_pass(healthy):
    run, _ = healthy

    assert run.returncode == 0, run.output
    assert run.line("PASS  base runner deployment")
    assert "base-runner-7d9f-abcde" in run.line("PASS  base runner online")
    assert GPU_LINE in run.line("PASS  GPU pod")
    assert "FAIL" not in run.output
    assert "All checks passed." in run.stdout
    assert_pod_deleted(run)
    assert_token_kept_secret(run)


def test_one_pulumi_call_reads_every_output(healthy):
    run, _ = healthy

    assert [call["argv"] for call in run.calls if call["tool"] == "pulumi"] == [
        ["stack", "output", "--json", "--show-secrets"]
    ]


def test_kubectl_uses_the_operator_kubeconfig_from_a_private_file_that_is_removed(healthy):
    run, tmp_path = healthy

    kubectl_calls = [call for call in run.calls if call["tool"] == "kubectl"]
    assert kubectl_calls
    for call in kubectl_calls:
        assert call["kubeconfig_text"] == KUBECONFIG_TEXT
        assert call["kubeconfig_mode"] == 0o600
        assert "-n" in call["argv"] and call["argv"][call["argv"].index("-n") + 1] == NAMESPACE
    assert not Path(kubectl_calls[0]["kubeconfig"]).exists()
    assert list((tmp_path / "tmp").iterdir()) == [], "the private temp folder must be removed"
    (rollout,) = run.kubectl("rollout")
    assert rollout["argv"] == ["-n", NAMESPACE, "rollout", "status", "deployment/base-runner", "--timeout=5s"]


def test_github_gets_the_token_in_a_header(healthy):
    run, _ = healthy

    (request,) = [request for request in run.github_requests if request.path == RUNNERS_PATH]
    assert request.method == "GET"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-github-api-version"] == "2022-11-28"


def test_gpu_pod_manifest_is_json_built_for_the_gpu_pool(healthy):
    run, _ = healthy

    manifest = run.created_manifest()
    spec = manifest["spec"]
    (container,) = spec["containers"]
    assert manifest["kind"] == "Pod"
    assert manifest["metadata"]["namespace"] == NAMESPACE
    assert spec["nodeSelector"] == {"gpu": "true"}
    toleration = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    assert toleration in spec["tolerations"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"] == IMAGE
    assert container["command"] == ["nvidia-smi", "-L"]
    assert "imagePullSecrets" not in spec  # the nodes pull through Artifact Registry
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["activeDeadlineSeconds"] == 30


def test_gpu_pod_meets_the_restricted_pod_security_standard(healthy):
    run, _ = healthy

    spec = run.created_manifest()["spec"]
    (container,) = spec["containers"]
    context = {**spec["securityContext"], **container["securityContext"]}
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_base_runner_offline_fails_with_the_runner_hint(tmp_path, tools):
    offline = Reply(
        200,
        {
            "total_count": 1,
            "runners": [{"name": "base-runner-x", "status": "offline", "labels": [{"name": "base-runner"}]}],
        },
    )
    run = smoke(tmp_path, tools, scenario(runners=offline))

    assert run.returncode == 1
    failure = run.line("FAIL  base runner online")
    assert "base-runner-x offline" in failure
    assert "logs deploy/base-runner" in run.output and "PAT" in run.output
    assert "logs deploy/runner-broker" in run.output
    assert "1 check(s) failed: base runner online" in run.stdout
    assert run.line("PASS  GPU pod")
    assert_pod_deleted(run)
    assert_token_kept_secret(run)


def test_refused_token_fails_with_a_token_hint(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(runners=Reply(401, {"message": "Bad credentials"})))

    assert run.returncode == 1
    assert "401" in run.line("FAIL  base runner online")
    assert "gh auth token" in run.output
    assert_token_kept_secret(run)


def test_missing_token_fails_that_check_only(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(), GITHUB_TOKEN=None)

    assert run.returncode == 1
    assert "GITHUB_TOKEN is not set" in run.line("FAIL  base runner online")
    assert run.line("PASS  GPU pod")
    assert run.github_requests == []


def test_repository_comes_from_pulumi_config_when_not_in_env(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(), GITHUB_REPOSITORY=None)

    assert run.returncode == 0, run.output
    assert ["config", "get", "githubRepository"] in [call["argv"] for call in run.calls]
    assert [request.path for request in run.github_requests] == [RUNNERS_PATH]


def test_gpu_log_without_a_gpu_fails(tmp_path, tools):
    no_gpu = {"stdout": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"}
    run = smoke(tmp_path, tools, scenario(kubectl__logs=no_gpu))

    assert run.returncode == 1
    assert "GPU 0:" in run.line("FAIL  GPU pod")
    assert "hint:" in run.output
    assert_pod_deleted(run)


def test_gpu_pod_failing_fails(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(kubectl__get=[pod("Failed")], kubectl__logs={"stdout": ""}))

    assert run.returncode == 1
    assert "pod Failed" in run.line("FAIL  GPU pod")
    assert_pod_deleted(run)


def test_gpu_pool_that_never_scales_up_fails_with_a_quota_hint(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(kubectl__get=[UNSCHEDULABLE]), **SHORT_GPU_WAIT)

    assert run.returncode == 1
    assert "Insufficient nvidia.com/gpu" in run.line("FAIL  GPU pod")
    assert "quota" in run.output and "accelerator-types" in run.output
    assert run.kubectl("logs") == []
    assert_pod_deleted(run)


def test_image_pull_failure_gets_the_pull_token_hint(tmp_path, tools):
    waiting = {"reason": "ImagePullBackOff", "message": "403 Forbidden"}
    pulling = pod("Pending", containerStatuses=[{"state": {"waiting": waiting}}])
    run = smoke(tmp_path, tools, scenario(kubectl__get=[pulling]), **SHORT_GPU_WAIT)

    assert run.returncode == 1
    assert "ImagePullBackOff" in run.line("FAIL  GPU pod")
    assert "registryPullToken" in run.output
    assert_pod_deleted(run)


def test_refused_pod_is_reported_and_still_cleaned_up(tmp_path, tools):
    refused = {
        "exit": 1,
        "stderr": 'Error from server (Forbidden): pods "x" is forbidden: violates PodSecurity "restricted"\n',
    }
    run = smoke(tmp_path, tools, scenario(kubectl__create=refused))

    assert run.returncode == 1
    assert "violates PodSecurity" in run.line("FAIL  GPU pod")
    assert_pod_deleted(run)


def test_deployment_not_available_fails_and_the_other_checks_still_run(tmp_path, tools):
    stuck = {"exit": 1, "stderr": "error: timed out waiting for the condition\n"}
    run = smoke(tmp_path, tools, scenario(kubectl__rollout=stuck))

    assert run.returncode == 1
    assert "timed out waiting" in run.line("FAIL  base runner deployment")
    assert "logs deploy/base-runner" in run.output
    assert run.line("PASS  base runner online")
    assert run.line("PASS  GPU pod")


def test_without_stack_outputs_nothing_else_runs(tmp_path, tools):
    broken = {"exit": 255, "stderr": "error: no stack selected\n"}
    run = smoke(tmp_path, tools, scenario(pulumi__stack_output=broken))

    assert run.returncode == 1
    assert "no stack selected" in run.line("FAIL  stack outputs")
    assert "pulumi stack select" in run.output
    assert [call["tool"] for call in run.calls] == ["pulumi"]


def test_interrupted_run_still_deletes_the_pod(tmp_path, tools):
    with FakeGitHub() as github:
        env = environment(
            tmp_path, tools, github, scenario(kubectl__get=[UNSCHEDULABLE]),
            SMOKE_GPU_TIMEOUT_SECONDS="600", SMOKE_POLL_SECONDS="0.1",
        )  # fmt: skip
        log = Path(env["STUB_LOG"])
        process = subprocess.Popen([str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and '"create"' not in (log.read_text() if log.exists() else ""):
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
        run = Run(subprocess.CompletedProcess([], process.returncode, stdout, stderr), log, github)

    assert run.returncode == 143
    assert_pod_deleted(run)


def test_missing_outputs_are_named(tmp_path, tools):
    partial = {"stdout": json.dumps({"namespace": NAMESPACE, "clusterName": "gpu-runners"})}
    run = smoke(tmp_path, tools, scenario(pulumi__stack_output=partial))

    assert run.returncode == 1
    assert "missing: clusterRunnerImage kubeconfig" in run.line("FAIL  stack outputs")
    assert [call["tool"] for call in run.calls] == ["pulumi"]
