"""examples/train-and-report.yml: the tutorial's DVC training and CML report on this run's GPU
runner, with keyless Google access. Audited, shaped right, and its shell steps run for real
against stub `dvc`, `cml`, `git`, `pip`, `npm` and `python` that record how they were called
(its gpu-runner steps run for real in test_workflows.py)."""

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_workflows import EXAMPLE, ROOT, SHA_PINNED_USES, load, summary, tool, zizmor

WORKFLOW = ROOT / "examples" / "train-and-report.yml"
TRAIN = "train-and-report"

# Every action the workflow uses, each at the commit of its release.
PINNED_ACTIONS = {
    "actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8",  # v5.0.0
    "actions/setup-python@e797f83bcb11b83ae66e0230d6156d7c80228e7c",  # v6.0.0
    "google-github-actions/auth@7c6bc770dae815cd3e89ee6cdf493a5fab2cc093",  # v3.0.0
    "actions/setup-node@2028fbc5c25fe9cf00d9f06a71cc4710d4507903",  # v6.0.0
}

TOKEN = "ghs_0123456789abcdefTESTtokenOFtheJOB"
HEAD_REF = "feature/better-model"
SERVER_URL = "https://github.com"


def jobs() -> dict:
    return load(WORKFLOW)["jobs"]


def steps(job: str = TRAIN) -> list[dict]:
    return jobs()[job]["steps"]


def step_named(prefix: str, job: str = TRAIN) -> dict:
    (step,) = [step for step in steps(job) if step["name"].startswith(prefix)]
    return step


def index_of(prefix: str) -> int:
    return steps().index(step_named(prefix))


def run_steps() -> list[tuple[str, str]]:
    return [(job, step["run"]) for job, body in jobs().items() for step in body["steps"] if "run" in step]


# --- zizmor ---------------------------------------------------------------------------


def test_zizmor_finds_nothing():
    assert summary(zizmor(WORKFLOW)) == []


def test_zizmor_auditor_persona_finds_nothing():
    assert summary(zizmor(WORKFLOW, "auditor")) == []


# --- pins, triggers, permissions -------------------------------------------------------


def test_every_action_is_pinned_to_a_commit_with_its_version():
    uses_lines = [line for line in WORKFLOW.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]

    assert [line for line in uses_lines if not SHA_PINNED_USES.match(line)] == []
    assert {step["uses"] for body in jobs().values() for step in body["steps"] if "uses" in step} == PINNED_ACTIONS


def test_the_checkout_keeps_no_credentials_and_comes_before_any_code_runs():
    checkouts = [
        (name, index, step)
        for name, body in jobs().items()
        for index, step in enumerate(body["steps"])
        if step.get("uses", "").startswith("actions/checkout@")
    ]

    assert [(name, index) for name, index, _ in checkouts] == [(TRAIN, 0)]
    ((_, _, checkout),) = checkouts
    assert checkout["with"]["persist-credentials"] is False
    # The pull request's own commit (so dvc.lock is committed on top of it), and main for the report.
    assert checkout["with"]["ref"] == "${{ github.event.pull_request.head.sha || github.sha }}"
    assert checkout["with"]["fetch-depth"] == 0


def test_triggers_never_give_fork_code_secrets():
    workflow = load(WORKFLOW)

    assert set(workflow["on"]) == {"pull_request", "workflow_dispatch"}
    assert "pull_request_target" not in WORKFLOW.read_text().replace("never pull_request_target", "")


def test_each_job_gets_only_the_permissions_it_needs():
    workflow = load(WORKFLOW)

    assert workflow["permissions"] == {}
    assert {name: job["permissions"] for name, job in workflow["jobs"].items()} == {
        "start-gpu-runner": {},
        "guard-gpu-runner": {"actions": "write"},
        TRAIN: {"contents": "write", "pull-requests": "write", "id-token": "write"},
        "stop-gpu-runner": {},
    }
    for name, job in workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"{name} has no timeout-minutes"


def test_every_granted_permission_says_why():
    lines = WORKFLOW.read_text().splitlines()
    grants = [line for line in lines if re.match(r"^\s+(contents|pull-requests|id-token|actions): write", line)]

    assert len(grants) == 4
    assert [line for line in grants if " # " not in line] == []


