"""Behaviour of runner_image/startup.sh, run for real with bash, curl and jq against a fake broker.

run.sh is a stub that records its argv, its environment and the signals it gets; curl,
jq and env are reached through shims that record theirs. Every run goes through
`Harness.check_no_leaks`, so each test also proves that neither the pod's token nor the
JIT config reached a command line or the output, and that run.sh got the JIT config
through ACTIONS_RUNNER_INPUT_JITCONFIG alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_broker import FINISHED, JITCONFIG, FakeBroker, Reply

ROOT = Path(__file__).resolve().parent.parent
STARTUP = ROOT / "runner_image" / "startup.sh"

# Fake values, shaped so that no secret scanner takes them for real ones.
TOKEN = "fake-projected-token.for-entrypoint-tests.0001"
ROTATED_TOKEN = "fake-projected-token.after-rotation.0002"
JIT_CONFIG = "RkFLRS1qaXQtY29uZmlnLWZvci1lbnRyeXBvaW50LXRlc3Rz"
STALE_INPUT = "FAKE-inherited-runner-input-0003"
SECRETS = (TOKEN, ROTATED_TOKEN, JIT_CONFIG, STALE_INPUT)

RUNNER_NAME = "base-runner-7d9f8-x2x4q"
GRANTED = Reply(201, {"name": RUNNER_NAME, "labels": ["base-runner"], "encodedJitConfig": JIT_CONFIG})

EXIT_CONFIG, EXIT_REFUSED, EXIT_GAVE_UP, EXIT_FOREIGN_JOB = 2, 3, 4, 5
HOOK = ROOT / "runner_image" / "job-started.sh"

# run.mode: `wait` (until a signal), `slow-stop` (as wait, but take 0.5 s to stop),
# `hook:<run id>` (take one job of that run: run the job-started hook as the runner
# does, then end with 0 whatever the job's fate), or the status to exit with at once.
RUN_STUB = r"""#!/usr/bin/env bash
here=$(cd "$(dirname "$0")" && pwd)
calls=$here/_calls
{ (($#)) && printf '%s\0' "$@"; } >"$calls/run.argv"
env -0 >"$calls/run.env"
mode=$(<"$here/run.mode")
stop_after=0
[[ $mode != slow-stop ]] || stop_after=0.5
got() { echo "$1 $(date +%s.%N)" >>"$calls/run.signals"; sleep "$stop_after"; exit 0; }
trap 'got TERM' TERM
trap 'got INT' INT
date +%s.%N >"$calls/run.tmp" && mv "$calls/run.tmp" "$calls/run.started"
if [[ $mode == hook:* ]]; then
  GITHUB_RUN_ID=${mode#hook:} bash -e "$ACTIONS_RUNNER_HOOK_JOB_STARTED" >"$calls/hook.out" 2>&1
  echo "$?" >"$calls/hook.status"
  exit 0
fi
[[ $mode == wait || $mode == slow-stop ]] || exit "$mode"
while :; do sleep 0.02; done
"""

SHIM = r"""#!/usr/bin/env bash
{ (($#)) && printf '%s\0' "$@"; } >"@LOG@/@NAME@-$$.argv"
"@ENV@" -0 >"@LOG@/@NAME@-$$.env"
exec "@REAL@" "$@"
"""


def read_nul(path: Path) -> list[str]:
    data = path.read_bytes()
    return data.decode().split("\0")[:-1] if data else []


def read_env(path: Path) -> dict[str, str]:
    return dict(item.split("=", 1) for item in read_nul(path))


@dataclass
class Call:
    name: str
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
    """A temporary RUNNER_HOME with a stub run.sh, a token file, curl/jq/env shims, and the fake broker."""

    def __init__(self, tmp: Path, broker: FakeBroker) -> None:
        self.tmp = tmp
        self.broker = broker
        self.home = tmp / "actions-runner"
        self.calls_dir = self.home / "_calls"
        self.calls_dir.mkdir(parents=True)
        self.scratch = tmp / "scratch"
        self.scratch.mkdir()
        self.shim_log = tmp / "shim-log"
        self.shim_log.mkdir()
        self.token_file = tmp / "token"
        self.token_file.write_text(TOKEN)
        shims = tmp / "shims"
        shims.mkdir()
        real_env = shutil.which("env")
        for name in ("curl", "jq", "env"):
            real = shutil.which(name)
            assert real and real_env, f"{name} is needed to run startup.sh"
            text = SHIM.replace("@LOG@", str(self.shim_log)).replace("@NAME@", name)
            self._write(shims / name, text.replace("@ENV@", real_env).replace("@REAL@", real))
        self._write(self.home / "run.sh", RUN_STUB)
        self.run_mode("0")
        self.env = {
            "PATH": f"{shims}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(tmp),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.scratch),
            "RUNNER_HOME": str(self.home),
            "RUNNER_BROKER_URL": broker.url,
            "RUNNER_BROKER_TOKEN_FILE": str(self.token_file),
            "RUNNER_BROKER_RETRIES": "2",
            "RUNNER_BROKER_BACKOFF_SECONDS": "0",
            "RUNNER_BROKER_TIMEOUT_SECONDS": "5",
        }
        broker.default(JITCONFIG, GRANTED)
        broker.default(FINISHED, Reply(200, {}))
        self._output: tuple[Path, Path] | None = None

    @staticmethod
    def _write(path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o755)

    # --------------------------------------------------------------- set up --

    def run_mode(self, mode: str) -> None:
        """`wait` or `slow-stop` (run.sh runs until signalled), or an exit status run.sh returns at once."""
        (self.home / "run.mode").write_text(mode)

    def record_sleeps(self) -> None:
        """Put a `sleep` first on PATH that only notes how long it was asked to sleep (see `sleeps`)."""
        shims = self.tmp / "sleep-shim"
        shims.mkdir()
        self._write(shims / "sleep", f'#!/usr/bin/env bash\necho "$*" >>"{self.tmp}/sleeps"\n')
        self.env["PATH"] = f"{shims}:{self.env['PATH']}"

    def sleeps(self) -> list[str]:
        path = self.tmp / "sleeps"
        return path.read_text().split() if path.exists() else []

    def environment(self, **changes: str | None) -> dict[str, str]:
        env = dict(self.env)
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    # ------------------------------------------------------------------ run --

    def run(self, timeout: float = 15, **changes: str | None) -> Result:
        """Runs startup.sh to its end."""
        started = time.monotonic()
        done = subprocess.run(
            ["bash", str(STARTUP)],
            env=self.environment(**changes),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        result = Result(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        self.check_no_leaks(result)
        return result

    def start(self, **changes: str | None) -> subprocess.Popen:
        """Starts startup.sh in the background; its output goes to files `output_so_far` reads."""
        self._output = (self.tmp / "stdout", self.tmp / "stderr")
        with self._output[0].open("w") as stdout, self._output[1].open("w") as stderr:
            return subprocess.Popen(
                ["bash", str(STARTUP)],
                env=self.environment(**changes),
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )

    def output_so_far(self) -> str:
        assert self._output is not None
        return "".join(path.read_text() for path in self._output)

    def finish(self, process: subprocess.Popen, started: float, timeout: float = 15) -> Result:
        """Waits for a started startup.sh; `elapsed` counts from `started` (time.monotonic())."""
        process.wait(timeout=timeout)
        assert self._output is not None
        stdout, stderr = (path.read_text() for path in self._output)
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
            assert process.poll() is None, f"startup.sh ended early: {self.output_so_far()}"
            return (self.calls_dir / "run.started").exists()

        self.wait_for(ready, "run.sh to start")

    # -------------------------------------------------------------- records --

    def run_call(self) -> Call | None:
        if not (self.calls_dir / "run.argv").exists():
            return None
        return Call("run.sh", read_nul(self.calls_dir / "run.argv"), read_env(self.calls_dir / "run.env"))

    def run_started_at(self) -> float:
        """When run.sh started (time.time())."""
        return float((self.calls_dir / "run.started").read_text())

    def run_signals(self) -> list[tuple[str, float]]:
        """The signals run.sh got, and when (time.time())."""
        path = self.calls_dir / "run.signals"
        if not path.exists():
            return []
        return [(name, float(at)) for name, at in (line.split() for line in path.read_text().splitlines())]

    def shim_calls(self, name: str | None = None) -> list[Call]:
        calls = [
            Call(argv.name.split("-", 1)[0], read_nul(argv), read_env(argv.with_suffix(".env")))
            for argv in sorted(self.shim_log.glob("*.argv"))
        ]
        return [c for c in calls if name is None or c.name == name]

    # --------------------------------------------------------------- checks --

    def check_no_leaks(self, result: Result) -> None:
        """Neither token nor JIT config in the output, on a command line, or in an environment but
        run.sh's (and there only as ACTIONS_RUNNER_INPUT_JITCONFIG); nothing left on disk."""
        for secret in SECRETS:
            assert secret not in result.output, "a secret was printed"
        for call in self.shim_calls():
            for secret in SECRETS:
                assert not any(secret in arg for arg in call.argv), f"a secret on the command line of {call.name}"
            if call.name != "env":  # env is how run.sh gets the JIT config; it holds no token (checked in run.sh)
                assert not any(secret in value for value in call.env.values()), f"a secret in {call.name}'s env"
        run = self.run_call()
        if run is not None:
            for secret in SECRETS:
                assert not any(secret in arg for arg in run.argv), "a secret on run.sh's command line"
            inputs = {k: v for k, v in run.env.items() if k.upper().startswith("ACTIONS_RUNNER_INPUT_")}
            assert inputs == {"ACTIONS_RUNNER_INPUT_JITCONFIG": JIT_CONFIG}
            for secret in (TOKEN, ROTATED_TOKEN, STALE_INPUT):
                assert not any(secret in value for value in run.env.values()), "a token in run.sh's environment"
        assert not list(self.scratch.iterdir()), "startup.sh left files (answers, JIT config) behind"


@pytest.fixture
def broker():
    with FakeBroker() as fake:
        yield fake


@pytest.fixture
def harness(tmp_path: Path, broker: FakeBroker) -> Harness:
    return Harness(tmp_path, broker)


def paths(broker: FakeBroker) -> list[str]:
    return [r.path for r in broker.requests]


# ----------------------------------------------------------------- happy path --


def test_happy_path_gives_run_sh_the_jit_config_in_its_environment_only(harness: Harness, broker: FakeBroker):
    result = harness.run()

    assert result.returncode == 0, result.output
    assert paths(broker) == [JITCONFIG, FINISHED]
    request = broker.requests[0]
    assert request.method == "POST" and request.bearer == TOKEN
    assert json.loads(request.body) == {} and request.headers["content-type"] == "application/json"
    run = harness.run_call()
    assert run is not None and run.argv == []
    assert run.env["ACTIONS_RUNNER_INPUT_JITCONFIG"] == JIT_CONFIG
    assert run.env["RUNNER_MANUALLY_TRAP_SIG"] == "1"
    assert RUNNER_NAME in result.stdout and "base-runner" in result.stdout


def test_curl_reads_the_token_from_stdin_never_from_its_command_line(harness: Harness):
    harness.run()

    curls = harness.shim_calls("curl")
    assert len(curls) == 2
    for curl in curls:
        assert curl.argv[:2] == ["--config", "-"]
        assert not any("Authorization" in arg for arg in curl.argv)


def test_token_file_is_read_again_for_each_request(harness: Harness, broker: FakeBroker):
    broker.script(
        JITCONFIG,
        Reply(503, {"error": "GitHub unavailable"}, action=lambda: harness.token_file.write_text(ROTATED_TOKEN)),
    )

    result = harness.run()

    assert result.returncode == 0, result.output
    assert [r.bearer for r in broker.requests] == [TOKEN, ROTATED_TOKEN, ROTATED_TOKEN]


def test_trailing_slash_of_the_broker_url_is_ignored(harness: Harness, broker: FakeBroker):
    result = harness.run(RUNNER_BROKER_URL=broker.url + "/")

    assert result.returncode == 0, result.output
    assert paths(broker) == [JITCONFIG, FINISHED]


# -------------------------------------------------------------------- retries --


@pytest.mark.parametrize("status", [500, 503, 504])
def test_unavailable_broker_is_retried_then_the_runner_starts(harness: Harness, broker: FakeBroker, status: int):
    broker.script(JITCONFIG, Reply(status, {"error": "GitHub unavailable"}), Reply(status, "not json"))

    result = harness.run()

    assert result.returncode == 0, result.output
    assert paths(broker) == [JITCONFIG] * 3 + [FINISHED]
    assert f"HTTP {status}: GitHub unavailable" in result.stdout
    assert harness.run_call() is not None


def test_refused_connection_while_the_broker_starts_is_retried(tmp_path: Path):
    with FakeBroker(listening=False) as broker:
        harness = Harness(tmp_path, broker)
        process = harness.start(RUNNER_BROKER_BACKOFF_SECONDS="1")
        harness.wait_for(lambda: "retrying in 1s" in harness.output_so_far(), "the first attempt to fail")
        broker.listen()
        result = harness.finish(process, time.monotonic())

    assert result.returncode == 0, result.output
    assert "failed" in result.stdout and "attempt 1 of 3" in result.stdout
    assert paths(broker) == [JITCONFIG, FINISHED]


def test_wait_between_attempts_doubles_up_to_10_seconds(harness: Harness, broker: FakeBroker):
    broker.script(JITCONFIG, *[Reply(503)] * 5)
    harness.record_sleeps()

    result = harness.run(RUNNER_BROKER_BACKOFF_SECONDS="3", RUNNER_BROKER_RETRIES="5")

    assert result.returncode == 0, result.output
    assert harness.sleeps() == ["3", "6", "10", "10", "10"]
    assert paths(broker) == [JITCONFIG] * 6 + [FINISHED]


def test_the_wait_between_attempts_is_a_real_pause(harness: Harness, broker: FakeBroker):
    broker.script(JITCONFIG, Reply(503))

    result = harness.run(RUNNER_BROKER_BACKOFF_SECONDS="1")

    assert result.returncode == 0, result.output
    first, second = (r.at for r in broker.requests_to(JITCONFIG))
    # A real pause of at least the backoff; how long each wait is, the recording-sleep test
    # proves without a clock, so a loaded machine cannot fail this one.
    assert second - first >= 0.95


def test_spent_retries_exit_4(harness: Harness, broker: FakeBroker):
    broker.default(JITCONFIG, Reply(503, {"error": "GitHub is unavailable"}))

    result = harness.run()

    assert result.returncode == EXIT_GAVE_UP
    assert paths(broker) == [JITCONFIG] * 3  # RUNNER_BROKER_RETRIES=2
    assert "gave up after 3 attempts" in result.stderr and "GitHub is unavailable" in result.stderr
    assert harness.run_call() is None


def test_hung_broker_times_out_and_gives_up_in_bounded_time(harness: Harness, broker: FakeBroker):
    broker.default(JITCONFIG, Reply(201, GRANTED.body, delay=30))

    result = harness.run(RUNNER_BROKER_TIMEOUT_SECONDS="1", RUNNER_BROKER_RETRIES="0")

    assert result.returncode == EXIT_GAVE_UP
    assert "timed out" in result.stderr and "gave up after 1 attempts" in result.stderr
    assert result.elapsed < 4
    assert harness.run_call() is None


# ------------------------------------------------------------------- refusals --


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "the token is not valid for this broker"),
        (403, "pod default/debug is not a runner pod"),
        (502, "GitHub refused the broker's credential: Bad credentials"),
        (404, "no such route"),
    ],
)
def test_refusal_exits_3_at_once_with_the_brokers_message(harness: Harness, broker: FakeBroker, status, message):
    broker.script(JITCONFIG, Reply(status, {"error": message}))

    result = harness.run()

    assert result.returncode == EXIT_REFUSED
    assert paths(broker) == [JITCONFIG]
    assert f"HTTP {status}: {message}" in result.stderr
    assert harness.run_call() is None


def test_a_pod_that_already_had_its_runner_tells_the_broker_so_it_is_replaced(harness: Harness, broker: FakeBroker):
    """A 409 means an answer was lost or the container restarted: the broker removes that runner and the pod."""
    broker.script(JITCONFIG, Reply(409, {"error": "pod base-runner-abc already had a runner"}))

    result = harness.run()

    assert result.returncode == EXIT_REFUSED
    assert paths(broker) == [JITCONFIG, FINISHED]
    assert "HTTP 409: pod base-runner-abc already had a runner" in result.stderr
    assert harness.run_call() is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": RUNNER_NAME, "labels": []},
        {"encodedJitConfig": JIT_CONFIG},
        {"name": RUNNER_NAME, "encodedJitConfig": ""},
        [],
        "not json",
        None,
    ],
    ids=["empty", "no-config", "no-name", "empty-config", "array", "not-json", "no-body"],
)
def test_answer_without_a_runner_exits_3(harness: Harness, broker: FakeBroker, body):
    broker.script(JITCONFIG, Reply(201, body))

    result = harness.run()

    assert result.returncode == EXIT_REFUSED
    assert "no runner name and JIT config" in result.stderr
    assert paths(broker) == [JITCONFIG]
    assert harness.run_call() is None


# ---------------------------------------------------------- invalid variables --


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"RUNNER_BROKER_URL": None}, "RUNNER_BROKER_URL"),
        ({"RUNNER_BROKER_URL": "ftp://broker.test"}, "RUNNER_BROKER_URL"),
        ({"RUNNER_BROKER_URL": "runner-broker:8080"}, "RUNNER_BROKER_URL"),
        ({"RUNNER_BROKER_TOKEN_FILE": None}, "RUNNER_BROKER_TOKEN_FILE"),
        ({"RUNNER_BROKER_TOKEN_FILE": "/nonexistent/token"}, "RUNNER_BROKER_TOKEN_FILE"),
        ({"RUNNER_BROKER_TOKEN_FILE": "/"}, "RUNNER_BROKER_TOKEN_FILE"),
        ({"RUNNER_HOME": "/nonexistent"}, "RUNNER_HOME"),
        ({"RUNNER_BROKER_RETRIES": "many"}, "RUNNER_BROKER_RETRIES"),
        ({"RUNNER_BROKER_RETRIES": "-1"}, "RUNNER_BROKER_RETRIES"),
        ({"RUNNER_BROKER_BACKOFF_SECONDS": "2s"}, "RUNNER_BROKER_BACKOFF_SECONDS"),
        ({"RUNNER_BROKER_TIMEOUT_SECONDS": "0"}, "RUNNER_BROKER_TIMEOUT_SECONDS"),
        ({"RUNNER_BROKER_TIMEOUT_SECONDS": "1.5"}, "RUNNER_BROKER_TIMEOUT_SECONDS"),
        ({"GPU_RUNNER_RUN_ID": "42a"}, "GPU_RUNNER_RUN_ID"),
        ({"GPU_RUNNER_RUN_ID": "0"}, "GPU_RUNNER_RUN_ID"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={v}" for k, v in v.items()),
)
def test_invalid_variable_exits_2_naming_it(harness: Harness, broker: FakeBroker, changes, variable):
    result = harness.run(**changes)

    assert result.returncode == EXIT_CONFIG
    assert variable in result.stderr
    assert broker.requests == [] and harness.run_call() is None


