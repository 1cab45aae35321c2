"""A runner pod's whole life, for real: startup.sh against the broker's process (python3 -m runner_broker), with
local doubles of GitHub and Kubernetes.

Only run.sh is a stub (it records its arguments and environment, then ends or waits for a
signal, as a runner's listener would); the entrypoint, curl, jq and the broker are the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from broker_harness import REPOSITORY, ROOT, BrokerProcess, BrokerSetup, RunnerPod, wait_until

from runner_contract import RUNNER_ANNOTATION

STARTUP = ROOT / "runner_image" / "startup.sh"
RUN_STUB = """#!/usr/bin/env bash
env -0 > "$(dirname "$0")/run.env"
printf '%s\\0' "$@" > "$(dirname "$0")/run.argv"
date +%s.%N > "$(dirname "$0")/run.started"
if [[ $(<"$(dirname "$0")/run.mode") == wait ]]; then
  trap 'exit 0' TERM
  while :; do sleep 0.05; done
fi
exit 0
"""


@dataclass
class RunnerContainer:
    """startup.sh as a runner pod's container runs it: the pod's projected token in a file."""

    home: Path
    process: subprocess.Popen
    started_at: float

    def run_env(self) -> dict[str, str]:
        raw = (self.home / "run.env").read_bytes().split(b"\0")
        return dict(item.decode().split("=", 1) for item in raw if b"=" in item)

    def run_argv(self) -> list[str]:
        return [a for a in (self.home / "run.argv").read_text().split("\0") if a]

    def runner_started(self) -> bool:
        started = self.home / "run.started"
        return started.exists() and started.read_text().endswith("\n")

    def run_started_at(self) -> float:
        return float((self.home / "run.started").read_text())

    def output(self) -> str:
        return (self.home / "output").read_text()


def start_container(tmp: Path, broker: BrokerProcess, pod: RunnerPod, mode: str = "0") -> RunnerContainer:
    home = tmp / pod.name
    home.mkdir()
    (home / "run.sh").write_text(RUN_STUB)
    (home / "run.sh").chmod(0o755)
    (home / "run.mode").write_text(mode)
    token_file = home / "token"
    token_file.write_text(pod.token)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "RUNNER_HOME": str(home),
        "RUNNER_BROKER_URL": f"http://127.0.0.1:{broker.port}",
        "RUNNER_BROKER_TOKEN_FILE": str(token_file),
        "RUNNER_BROKER_BACKOFF_SECONDS": "0",
    }
    started = time.time()
    with (home / "output").open("w") as output:
        process = subprocess.Popen(
            ["bash", str(STARTUP)], env=env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return RunnerContainer(home, process, started)


@pytest.fixture
def setup(tmp_path: Path):
    with BrokerSetup(tmp_path / "broker") as fakes:
        yield fakes


def test_a_base_runner_pod_gets_its_runner_runs_one_job_and_is_replaced(setup, tmp_path):
    broker = setup.start()
    pod = setup.cluster.base_runner_pod()

    container = start_container(tmp_path, broker, pod)
    assert container.process.wait(timeout=20) == 0, container.output()

    (jit_config,) = setup.runners.jit_configs
    assert container.run_env()["ACTIONS_RUNNER_INPUT_JITCONFIG"] == jit_config
    assert jit_config not in " ".join(container.run_argv())
    assert pod.token not in "".join(container.run_env().values())
    # The job is done: the runner is gone from GitHub and the pod deleted, so its ReplicaSet makes a fresh one.
    assert setup.runners.names() == set()
    (deletion,) = setup.kube.requests_to("DELETE", f"/api/v1/namespaces/github-runners/pods/{pod.name}")
    assert pod.uid in deletion.body.decode()
    assert broker.log_lines("jitconfig", f"pod={pod.name}", "decision=granted")
    for secret in (jit_config, pod.token, *setup.secrets):
        assert secret not in container.output() and secret not in broker.output


def test_a_gpu_runner_pod_is_named_and_labelled_by_its_job_and_deregistered_on_sigterm(setup, tmp_path):
    broker = setup.start()
    pod = setup.cluster.gpu_runner_pod(run_id="987654321", attempt=2)

    container = start_container(tmp_path, broker, pod, mode="wait")
    wait_until(container.runner_started, "run.sh to start", timeout=20)
    assert setup.runners.names() == {"gpu-runner-987654321-2"}
    (generate,) = setup.github.requests_to(f"/repos/{REPOSITORY}/actions/runners/generate-jitconfig")
    assert json.loads(generate.body)["labels"] == ["gpu-runner-987654321"]  # GitHub may add its defaults
    assert set(setup.runners.labels("gpu-runner-987654321-2")) - {"self-hosted", "Linux", "X64"} == {
        "gpu-runner-987654321"
    }

    container.process.send_signal(signal.SIGTERM)  # the stop job deleted the Job
    assert container.process.wait(timeout=20) == 143, container.output()

    assert setup.runners.names() == set()
    assert not setup.kube.requests_to("DELETE")  # a Job's pod stays for its logs


def test_a_job_that_reads_the_pods_token_gets_no_second_runner(setup, tmp_path):
    """A step of the running job can read the projected token: the broker answers 409, and deletes the pod."""
    broker = setup.start()
    pod = setup.cluster.base_runner_pod()
    container = start_container(tmp_path, broker, pod, mode="wait")
    wait_until(container.runner_started, "run.sh to start", timeout=20)
    setup.runners.set_state(pod.name, status="online", busy=True)  # the runner connected and took a job
    assert setup.cluster.annotations(pod)[RUNNER_ANNOTATION] == pod.name

    assert broker.jitconfig(pod).status == 409
    assert len(setup.runners.jit_configs) == 1 and setup.cluster.stored(pod) is None

    container.process.send_signal(signal.SIGTERM)  # what the kubelet does to a deleted pod
    assert container.process.wait(timeout=20) == 143


def test_attack_pod_frozen_with_sigstop_is_deleted_by_the_sweep(setup, tmp_path):
    """The attack: a job SIGSTOPs startup.sh, so /v1/finished never comes, while a process named like the
    listener keeps the probes green; the pod lived on and, after a broker restart, got another runner. Now
    once GitHub no longer lists its runner (its one job done), the sweep deletes the pod."""
    broker = setup.start(BROKER_SWEEP_SECONDS="0.2", BROKER_GRANT_GRACE_SECONDS="1")
    pod = setup.cluster.base_runner_pod()
    container = start_container(tmp_path, broker, pod, mode="wait")  # run.sh's stub: the "listener" runs on
    wait_until(container.runner_started, "run.sh to start", timeout=20)
    container.process.send_signal(signal.SIGSTOP)
    try:
        setup.runners.remove(pod.name)  # the runner took its one job, ran it, and left GitHub

        wait_until(lambda: setup.cluster.stored(pod) is None, "the sweep to delete the frozen pod", timeout=10)

        line = broker.wait_for_log("sweep", "decision=deleted", f"pod={pod.name}")
        assert "its one job is done" in line
        assert broker.jitconfig(pod).status == 401  # a deleted pod's token is dead: no second runner, ever
        assert len(setup.runners.jit_configs) == 1
    finally:
        container.process.send_signal(signal.SIGCONT)
        container.process.send_signal(signal.SIGTERM)
        container.process.wait(timeout=20)


def start_to_runner_seconds(setup: BrokerSetup, tmp: Path, broker: BrokerProcess) -> float:
    """From the container's start to run.sh running, against the real broker and the local fakes."""
    container = start_container(tmp, broker, setup.cluster.base_runner_pod(), mode="wait")
    wait_until(container.runner_started, "run.sh to start", timeout=20)
    elapsed = container.run_started_at() - container.started_at
    container.process.send_signal(signal.SIGTERM)
    container.process.wait(timeout=20)
    return elapsed
