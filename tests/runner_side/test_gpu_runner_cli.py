"""`gpu-runner`'s command line: its help, usage errors (2), and the environment it needs (2, with the fix)."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time

import pytest

from fake_broker import FakeBroker, GpuFleet, gpu_runners_path
from gpu_runner_harness import LAUNCHER, ROOT, RUN_ATTEMPT, RUN_ID, TOKEN, environment, run

PACKAGE = ROOT / "runner_image" / "gpu_runner"
BROKER_VARIABLES = (
    "RUNNER_BROKER_URL",
    "RUNNER_BROKER_TOKEN_FILE",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GPU_RUNNER_POLL_SECONDS",
)


def test_help_names_every_command():
    result = run(["--help"], {})

    assert result.code == 0
    for command in ("start", "guard", "stop", "credential"):
        assert f"\n  {command}" in result.out
    assert "runs-on: gpu-runner-${{ github.run_id }}" in result.out


@pytest.mark.parametrize(
    "command, variables",
    [
        ("start", (*BROKER_VARIABLES, "GPU_RUNNER_TIMEOUT_SECONDS", "default 1200", "GITHUB_OUTPUT", "--count N")),
        (
            "guard",
            (
                *BROKER_VARIABLES,
                "GPU_RUNNER_TIMEOUT_SECONDS",
                "GITHUB_TOKEN",
                "permissions: actions: write",
                "GITHUB_REPOSITORY",
                "GITHUB_API_URL",
                "--job NAME",
                "default train",
            ),
        ),
        ("stop", BROKER_VARIABLES),
        (
            "credential",
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                "GCP_WORKLOAD_IDENTITY_PROVIDER",
                "GCP_SERVICE_ACCOUNT",
                "GCP_STS_URL",
                "GCP_IAM_CREDENTIALS_URL",
                "id-token: write",
            ),
        ),
    ],
)
def test_each_commands_help_describes_it_and_its_variables(command, variables):
    result = run([command, "--help"], {})

    assert result.code == 0
    for variable in variables:
        assert variable in result.out, variable


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], "the following arguments are required: command"),
        (["launch"], "invalid choice: 'launch'"),
        (["start", "--count", "0"], "argument --count: must be a whole number, at least 1, got '0'"),
        (["start", "--count", "two"], "argument --count: must be a whole number"),
        (["start", "extra"], "unrecognized arguments: extra"),
        (["guard", "--job"], "argument --job: expected one argument"),
    ],
)
def test_usage_errors_exit_2_with_a_useful_message(tmp_path, argv, words):
    with FakeBroker() as broker:
        result = run(argv, environment(tmp_path, broker.url))
        assert broker.requests == []

    assert result.code == 2
    assert words in result.err
    assert "Try `gpu-runner" in result.err


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"RUNNER_BROKER_URL": None}, "RUNNER_BROKER_URL is not set: gpu-runner runs in a job on a base runner"),
        ({"RUNNER_BROKER_URL": "runner-broker:80"}, "RUNNER_BROKER_URL must be the broker's http(s) URL"),
        ({"RUNNER_BROKER_URL": "ftp://broker"}, "RUNNER_BROKER_URL must be the broker's http(s) URL"),
        ({"RUNNER_BROKER_TOKEN_FILE": None}, "RUNNER_BROKER_TOKEN_FILE is not set"),
        (
            {"RUNNER_BROKER_TOKEN_FILE": "/nonexistent/token"},
            "cannot read RUNNER_BROKER_TOKEN_FILE (/nonexistent/token)",
        ),
        ({"RUNNER_BROKER_TOKEN_FILE": "/"}, "cannot read RUNNER_BROKER_TOKEN_FILE (/)"),
        ({"GITHUB_RUN_ID": None}, "GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT must be set (by GitHub Actions)"),
        ({"GITHUB_RUN_ATTEMPT": "x"}, "GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT must be set"),
        ({"GPU_RUNNER_TIMEOUT_SECONDS": "20m"}, "GPU_RUNNER_TIMEOUT_SECONDS must be a whole number of seconds"),
        ({"GPU_RUNNER_POLL_SECONDS": "0"}, "GPU_RUNNER_POLL_SECONDS must be seconds from 0 to 300"),
    ],
    ids=lambda value: "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None,
)
@pytest.mark.parametrize("command", ["start", "stop"])
def test_a_missing_or_bad_variable_exits_2_naming_it(tmp_path, command, changes, words):
    with FakeBroker() as broker:
        result = run([command], environment(tmp_path, broker.url, **changes))
        assert broker.requests == []

    assert result.code == 2
    assert words in result.errors()[0]


@pytest.mark.parametrize("content", ["", "\n", "two words"], ids=["empty", "newline", "spaces"])
def test_a_token_file_without_a_token_exits_2(tmp_path, content):
    (tmp_path / "broker-token").write_text(content)
    with FakeBroker() as broker:
        result = run(["start"], environment(tmp_path, broker.url))

    assert result.code == 2
    assert "holds no token" in result.errors()[0]


def test_the_installed_command_starts_a_runner_as_a_real_process(tmp_path):
    """The launcher as the image has it: its own python3, isolated, the packages beside it."""
    with FakeBroker(fleet=GpuFleet(gpus=1, token=TOKEN)) as broker:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            **environment(tmp_path, broker.url, GPU_RUNNER_POLL_SECONDS="0.01"),
        }
        done = subprocess.run(
            [str(LAUNCHER), "start"], check=False, env=env, capture_output=True, text=True, timeout=30
        )

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"::notice::the GPU runner is up: gpu-runner-{RUN_ID}-{RUN_ATTEMPT}" in done.stdout
    assert TOKEN not in done.stdout + done.stderr


def test_an_interrupted_command_exits_130_without_a_traceback(tmp_path):
    with FakeBroker(fleet=GpuFleet(gpus=1, token=TOKEN)) as broker:
        assert run(["start"], environment(tmp_path, broker.url, run_id="1", run_attempt="1")).code == 0
        env = {"PATH": os.environ["PATH"], **environment(tmp_path, broker.url, GPU_RUNNER_POLL_SECONDS="0.05")}
        process = subprocess.Popen(
            [str(LAUNCHER), "start"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        # A second look means the first answer (the GPU is held) has been read and said.
        while len(broker.requests_to(gpu_runners_path(RUN_ID, RUN_ATTEMPT))) < 2:
            assert process.poll() is None
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)

    assert process.returncode == 130, stdout + stderr
    assert "the GPU quota is in use by other runs (1 of 1)" in stdout
    assert "gpu-runner: interrupted" in stdout and "Traceback" not in stderr


# ------------------------------------------------------------- what it is made of --


def test_the_package_uses_the_standard_library_and_the_shared_names_only():
    allowed = set(sys.stdlib_module_names) | {"gpu_runner", "runner_contract"}
    for module in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            for name in names:
                assert name.split(".")[0] in allowed, f"{module.name} imports {name}"


def test_no_module_is_over_500_lines():
    for module in [*PACKAGE.glob("*.py"), LAUNCHER]:
        assert len(module.read_text().splitlines()) <= 500, module.name


def test_python_runs_it_as_a_module_too(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gpu_runner", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'runner_image'}{os.pathsep}{ROOT}"},
    )

    assert done.returncode == 0 and "usage: gpu-runner" in done.stdout