@pytest.mark.parametrize("content", ["", "\n", "two words"], ids=["empty", "newline", "spaces"])
def test_token_file_without_a_token_exits_2(harness: Harness, broker: FakeBroker, content: str):
    harness.token_file.write_text(content)

    result = harness.run()

    assert result.returncode == EXIT_CONFIG
    assert "RUNNER_BROKER_TOKEN_FILE" in result.stderr
    assert broker.requests == []


def test_run_sh_that_is_not_executable_exits_2(harness: Harness, broker: FakeBroker):
    (harness.home / "run.sh").chmod(0o644)

    result = harness.run()

    assert result.returncode == EXIT_CONFIG
    assert "RUNNER_HOME" in result.stderr and "run.sh" in result.stderr
    assert broker.requests == []


def test_inherited_runner_inputs_do_not_reach_run_sh(harness: Harness):
    result = harness.run(
        ACTIONS_RUNNER_INPUT_FOO=STALE_INPUT,
        ACTIONS_RUNNER_INPUT_JITCONFIG=STALE_INPUT,
        Actions_Runner_Input_Name=STALE_INPUT,
    )  # the runner reads these names in any case

    assert result.returncode == 0, result.output
    inputs = {k: v for k, v in harness.run_call().env.items() if k.upper().startswith("ACTIONS_RUNNER_INPUT_")}
    assert inputs == {"ACTIONS_RUNNER_INPUT_JITCONFIG": JIT_CONFIG}


