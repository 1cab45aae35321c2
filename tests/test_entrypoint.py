"""Behaviour of runner_image/startup.sh, run for real with bash against a fake GitHub.

config.sh and run.sh are stubs that record their argv and environment; curl and jq
are reached through shims that record theirs. Every run goes through
`Harness.check_no_leaks`, so each test also proves that no token reached a command
line, run.sh's environment or the script's output.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_github import FakeGitHub, Reply, runners_path

ROOT = Path(__file__).resolve().parent.parent
STARTUP = ROOT / "runner_image" / "startup.sh"

REPOSITORY = "acme-ml/models"
# Fake values: the PAT has a hyphen so no secret scanner takes it for a real one.
PAT = "ghp_fake-pat-for-entrypoint-tests"
OTHER_PAT = "ghp_fake-pat-that-must-lose-to-the-file"
REG_TOKEN = "FAKE-registration-token-0001"
REMOVE_TOKEN = "FAKE-removal-token-0002"
STALE_INPUT = "FAKE-inherited-runner-input-0003"
SECRETS = (PAT, OTHER_PAT, REG_TOKEN, REMOVE_TOKEN, STALE_INPUT)

REGISTRATION = runners_path(REPOSITORY, "registration-token")
REMOVAL = runners_path(REPOSITORY, "remove-token")

EXIT_CONFIG, EXIT_REFUSED, EXIT_GAVE_UP = 2, 3, 4

CONFIG_STUB = r"""#!/usr/bin/env bash
set -eu
here=$(cd "$(dirname "$0")" && pwd)
calls=$here/_calls
n=1
while [[ -e $calls/config-$n.argv ]]; do n=$((n + 1)); done
env -0 >"$calls/config-$n.env"
{ (($#)) && printf '%s\0' "$@"; } >"$calls/config-$n.tmp"
mv "$calls/config-$n.tmp" "$calls/config-$n.argv"
if [[ ${1:-} != remove && -f $here/config.delay ]]; then
  : >"$calls/config-$n.started"
  sleep "$(<"$here/config.delay")"
fi
exit "$(cat "$here/config.exit" 2>/dev/null || echo 0)"
"""

RUN_STUB = r"""#!/usr/bin/env bash
here=$(cd "$(dirname "$0")" && pwd)
calls=$here/_calls
{ (($#)) && printf '%s\0' "$@"; } >"$calls/run.argv"
env -0 >"$calls/run.env"
started() { date +%s.%N >"$calls/run.tmp"; mv "$calls/run.tmp" "$calls/run.started"; }
mode=$(<"$here/run.mode")
if [[ $mode == wait ]]; then
  trap 'echo "TERM $(date +%s.%N)" >"$calls/run.signal"; exit 0' TERM
  trap 'echo "INT $(date +%s.%N)" >"$calls/run.signal"; exit 0' INT
  started
  while :; do sleep 0.02; done
fi
started
exit "$mode"
"""

SHIM = r"""#!/usr/bin/env bash
{ (($#)) && printf '%s\0' "$@"; } >"@LOG@/@NAME@-$$.argv"
env -0 >"@LOG@/@NAME@-$$.env"
exec "@REAL@" "$@"
"""


def read_nul(path: Path) -> list[str]:
    data = path.read_bytes()
    return data.decode().split("\0")[:-1] if data else []


def read_env(path: Path) -> dict[str, str]:
    return dict(item.split("=", 1) for item in read_nul(path))


@dataclass
class Call:
    argv: list[str]
    env: dict[str, str]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Harness:
    """A temporary RUNNER_HOME with stubs, curl/jq shims, and the fake GitHub."""

    def __init__(self, tmp: Path, github: FakeGitHub) -> None:
        self.tmp = tmp
        self.github = github
        self.home = tmp / "actions-runner"
        self.calls_dir = self.home / "_calls"
        self.calls_dir.mkdir(parents=True)
        self.scratch = tmp / "scratch"
        self.scratch.mkdir()
        self.shim_log = tmp / "shim-log"
        self.shim_log.mkdir()
        shims = tmp / "shims"
        shims.mkdir()
        for name in ("curl", "jq"):
            real = shutil.which(name)
            assert real, f"{name} is needed to run startup.sh"
            shim = SHIM.replace("@LOG@", str(self.shim_log)).replace("@NAME@", name).replace("@REAL@", real)
            self._write(shims / name, shim)
        self._write(self.home / "config.sh", CONFIG_STUB)
        self._write(self.home / "run.sh", RUN_STUB)
        self.run_mode("0")
        self.env = {
            "PATH": f"{shims}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(tmp),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.scratch),
            "RUNNER_HOME": str(self.home),
            "RUNNER_REPOSITORY": REPOSITORY,
            "GITHUB_RUNNER_PAT": PAT,
            "RUNNER_NAME": "test-runner",
            "RUNNER_LABELS": "base-runner",
            "GITHUB_API_URL": github.url,
            "RUNNER_API_RETRIES": "2",
            "RUNNER_API_TIMEOUT_SECONDS": "2",
            "RUNNER_API_CONNECT_TIMEOUT_SECONDS": "1",
            "RUNNER_API_BACKOFF_SECONDS": "0",
            "RUNNER_API_BACKOFF_MAX_SECONDS": "3",
        }
        github.default(REGISTRATION, Reply(201, {"token": REG_TOKEN, "expires_at": "2030-01-01T00:00:00Z"}))
        github.default(REMOVAL, Reply(201, {"token": REMOVE_TOKEN, "expires_at": "2030-01-01T00:00:00Z"}))

    @staticmethod
    def _write(path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o755)

    # -------------------------------------------------------------- set up --

    def run_mode(self, mode: str) -> None:
        """`wait` (run.sh sleeps until signalled) or an exit status run.sh returns at once."""
        (self.home / "run.mode").write_text(mode)

    def config_delay(self, seconds: float) -> None:
        (self.home / "config.delay").write_text(str(seconds))

    def environment(self, **changes: str | None) -> dict[str, str]:
        env = dict(self.env)
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    # ----------------------------------------------------------------- run --

    def run(self, timeout: float = 15, **changes: str | None) -> Result:
        started = time.monotonic()
        done = subprocess.run(["bash", str(STARTUP)], env=self.environment(**changes), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        result = Result(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        self.check_no_leaks(result)
        return result

    def start(self, **changes: str | None) -> subprocess.Popen:
        return subprocess.Popen(["bash", str(STARTUP)], env=self.environment(**changes), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def finish(self, process: subprocess.Popen, started: float, timeout: float = 15) -> Result:
        stdout, stderr = process.communicate(timeout=timeout)
        result = Result(process.returncode, stdout, stderr, time.monotonic() - started)
        self.check_no_leaks(result)
        return result

    def wait_for(self, condition, what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def wait_until_running(self, process: subprocess.Popen) -> None:
        def ready() -> bool:
            assert process.poll() is None, f"startup.sh ended early: {process.communicate()}"
            return (self.calls_dir / "run.started").exists()

        self.wait_for(ready, "run.sh to start")

    # -------------------------------------------------------------- records --

    def config_calls(self) -> list[Call]:
        calls, n = [], 1
        while (self.calls_dir / f"config-{n}.argv").exists():
            calls.append(Call(read_nul(self.calls_dir / f"config-{n}.argv"),
                              read_env(self.calls_dir / f"config-{n}.env")))
            n += 1
        return calls

    def run_call(self) -> Call | None:
        if not (self.calls_dir / "run.argv").exists():
            return None
        return Call(read_nul(self.calls_dir / "run.argv"), read_env(self.calls_dir / "run.env"))

    def run_started_at(self) -> float:
        return float((self.calls_dir / "run.started").read_text())

    def run_signal(self) -> tuple[str, float] | None:
        """The signal run.sh got, and when (time.time())."""
        path = self.calls_dir / "run.signal"
        if not path.exists():
            return None
        name, at = path.read_text().split()
        return name, float(at)

    def shim_calls(self) -> list[Call]:
        return [Call(read_nul(argv), read_env(argv.with_suffix(".env")))
                for argv in sorted(self.shim_log.glob("*.argv"))]

    # --------------------------------------------------------------- checks --

    def check_no_leaks(self, result: Result) -> None:
        """No token on any command line, in run.sh's or curl's environment, in the output,
        or left on disk; config.sh sees only the one token meant for it."""
        for secret in SECRETS:
            assert secret not in result.output, "a token was printed"
        for call in self.shim_calls():
            for secret in SECRETS:
                assert not any(secret in arg for arg in call.argv), f"a token on the command line of {call.argv[:3]}"
                assert not any(secret in f"{k}={v}" for k, v in call.env.items()), "a token in curl's or jq's env"
        run = self.run_call()
        if run is not None:
            for secret in SECRETS:
                assert not any(secret in arg for arg in run.argv), "a token on run.sh's command line"
                assert not any(secret in f"{k}={v}" for k, v in run.env.items()), "a token in run.sh's environment"
            assert not any(k.upper().startswith("ACTIONS_RUNNER_INPUT_") for k in run.env)
        for call in self.config_calls():
            for secret in SECRETS:
                assert not any(secret in arg for arg in call.argv), "a token on config.sh's command line"
            meant = REMOVE_TOKEN if call.argv[:1] == ["remove"] else REG_TOKEN
            assert call.env.get("ACTIONS_RUNNER_INPUT_TOKEN") == meant
            others = {k: v for k, v in call.env.items() if k != "ACTIONS_RUNNER_INPUT_TOKEN"}
            for secret in SECRETS:
                assert not any(secret in f"{k}={v}" for k, v in others.items()), "a stray token in config.sh's env"
        assert not list(self.scratch.iterdir()), "startup.sh left files (answers with tokens) behind"


@pytest.fixture
def github():
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def harness(tmp_path: Path, github: FakeGitHub) -> Harness:
    return Harness(tmp_path, github)


def expected_config_argv(*, name: str = "test-runner", labels: str = "base-runner",
                         server: str = "https://github.com", ephemeral: bool = False) -> list[str]:
    argv = ["--unattended", "--url", f"{server}/{REPOSITORY}", "--name", name, "--labels", labels,
            "--work", "_work", "--replace"]
    return argv + ["--ephemeral"] if ephemeral else argv


# --------------------------------------------------------------- happy path --


def test_happy_path_registers_with_token_in_env_only_and_starts_runner(harness: Harness, github: FakeGitHub):
    result = harness.run()

    assert result.returncode == 0, result.output
    [request] = github.requests
    assert (request.method, request.path) == ("POST", REGISTRATION)
    assert request.headers["authorization"] == f"Bearer {PAT}"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    [config] = harness.config_calls()
    assert config.argv == expected_config_argv()
    assert config.env["ACTIONS_RUNNER_INPUT_TOKEN"] == REG_TOKEN
    assert REG_TOKEN not in config.argv
    run = harness.run_call()
    assert run is not None and run.argv == []
    assert "GITHUB_RUNNER_PAT" not in run.env and "GITHUB_RUNNER_PAT" not in config.env
    assert run.env["RUNNER_MANUALLY_TRAP_SIG"] == "1"
    assert not github.requests_to(REMOVAL)


def test_curl_gets_the_pat_on_stdin_not_argv(harness: Harness):
    harness.run()

    curl_calls = [c for c in harness.shim_calls() if c.argv[:2] == ["--config", "-"]]
    assert len(curl_calls) == 1
    assert not any("Authorization" in arg for arg in curl_calls[0].argv)


def test_run_sh_exit_status_is_passed_on(harness: Harness, github: FakeGitHub):
    harness.run_mode("5")

    result = harness.run()

    assert result.returncode == 5
    assert not github.requests_to(REMOVAL)


# ------------------------------------------------------------- PAT sources --


def test_pat_is_read_from_runner_token_file(harness: Harness, github: FakeGitHub, tmp_path: Path):
    token_file = tmp_path / "pat"
    token_file.write_text(f"{PAT}\n")

    result = harness.run(RUNNER_TOKEN_FILE=str(token_file), GITHUB_RUNNER_PAT=None)

    assert result.returncode == 0, result.output
    assert github.requests[0].headers["authorization"] == f"Bearer {PAT}"


def test_token_file_wins_over_github_runner_pat(harness: Harness, github: FakeGitHub, tmp_path: Path):
    token_file = tmp_path / "pat"
    token_file.write_text(PAT)

    result = harness.run(RUNNER_TOKEN_FILE=str(token_file), GITHUB_RUNNER_PAT=OTHER_PAT)

    assert result.returncode == 0, result.output
    assert github.requests[0].headers["authorization"] == f"Bearer {PAT}"
    assert "GITHUB_RUNNER_PAT" not in harness.run_call().env


def test_pat_is_read_from_github_runner_pat(harness: Harness, github: FakeGitHub):
    result = harness.run(GITHUB_RUNNER_PAT=f"  {PAT}\n")

    assert result.returncode == 0, result.output
    assert github.requests[0].headers["authorization"] == f"Bearer {PAT}"
    assert "GITHUB_RUNNER_PAT" not in harness.config_calls()[0].env
    assert "GITHUB_RUNNER_PAT" not in harness.run_call().env


def test_inherited_runner_inputs_are_dropped(harness: Harness):
    result = harness.run(ACTIONS_RUNNER_INPUT_TOKEN=STALE_INPUT, ACTIONS_RUNNER_INPUT_NAME="other")

    assert result.returncode == 0, result.output
    [config] = harness.config_calls()
    assert config.env["ACTIONS_RUNNER_INPUT_TOKEN"] == REG_TOKEN
    assert "ACTIONS_RUNNER_INPUT_NAME" not in config.env


# ------------------------------------------------------ labels, name, flags --


def test_github_runner_label_is_used_when_runner_labels_is_unset(harness: Harness):
    result = harness.run(RUNNER_LABELS=None, GITHUB_RUNNER_LABEL="gpu-runner,gpu-runner-42")

    assert result.returncode == 0, result.output
    assert harness.config_calls()[0].argv == expected_config_argv(labels="gpu-runner,gpu-runner-42")


def test_runner_labels_wins_over_github_runner_label(harness: Harness):
    result = harness.run(RUNNER_LABELS="base-runner", GITHUB_RUNNER_LABEL="gpu-runner")

    assert result.returncode == 0, result.output
    assert harness.config_calls()[0].argv == expected_config_argv(labels="base-runner")


def test_defaults_are_self_hosted_label_host_name_and_github_com(harness: Harness, github: FakeGitHub):
    result = harness.run(RUNNER_LABELS=None, RUNNER_NAME=None, RUNNER_EPHEMERAL=None)

    assert result.returncode == 0, result.output
    assert harness.config_calls()[0].argv == expected_config_argv(name=socket.gethostname(), labels="self-hosted")


def test_github_server_url_sets_the_registration_url(harness: Harness):
    result = harness.run(GITHUB_SERVER_URL="https://ghe.example.test/")

    assert result.returncode == 0, result.output
    assert harness.config_calls()[0].argv == expected_config_argv(server="https://ghe.example.test")


def test_ephemeral_runner_exits_with_run_sh_status_without_removal(harness: Harness, github: FakeGitHub):
    harness.run_mode("7")

    result = harness.run(RUNNER_EPHEMERAL="true")

    assert result.returncode == 7
    assert harness.config_calls()[0].argv == expected_config_argv(ephemeral=True)
    assert len(harness.config_calls()) == 1
    assert [r.path for r in github.requests] == [REGISTRATION]


# ---------------------------------------------------------- refused requests --


@pytest.mark.parametrize(("status", "meaning"), [
    (401, "invalid, expired or revoked"),
    (403, "lacks the permission"),
    (404, "does not exist or the PAT cannot see it"),
])
def test_refused_request_ends_at_once_without_retry(harness: Harness, github: FakeGitHub, status: int, meaning: str):
    github.script(REGISTRATION, Reply(status, {"message": "nope"}))

    result = harness.run()

    assert result.returncode == EXIT_REFUSED
    assert len(github.requests) == 1
    assert f"HTTP {status}" in result.stderr and meaning in result.stderr
    assert harness.config_calls() == [] and harness.run_call() is None


@pytest.mark.parametrize("body", [{}, {"token": None}, {"token": ""}, {"token": "null"}, "not json", None],
                         ids=["no-token", "token-null", "token-empty", "token-null-text", "not-json", "no-body"])
def test_answer_without_token_ends_at_once(harness: Harness, github: FakeGitHub, body):
    github.script(REGISTRATION, Reply(201, body))

    result = harness.run()

    assert result.returncode == EXIT_REFUSED
    assert len(github.requests) == 1
    assert "without a token" in result.stderr
    assert harness.config_calls() == []


# ------------------------------------------------------------------ retries --


def test_server_error_is_retried_then_succeeds(harness: Harness, github: FakeGitHub):
    github.script(REGISTRATION, Reply(500, {"message": "boom"}), Reply(502))

    result = harness.run()

    assert result.returncode == 0, result.output
    assert [r.path for r in github.requests] == [REGISTRATION] * 3
    assert harness.config_calls()[0].env["ACTIONS_RUNNER_INPUT_TOKEN"] == REG_TOKEN


def test_rate_limit_waits_for_retry_after(harness: Harness, github: FakeGitHub):
    github.script(REGISTRATION, Reply(429, {"message": "slow down"}, headers={"Retry-After": "1"}))

    result = harness.run()

    assert result.returncode == 0, result.output
    first, second = github.requests
    assert second.at - first.at >= 0.95
    assert "HTTP 429" in result.output


def test_backoff_doubles_between_attempts(harness: Harness, github: FakeGitHub):
    github.script(REGISTRATION, Reply(503), Reply(503))

    result = harness.run(RUNNER_API_BACKOFF_SECONDS="0.2")

    assert result.returncode == 0, result.output
    times = [r.at for r in github.requests]
    assert len(times) == 3
    first, second = times[1] - times[0], times[2] - times[1]
    assert 0.19 <= first < 0.45 and 0.39 <= second < 0.65
    assert second - first >= 0.15


def test_backoff_is_capped(harness: Harness, github: FakeGitHub):
    github.script(REGISTRATION, Reply(503), Reply(503, headers={"Retry-After": "60"}))

    result = harness.run(RUNNER_API_BACKOFF_SECONDS="0.3", RUNNER_API_BACKOFF_MAX_SECONDS="0.2")

    assert result.returncode == 0, result.output
    times = [r.at for r in github.requests]
    assert len(times) == 3
    assert times[2] - times[0] < 0.6


def test_persistent_server_errors_give_up_after_the_retries(harness: Harness, github: FakeGitHub):
    github.default(REGISTRATION, Reply(500))

    result = harness.run()

    assert result.returncode == EXIT_GAVE_UP
    assert len(github.requests) == 3  # RUNNER_API_RETRIES=2
    assert "gave up after 3 attempts" in result.stderr
    assert harness.config_calls() == []


def test_hanging_server_times_out_and_gives_up_in_bounded_time(harness: Harness, github: FakeGitHub):
    github.default(REGISTRATION, Reply(201, {"token": REG_TOKEN}, delay=30))

    result = harness.run(RUNNER_API_TIMEOUT_SECONDS="0.5")

    assert result.returncode == EXIT_GAVE_UP
    assert len(github.requests) == 3
    assert "timed out" in result.stderr and "gave up" in result.stderr
    assert result.elapsed < 5
    assert harness.config_calls() == []


def test_unreachable_api_is_retried_then_gives_up(harness: Harness, github: FakeGitHub):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    result = harness.run(GITHUB_API_URL=f"http://127.0.0.1:{closed_port}")

    assert result.returncode == EXIT_GAVE_UP
    assert "gave up after 3 attempts" in result.stderr
    assert harness.config_calls() == []


# ------------------------------------------------------- invalid variables --


@pytest.mark.parametrize(("changes", "variable"), [
    ({"RUNNER_REPOSITORY": None}, "RUNNER_REPOSITORY"),
    ({"RUNNER_REPOSITORY": "acme-ml"}, "RUNNER_REPOSITORY"),
    ({"RUNNER_REPOSITORY": "acme-ml/models/extra"}, "RUNNER_REPOSITORY"),
    ({"RUNNER_REPOSITORY": "acme-ml/.."}, "RUNNER_REPOSITORY"),
    ({"RUNNER_REPOSITORY": "acme ml/models"}, "RUNNER_REPOSITORY"),
    ({"GITHUB_RUNNER_PAT": None}, "RUNNER_TOKEN_FILE"),
    ({"GITHUB_RUNNER_PAT": "   "}, "GITHUB_RUNNER_PAT"),
    ({"RUNNER_TOKEN_FILE": "/nonexistent/pat"}, "RUNNER_TOKEN_FILE"),
    ({"RUNNER_EPHEMERAL": "maybe"}, "RUNNER_EPHEMERAL"),
    ({"GITHUB_API_URL": "ftp://example.test"}, "GITHUB_API_URL"),
    ({"RUNNER_API_RETRIES": "many"}, "RUNNER_API_RETRIES"),
    ({"RUNNER_API_TIMEOUT_SECONDS": "0"}, "RUNNER_API_TIMEOUT_SECONDS"),
    ({"RUNNER_API_BACKOFF_SECONDS": "-1"}, "RUNNER_API_BACKOFF_SECONDS"),
    ({"RUNNER_API_BACKOFF_MAX_SECONDS": "7200"}, "RUNNER_API_BACKOFF_MAX_SECONDS"),
], ids=lambda v: str(v) if isinstance(v, str) else "-".join(f"{k}={v}" for k, v in v.items()))
def test_invalid_variable_ends_at_once_naming_it(harness: Harness, github: FakeGitHub, changes, variable):
    result = harness.run(**changes)

    assert result.returncode == EXIT_CONFIG
    assert variable in result.stderr
    assert github.requests == []
    assert harness.config_calls() == []


def test_empty_token_file_ends_at_once_naming_it(harness: Harness, github: FakeGitHub, tmp_path: Path):
    token_file = tmp_path / "pat"
    token_file.write_text("\n")

    result = harness.run(RUNNER_TOKEN_FILE=str(token_file))

    assert result.returncode == EXIT_CONFIG
    assert "RUNNER_TOKEN_FILE" in result.stderr and "empty" in result.stderr
    assert github.requests == []


def test_runner_home_without_the_runner_ends_at_once_naming_it(harness: Harness, github: FakeGitHub,
                                                               tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()

    result = harness.run(RUNNER_HOME=str(empty))

    assert result.returncode == EXIT_CONFIG
    assert "RUNNER_HOME" in result.stderr and "config.sh" in result.stderr
    assert github.requests == []


# ------------------------------------------------------------------ signals --


@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGTERM, 143, "TERM"), (signal.SIGINT, 130, "INT")])
def test_signal_deregisters_once_with_a_fresh_removal_token(harness: Harness, github: FakeGitHub, sig, code, name):
    harness.run_mode("wait")
    process = harness.start()
    harness.wait_until_running(process)

    signalled = time.monotonic()
    process.send_signal(sig)
    result = harness.finish(process, signalled)

    assert result.returncode == code, result.output
    assert [r.path for r in github.requests] == [REGISTRATION, REMOVAL]
    removal = github.requests_to(REMOVAL)[0]
    assert removal.method == "POST" and removal.headers["authorization"] == f"Bearer {PAT}"
    register, remove = harness.config_calls()
    assert remove.argv == ["remove", "--unattended"]
    assert remove.env["ACTIONS_RUNNER_INPUT_TOKEN"] == REMOVE_TOKEN != REG_TOKEN
    got, at = harness.run_signal()
    assert got == name and at <= removal.wall, "run.sh must be told, and have ended, before the removal"


def test_second_sigterm_while_deregistering_does_not_remove_twice(harness: Harness, github: FakeGitHub):
    github.script(REMOVAL, Reply(201, {"token": REMOVE_TOKEN}, delay=0.6))
    harness.run_mode("wait")
    process = harness.start()
    harness.wait_until_running(process)

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    harness.wait_for(lambda: github.requests_to(REMOVAL), "the removal token request")
    process.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    result = harness.finish(process, signalled)

    assert result.returncode == 143, result.output
    assert len(github.requests_to(REMOVAL)) == 1
    assert [c.argv[0] for c in harness.config_calls()] == ["--unattended", "remove"]


def test_signals_sent_back_to_back_remove_once(harness: Harness, github: FakeGitHub):
    harness.run_mode("wait")
    process = harness.start()
    harness.wait_until_running(process)

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    result = harness.finish(process, signalled)

    assert result.returncode == 143, result.output
    assert len(github.requests_to(REMOVAL)) == 1
    assert len(harness.config_calls()) == 2


def test_signal_before_registration_exits_without_removal(harness: Harness, github: FakeGitHub):
    github.script(REGISTRATION, Reply(201, {"token": REG_TOKEN}, delay=10))
    process = harness.start(RUNNER_API_TIMEOUT_SECONDS="20")
    harness.wait_for(lambda: github.requests, "the registration request")

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    result = harness.finish(process, signalled)

    assert result.returncode == 143
    assert result.elapsed < 2
    assert [r.path for r in github.requests] == [REGISTRATION]
    assert harness.config_calls() == [] and harness.run_call() is None


def test_signal_during_backoff_exits_at_once(harness: Harness, github: FakeGitHub):
    github.script(REGISTRATION, Reply(503))
    process = harness.start(RUNNER_API_BACKOFF_SECONDS="30", RUNNER_API_BACKOFF_MAX_SECONDS="30")
    harness.wait_for(lambda: github.requests, "the first registration request")
    time.sleep(0.2)

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    result = harness.finish(process, signalled)

    assert result.returncode == 143
    assert result.elapsed < 2
    assert len(github.requests) == 1


def test_signal_during_config_waits_for_it_then_deregisters(harness: Harness, github: FakeGitHub):
    harness.config_delay(0.5)
    harness.run_mode("wait")
    process = harness.start()
    harness.wait_for(lambda: (harness.calls_dir / "config-1.started").exists(), "config.sh to start")

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    result = harness.finish(process, signalled)

    assert result.returncode == 143, result.output
    assert harness.run_call() is None
    assert [r.path for r in github.requests] == [REGISTRATION, REMOVAL]
    assert [c.argv[0] for c in harness.config_calls()] == ["--unattended", "remove"]


def test_failed_removal_token_still_exits_143_without_config_remove(harness: Harness, github: FakeGitHub):
    github.script(REMOVAL, Reply(401, {"message": "Bad credentials"}))
    harness.run_mode("wait")
    process = harness.start()
    harness.wait_until_running(process)

    process.send_signal(signal.SIGTERM)
    result = harness.finish(process, time.monotonic())

    assert result.returncode == 143
    assert "HTTP 401" in result.stderr and "stays registered" in result.stderr
    assert len(harness.config_calls()) == 1