# --- Google access: keyless --------------------------------------------------------------


def all_keys(node) -> set:
    if isinstance(node, dict):
        return set(node) | {key for value in node.values() for key in all_keys(value)}
    if isinstance(node, list):
        return {key for value in node for key in all_keys(value)}
    return set()


def test_google_sign_in_is_direct_workload_identity_federation_without_a_key():
    text = WORKFLOW.read_text()
    auth = step_named("Sign in to Google Cloud")

    assert auth["uses"].startswith("google-github-actions/auth@")
    assert auth["with"] == {"workload_identity_provider": "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}"}
    assert not {"credentials_json", "service_account"} & all_keys(load(WORKFLOW))
    assert "credentials_json" not in text
    assert not re.search(r"\bservice_account\b", text)
    assert "GOOGLE_SERVICE_ACCOUNT_KEY" not in text
    assert re.findall(r"secrets\.(\w+)", text) == []


def test_google_credentials_come_after_the_dependencies_and_before_dvc():
    assert index_of("Install dependencies") < index_of("Sign in to Google Cloud") < index_of("Train the model")


def test_secrets_and_expressions_reach_scripts_only_through_env():
    for job, script in run_steps():
        assert "${{" not in script, job
        assert "secrets." not in script, job
    for body in jobs().values():
        for step in body["steps"]:
            assert "secrets." not in " ".join(str(value) for value in step.get("with", {}).values())
            assert not any("secrets." in value for value in step.get("env", {}).values())


# --- the GPU runner's jobs ----------------------------------------------------------------


def test_start_guard_and_stop_are_gpu_training_ymls():
    mine, theirs = jobs(), load(EXAMPLE)["jobs"]

    def but_the_job_guarded(guard: dict) -> dict:
        return {**guard, "steps": [{**guard["steps"][0], "run": None}]}

    assert mine["start-gpu-runner"] == theirs["start-gpu-runner"]
    assert but_the_job_guarded(mine["guard-gpu-runner"]) == but_the_job_guarded(theirs["guard-gpu-runner"])
    assert {**mine["stop-gpu-runner"], "needs": None} == {**theirs["stop-gpu-runner"], "needs": None}


def test_training_runs_on_this_runs_own_runner_and_stop_always_runs():
    start, guard, train, stop = (
        jobs()[name] for name in ("start-gpu-runner", "guard-gpu-runner", TRAIN, "stop-gpu-runner")
    )

    assert start["runs-on"] == guard["runs-on"] == stop["runs-on"] == "base-runner"
    assert train["runs-on"] == "gpu-runner-${{ github.run_id }}"
    assert train["needs"] == guard["needs"] == "start-gpu-runner"
    assert stop["needs"] == ["start-gpu-runner", TRAIN]
    assert stop["if"] == "always() && needs.start-gpu-runner.result != 'skipped'"
    assert "head.repo.full_name == github.repository" in start["if"]
    assert [step["run"] for step in (start["steps"][0], guard["steps"][0], stop["steps"][0])] == [
        "gpu-runner start",
        'gpu-runner guard --job "Train on the GPU and report"',
        "gpu-runner stop",
    ]
    assert train["name"] == "Train on the GPU and report"


def test_training_steps_come_in_the_tutorials_order():
    order = [step["name"] for step in steps()]

    assert order == [
        "Checkout repository",
        "Set up Python",
        "Install dependencies",
        "Check that TensorFlow sees the GPU",
        "Sign in to Google Cloud without a key",
        "Train the model",
        "Push the outcomes to the DVC remote",
        "Commit dvc.lock to the pull request's branch",
        "Set up Node.js",
        "Install CML",
        "Report to the pull request",
    ]
    python = step_named("Set up Python")["with"]
    assert python == {"python-version": "3.11", "cache": "pip", "cache-dependency-path": "requirements-freeze.txt"}