# -------------------------------------------------------- run.sh ends by itself --


@pytest.mark.parametrize("status", [0, 7])
def test_run_sh_status_is_passed_on_after_telling_the_broker(harness: Harness, broker: FakeBroker, status: int):
    harness.run_mode(str(status))

    result = harness.run()

    assert result.returncode == status, result.output
    assert paths(broker) == [JITCONFIG, FINISHED]
    finished = broker.requests_to(FINISHED)[0]
    assert finished.method == "POST" and finished.bearer == TOKEN and json.loads(finished.body) == {}
    assert "told the broker" in result.stdout


def test_failing_finished_call_is_retried_briefly_and_only_logged(harness: Harness, broker: FakeBroker):
    harness.run_mode("7")
    broker.default(FINISHED, Reply(503, {"error": "broker busy"}))

    result = harness.run()

    assert result.returncode == 7
    assert paths(broker) == [JITCONFIG] + [FINISHED] * 3
    assert "broker busy" in result.stderr


def test_refused_finished_call_is_not_retried(harness: Harness, broker: FakeBroker):
    broker.default(FINISHED, Reply(401, {"error": "token expired"}))

    result = harness.run()

    assert result.returncode == 0
    assert paths(broker) == [JITCONFIG, FINISHED]
    assert "token expired" in result.stderr


# -------------------------------------------------------------------- signals --


@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGTERM, 143, "TERM"), (signal.SIGINT, 130, "INT")])
def test_signal_stops_run_sh_then_tells_the_broker_once(harness: Harness, broker: FakeBroker, sig, code, name):
    harness.run_mode("wait")
    process = harness.start()
    harness.wait_until_running(process)

    signalled = time.monotonic()
    process.send_signal(sig)
    result = harness.finish(process, signalled)

    assert result.returncode == code, result.output
    assert paths(broker) == [JITCONFIG, FINISHED]
    [(got, at)] = harness.run_signals()
    assert got == name
    assert at <= broker.requests_to(FINISHED)[0].wall, "run.sh must have been told before the broker"
    assert result.elapsed < 3


def test_second_signal_while_stopping_is_ignored(harness: Harness, broker: FakeBroker):
    harness.run_mode("slow-stop")
    broker.default(FINISHED, Reply(200, {}, delay=0.5))
    process = harness.start()
    harness.wait_until_running(process)

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    harness.wait_for(lambda: harness.run_signals(), "run.sh to get the signal")
    process.send_signal(signal.SIGINT)  # while run.sh stops
    harness.wait_for(lambda: broker.requests_to(FINISHED), "the finished call")
    process.send_signal(signal.SIGTERM)  # while the broker is being told
    result = harness.finish(process, signalled)

    assert result.returncode == 143, result.output
    assert [name for name, _ in harness.run_signals()] == ["TERM"]
    assert paths(broker) == [JITCONFIG, FINISHED]
    assert result.stdout.count("ignored: already stopping") == 2