def test_dvc_lock_is_committed_only_to_a_pull_request_from_this_repository():
    commit = step_named("Commit dvc.lock")

    assert commit["if"] == (
        "github.event_name == 'pull_request' && github.event.pull_request.head.repo.full_name == github.repository"
    )
    assert commit["env"] == {"GITHUB_TOKEN": "${{ github.token }}", "HEAD_REF": "${{ github.head_ref }}"}
    assert step_named("Report to the pull request")["env"] == {"REPO_TOKEN": "${{ github.token }}"}
    for name in ("Set up Node.js", "Install CML", "Report to the pull request"):
        assert step_named(name)["if"] == "github.event_name == 'pull_request'"


# --- shellcheck ------------------------------------------------------------------------------


@pytest.mark.parametrize("job, script", run_steps(), ids=lambda value: value.splitlines()[0][:40])
def test_each_script_passes_shellcheck(job, script):
    result = subprocess.run(
        [tool("shellcheck"), "-S", "style", "--shell=bash", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


# --- the training job's scripts, for real -------------------------------------------------

# One program stands in for dvc, cml, git, pip and npm: it records its argv and environment,
# and answers what the scripts read back.
STUB = r"""#!{python}
import json, os, sys
from pathlib import Path

name = Path(sys.argv[0]).name
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({"argv": [name, *args], "env": dict(os.environ)}) + "\n")

words = [arg for index, arg in enumerate(args)
         if not arg.startswith("-") and not (index and args[index - 1] == "-c")]
if name == "git" and words[:1] == ["status"]:
    print(os.environ.get("STUB_GIT_STATUS", ""))
elif name == "git" and words[:1] == ["rev-parse"]:
    print("0123abc")
elif name == "git" and words[:1] == ["push"]:
    sys.exit(int(os.environ.get("STUB_PUSH_EXIT", "0")))
elif name == "dvc" and words[:2] == ["params", "diff"]:
    print("| Path | Param | main | workspace |\n|---|---|---|---|\n| params.yaml | train.lr | 0.01 | 0.02 |")
elif name == "dvc" and words[:2] == ["metrics", "diff"]:
    print("| Path | Metric | main | workspace | Change |\n|---|---|---|---|---|\n| m.json | acc | 0.8 | 0.9 | 0.1 |")
elif name == "dvc" and words[:2] == ["plots", "diff"]:
    static = Path("dvc_plots/static")
    static.mkdir(parents=True)
    for image in ("main_evaluation_plots_confusion.png", "workspace_evaluation_plots_confusion.png",
                  "workspace_evaluation_plots_new.png"):
        (static / image).write_bytes(b"png")
"""

STUBBED = ("dvc", "cml", "git", "pip", "npm", "python")

EXPRESSIONS = {
    "${{ github.token }}": TOKEN,
    "${{ github.head_ref }}": HEAD_REF,
}

PR_FROM_THIS_REPOSITORY = (
    "github.event_name == 'pull_request' && github.event.pull_request.head.repo.full_name == github.repository"
)
ON_THE_DEFAULT_BRANCH = "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)"
DEFAULT_BRANCH = "main"
# Each condition of the job, as GitHub would evaluate it for a run's (event, ref).
CONDITIONS = {
    None: lambda _run: True,
    PR_FROM_THIS_REPOSITORY: lambda run: run[0] == "pull_request",
    "github.event_name == 'pull_request'": lambda run: run[0] == "pull_request",
    ON_THE_DEFAULT_BRANCH: lambda run: run[1] == f"refs/heads/{DEFAULT_BRANCH}",
}


def evaluate(value: str) -> str:
    for expression, replacement in EXPRESSIONS.items():
        value = value.replace(expression, replacement)
    assert "${{" not in value, f"the harness does not know {value}"
    return value


def run_training_job(
    tmp_path: Path, event: str, ref: str | None = None, **stub_env: str
) -> tuple[list[dict], Path, list]:
    """Runs the training job's `run:` steps as GitHub does (bash -eo pipefail, the job's and the
    step's env), skipping the `uses:` steps; returns the stubs' records, the workspace and
    the failed step (name, output), if any. `ref` defaults to a pull request's merge ref, or main."""
    ref = ref or ("refs/pull/7/merge" if event == "pull_request" else f"refs/heads/{DEFAULT_BRANCH}")
    workspace, stubs = tmp_path / "workspace", tmp_path / "bin"
    workspace.mkdir()
    stubs.mkdir()
    for name in STUBBED:
        (stubs / name).write_text(STUB.replace("{python}", sys.executable))
        (stubs / name).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.touch()
    base = {
        "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_REF": ref,
        "GITHUB_SERVER_URL": SERVER_URL,
        "GITHUB_WORKSPACE": str(workspace),
        "STUB_LOG": str(log),
        **stub_env,
    }
    job = jobs()[TRAIN]
    job_env = {name: evaluate(value) for name, value in job.get("env", {}).items()}
    failed = []
    for index, step in enumerate(job["steps"]):
        if "run" not in step or not CONDITIONS[step.get("if")]((event, ref)):
            continue
        script = tmp_path / f"step-{index}.sh"
        script.write_text(step["run"])
        env = {**base, **job_env, **{name: evaluate(value) for name, value in step.get("env", {}).items()}}
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            failed = [step["name"], result.stdout + result.stderr]
            break
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return calls, workspace, failed


def commands(calls: list[dict]) -> list[str]:
    return [" ".join(call["argv"]) for call in calls]


TRAINING = [
    "pip install --requirement requirements-freeze.txt",
    "python -",
    "dvc repro --pull",
]
# Only from the default branch: the bucket takes objects from no other run.
PUSH = ["dvc push"]
COMMIT = [
    "git status --porcelain -- dvc.lock",
    "git add -- dvc.lock",
    "git -c core.hooksPath=/dev/null -c user.name=github-actions[bot] "
    "-c user.email=41898282+github-actions[bot]@users.noreply.github.com "
    "commit --message=Commit changes in dvc.lock -- dvc.lock",
    f"git -c core.hooksPath=/dev/null push origin HEAD:refs/heads/{HEAD_REF}",
]
REPORT = [
    "npm install --global --ignore-scripts --no-audit --no-fund @dvcorg/cml@0.20.6",
    "git branch --force main origin/main",
    "git rev-parse --short HEAD",
    "dvc params diff main --md",
    "dvc metrics diff main --md",
    "dvc plots diff main",
    "cml comment update --target=pr --publish report.md",
]


def assert_no_token_on_a_command_line(calls: list[dict]):
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    for call in calls:
        line = " ".join(call["argv"])
        assert TOKEN not in line and basic not in line, line


def test_a_pull_request_trains_commits_dvc_lock_and_reports_and_pushes_no_data(tmp_path):
    calls, workspace, failed = run_training_job(tmp_path, "pull_request", STUB_GIT_STATUS=" M dvc.lock")

    assert failed == []
    assert commands(calls) == TRAINING + COMMIT + REPORT
    assert_no_token_on_a_command_line(calls)


def test_the_token_reaches_only_the_push_and_cml_never_the_training(tmp_path):
    calls, _, _ = run_training_job(tmp_path, "pull_request", STUB_GIT_STATUS=" M dvc.lock")
    by_command = {" ".join(call["argv"]): call["env"] for call in calls}

    for command in TRAINING + REPORT[:1]:  # your code, your dependencies' and npm's: no token
        assert TOKEN not in json.dumps(by_command[command]), command
    push = by_command[COMMIT[-1]]
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert (push["GIT_CONFIG_COUNT"], push["GIT_CONFIG_KEY_0"], push["GIT_CONFIG_VALUE_0"]) == (
        "1",
        f"http.{SERVER_URL}/.extraheader",
        f"AUTHORIZATION: basic {basic}",
    )
    for command in COMMIT[:-1]:  # the header only for the push itself
        assert "GIT_CONFIG_VALUE_0" not in by_command[command], command
    assert by_command[REPORT[-1]]["REPO_TOKEN"] == TOKEN
    # No usage reports to the tools' vendors.
    assert {(env["DVC_NO_ANALYTICS"], env["ITERATIVE_DO_NOT_TRACK"]) for env in by_command.values()} == {("1", "1")}


def test_the_report_compares_params_metrics_and_plots_with_main(tmp_path):
    _, workspace, failed = run_training_job(tmp_path, "pull_request")
    report = (workspace / "report.md").read_text()

    assert failed == []
    assert report.startswith(
        "# Experiment report (0123abc)\n## Params: this pull request vs. main\n| Path | Param | main | workspace |"
    )
    assert "## Metrics: this pull request vs. main\n| Path | Metric |" in report
    assert report.endswith(
        "## Plots\n"
        "### evaluation_plots_confusion\n"
        "#### main\n"
        "![main](./dvc_plots/static/main_evaluation_plots_confusion.png)\n"
        "#### this pull request\n"
        "![this pull request](./dvc_plots/static/workspace_evaluation_plots_confusion.png)\n"
        "### evaluation_plots_new\n"
        "#### this pull request\n"
        "![this pull request](./dvc_plots/static/workspace_evaluation_plots_new.png)\n"
    )


def test_an_unchanged_dvc_lock_is_not_committed(tmp_path):
    calls, _, failed = run_training_job(tmp_path, "pull_request", STUB_GIT_STATUS="")

    assert failed == []
    assert commands(calls) == TRAINING + COMMIT[:1] + REPORT


def test_a_rejected_push_fails_the_job_and_says_why(tmp_path):
    calls, _, failed = run_training_job(tmp_path, "pull_request", STUB_GIT_STATUS=" M dvc.lock", STUB_PUSH_EXIT="1")

    assert commands(calls) == TRAINING + COMMIT
    assert failed[0] == "Commit dvc.lock to the pull request's branch"
    assert f"::error::could not push dvc.lock to {HEAD_REF}" in failed[1]
    assert TOKEN not in failed[1]


def test_a_manual_run_on_the_default_branch_trains_and_pushes_the_outcomes_only(tmp_path):
    calls, _, failed = run_training_job(tmp_path, "workflow_dispatch", STUB_GIT_STATUS=" M dvc.lock")

    assert failed == []
    assert commands(calls) == TRAINING + PUSH


def test_a_manual_run_on_another_branch_trains_and_pushes_nothing(tmp_path):
    calls, _, failed = run_training_job(tmp_path, "workflow_dispatch", "refs/heads/experiment")

    assert failed == []
    assert commands(calls) == TRAINING


def test_only_a_run_on_the_default_branch_pushes_to_the_dvc_remote():
    assert step_named("Push the outcomes to the DVC remote")["if"] == ON_THE_DEFAULT_BRANCH


def test_the_stub_harness_knows_every_condition_and_expression_of_the_job():
    """So the runs above skip no step by accident."""
    for step in steps():
        assert step.get("if") in CONDITIONS, step["name"]
        if "run" in step:
            for value in step.get("env", {}).values():
                evaluate(value)


def test_the_workflow_is_valid_yaml_with_unique_keys():
    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
        assert len(keys) == len(set(keys)), f"duplicate keys at line {node.start_mark.line + 1}"
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    yaml.load(WORKFLOW.read_text(), Loader=UniqueKeyLoader)


# --- TensorFlow sees the GPU, or the job fails ------------------------------------------

FAKE_TENSORFLOW = """
import os

class config:
    @staticmethod
    def list_physical_devices(kind):
        assert kind == "GPU"
        return [f"PhysicalDevice(name='/physical_device:GPU:{index}')" for index in range(int(os.environ["GPUS"]))]
"""


@pytest.mark.parametrize("gpus", [1, 0])
def test_the_gpu_check_fails_the_job_when_tensorflow_sees_no_gpu(tmp_path, gpus):
    """The step's own Python, with the real interpreter and a stand-in tensorflow that lists `gpus` GPUs."""
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    env = {
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(tmp_path),
        "GPUS": str(gpus),
    }
    done = subprocess.run(
        [
            "bash",
            "--noprofile",
            "--norc",
            "-eo",
            "pipefail",
            "-c",
            step_named("Check that TensorFlow sees the GPU")["run"],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    if gpus:
        assert done.returncode == 0, done.stderr
        assert "TensorFlow sees: [\"PhysicalDevice(name='/physical_device:GPU:0')\"]" in done.stdout
    else:
        assert done.returncode == 1
        assert 'TensorFlow sees no GPU: install "tensorflow[and-cuda]"' in done.stderr