def test_signal_while_the_broker_is_told_after_run_sh_ended_keeps_its_status(harness: Harness, broker: FakeBroker):
    harness.run_mode("7")
    broker.default(FINISHED, Reply(200, {}, delay=0.5))
    process = harness.start()
    harness.wait_for(lambda: broker.requests_to(FINISHED), "the finished call")

    process.send_signal(signal.SIGTERM)
    result = harness.finish(process, time.monotonic())

    assert result.returncode == 7, result.output
    assert paths(broker) == [JITCONFIG, FINISHED]


def test_signal_before_run_sh_started_exits_at_once_without_finished(harness: Harness, broker: FakeBroker):
    broker.script(JITCONFIG, Reply(201, GRANTED.body, delay=10))
    process = harness.start(RUNNER_BROKER_TIMEOUT_SECONDS="20")
    harness.wait_for(lambda: broker.requests, "the JIT config request")

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    result = harness.finish(process, signalled)

    assert result.returncode == 143
    assert result.elapsed < 2
    assert paths(broker) == [JITCONFIG]
    assert harness.run_call() is None


def test_signal_during_the_wait_between_attempts_exits_at_once(harness: Harness, broker: FakeBroker):
    broker.script(JITCONFIG, Reply(503))
    process = harness.start(RUNNER_BROKER_BACKOFF_SECONDS="30")
    harness.wait_for(lambda: "retrying in 30s" in harness.output_so_far(), "the first attempt to fail")

    signalled = time.monotonic()
    process.send_signal(signal.SIGINT)
    result = harness.finish(process, signalled)

    assert result.returncode == 130
    assert result.elapsed < 2
    assert paths(broker) == [JITCONFIG]


# ------------------------------------------------- a GPU runner serves its own run --


def test_a_gpu_runner_runs_the_job_started_hook_before_each_job(harness: Harness):
    result = harness.run(GPU_RUNNER_RUN_ID="4242")

    assert result.returncode == 0, result.output
    env = harness.run_call().env
    assert env["ACTIONS_RUNNER_HOOK_JOB_STARTED"] == str(HOOK.resolve())
    assert env["GPU_RUNNER_RUN_ID"] == "4242"
    assert env["GPU_RUNNER_REFUSED_JOB_FILE"].startswith(str(harness.scratch) + "/")


def test_a_base_runner_gets_no_hook(harness: Harness):
    result = harness.run()

    assert result.returncode == 0, result.output
    assert "ACTIONS_RUNNER_HOOK_JOB_STARTED" not in harness.run_call().env


def test_a_job_of_the_runners_own_run_passes_the_hook(harness: Harness, broker: FakeBroker):
    harness.run_mode("hook:4242")

    result = harness.run(GPU_RUNNER_RUN_ID="4242")

    assert result.returncode == 0, result.output
    assert (harness.calls_dir / "hook.status").read_text().strip() == "0"
    assert paths(broker) == [JITCONFIG, FINISHED]


def test_a_gpu_runner_that_refused_another_runs_job_ends_5_so_its_job_makes_a_fresh_one(
    harness: Harness, broker: FakeBroker
):
    harness.run_mode("hook:999")

    result = harness.run(GPU_RUNNER_RUN_ID="4242")

    assert result.returncode == EXIT_FOREIGN_JOB, result.output
    assert (harness.calls_dir / "hook.status").read_text().strip() == "1"
    assert "refuses this job of run 999" in (harness.calls_dir / "hook.out").read_text()
    assert "refused a job of another run" in result.stderr
    assert paths(broker) == [JITCONFIG, FINISHED], "the broker still hears the runner has ended"


def test_a_gpu_runner_without_its_hook_does_not_start(harness: Harness, broker: FakeBroker, tmp_path: Path):
    copy = tmp_path / "startup.sh"
    copy.write_text(STARTUP.read_text())
    done = subprocess.run(
        ["bash", str(copy)],
        env=harness.environment(GPU_RUNNER_RUN_ID="4242"),
        capture_output=True,
        text=True,
        timeout=15,
        stdin=subprocess.DEVNULL,
    )

    assert done.returncode == EXIT_CONFIG
    assert "job-started hook" in done.stderr and "is missing" in done.stderr
    assert broker.requests == []
