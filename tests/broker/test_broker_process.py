"""The broker as a real process (`python3 -m runner_broker`): what only a process shows. Exit codes, signals and
the final sweep, credentials absent from /proc, grants that outlive the process, and the availability attacks
measured on its own memory."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from broker_harness import NAMESPACE, PAT, REPOSITORY, SlowClientAttack, broker_environment, slow_client, wait_until
from github_runners import runners_api

pytest_plugins = ["broker_fixtures"]  # setup, broker, make_setup

GENERATE = runners_api(REPOSITORY, "/generate-jitconfig")
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"


def run_with(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner_broker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )


# ------------------------------------------------------------------ exit codes --


def test_bad_configuration_exits_2_naming_every_variable_and_nothing_secret(setup):
    result = run_with(
        setup.env(
            BROKER_REPOSITORY=None,
            BROKER_LISTEN="8080",
            GITHUB_TOKEN_FILE=PAT,
            BROKER_GPU_RUNNER_TEMPLATE_FILE="/nonexistent/t.json",
        )
    )

    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    for variable in ("BROKER_REPOSITORY", "BROKER_LISTEN", "GITHUB_TOKEN_FILE", "BROKER_GPU_RUNNER_TEMPLATE_FILE"):
        assert any(line.startswith("broker: configuration: ") and variable in line for line in lines), variable
    assert PAT not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_an_address_already_taken_exits_1(setup):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_with(setup.env(BROKER_HEALTH_LISTEN=f"127.0.0.1:{taken.getsockname()[1]}"))

    assert result.returncode == 1 and "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_it_runs_from_the_package_alone(setup):
    """The image holds broker/runner_broker and runner_contract beside it, and nothing else of the project."""
    code = (
        "import runner_broker.service, sys; print(sorted(m for m in sys.modules if m.startswith(('runner_', 'crypt'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=broker_environment(), capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert "cryptography" not in result.stdout  # a PAT broker never loads it


# ------------------------------------------------------------------ credentials --


@pytest.mark.parametrize("app_mode", [False, True], ids=["pat", "app"])
def test_no_credential_in_the_running_brokers_command_line_environment_or_log(make_setup, app_mode):
    setup = make_setup(app=app_mode)
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    setup.run_job(runner_pod)
    assert process.gpu_runners(runner_pod).status == 201

    setup.assert_no_secret_in(process.visible_to_other_processes(), "/proc/<pid>/cmdline or environ")
    setup.assert_no_secret_in(process.output, "the broker's log")

    # The check can fail: a broker handed its credential's text in its environment is caught.
    leaky = setup.start(LEAKED=setup.key_file.read_text() if app_mode else PAT)
    with pytest.raises(AssertionError, match="reached /proc"):
        setup.assert_no_secret_in(leaky.visible_to_other_processes(), "/proc")
    setup.brokers.remove(leaky)
    assert leaky.stop() == 0


# ---------------------------------------------------------------------- signals --


def test_sigterm_lets_the_requests_in_flight_finish_sweeps_once_more_and_exits_0(setup):
    process = setup.start()  # BROKER_SWEEP_SECONDS=3600: only the final sweep can remove anything
    leaving, staying, asking = (setup.cluster.base_runner_pod() for _ in range(3))
    assert process.jitconfig(leaving).status == 201 and process.jitconfig(staying).status == 201
    setup.cluster.delete(leaving)
    setup.runners.generate_delay = 0.5

    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(process.jitconfig, asking)
        wait_until(lambda: len(setup.github.requests_to(GENERATE)) == 3, "the grant to reach GitHub")
        process.process.send_signal(signal.SIGTERM)
        answer = in_flight.result(timeout=10)

    assert answer.status == 201, answer.raw
    assert process.stop() == 0
    assert setup.runners.names() == {staying.name, asking.name}
    assert process.log_lines("sweep", "decision=removed", f"runner={leaving.name}")
    assert process.output.index("stopping") < process.output.index(f"decision=granted status=201 pod={asking.name}")
    assert process.log_lines("stopped")
    with pytest.raises(ConnectionRefusedError):
        process.request("GET", "/healthz", port=process.health_port, timeout=2)


def test_sigterm_stops_in_bounded_time_while_clients_trickle(setup):
    process = setup.start(BROKER_REQUEST_DEADLINE_SECONDS="0.5")
    held = [slow_client(process.port) for _ in range(4)]
    started = time.monotonic()

    assert process.stop(signal.SIGTERM, timeout=8) == 0

    assert time.monotonic() - started < 0.5 + 2 + 1.5  # the deadline, the drain margin, start-up slack
    for connection in held:
        connection.close()


def test_sigint_too(setup):
    process = setup.start()
    assert process.stop(signal.SIGINT) == 0


# ------------------------------------------------------------------ the attacks --


def test_attack_broker_restart_a_granted_pod_gets_409_from_the_next_process(setup):
    """The attack: after any broker restart (an upgrade, a preemption, an OOM) a frozen pod got a new runner. The
    grant is now on the pod, so the next process refuses it, and deletes it for its ReplicaSet to replace."""
    first = setup.start()
    frozen, gpu = setup.cluster.base_runner_pod(), setup.cluster.gpu_runner_pod()
    assert first.jitconfig(frozen).status == 201 and first.jitconfig(gpu).status == 201
    assert first.stop() == 0
    setup.runners.remove(frozen.name)  # its one job done; its entrypoint never said so
    setup.runners.remove("gpu-runner-4242-1")
    second = setup.start()

    answers = [second.jitconfig(frozen), second.jitconfig(gpu)]

    assert [a.status for a in answers] == [409, 409] and all("recorded on the pod" in a.body["error"] for a in answers)
    assert len(setup.runners.jit_configs) == 2 and setup.runners.names() == set()
    assert setup.cluster.stored(frozen) is None and setup.cluster.stored(gpu) is not None


def test_attack_busy_runner_at_destroy_is_retried_then_removed(setup):
    """The attack: a runner busy at `pulumi destroy` stayed registered: GitHub refuses (422) to remove a runner
    running a job, and the final sweep gave up. Now it retries, bounded, until GitHub lets it go."""
    process = setup.start(BROKER_FINAL_SWEEP_SECONDS="20")
    setup.runners.add("gpu-runner-77-1", ["gpu-runner-77"], busy=True)
    setup.runners.add("base-runner-5d8f7c9b4-gone", ["base-runner"])
    setup.kube.fail(PODS, status=403, times=100)  # the runner namespace is gone

    def free_after_two_refusals():
        wait_until(lambda: len(setup.github.requests_to(f"{runners_api(REPOSITORY)}/1001")) >= 2, "two tries", 15)
        setup.runners.set_state("gpu-runner-77-1", busy=False)

    freeing = threading.Thread(target=free_after_two_refusals, daemon=True)
    freeing.start()
    assert process.stop(timeout=25) == 0
    freeing.join()

    assert setup.runners.names() == set()
    assert process.log_lines("sweep", "decision=left", "runner=gpu-runner-77-1")
    assert process.log_lines("sweep", "decision=removed", "runner=gpu-runner-77-1")
    assert not process.log_lines("decision=remain")


def test_attack_busy_runner_at_destroy_that_stays_busy_is_named(setup):
    process = setup.start(BROKER_FINAL_SWEEP_SECONDS="1")
    setup.runners.add("gpu-runner-77-1", ["gpu-runner-77"], busy=True)
    setup.kube.fail(PODS, status=403, times=100)
    started = time.monotonic()

    assert process.stop(timeout=15) == 0

    assert time.monotonic() - started < 5
    (line,) = process.log_lines("sweep", "decision=remain")
    assert "runners=gpu-runner-77-1" in line and "Settings, Actions, Runners" in line


@pytest.mark.parametrize("per_client", ["8", "64"], ids=["default cap", "one client may take every slot"])
def test_attack_64_slow_clients_and_oversized_headers_from_one_address(setup, per_client):
    """The attack: 64 token-less connections held every slot (35 of 35 probes got 503), and 64 sending 64 KiB
    header lines took the broker from 25 MiB to over 1 GiB (limit 256 MiB). Now: the probes have their own
    listener, a client address gets a few slots, headers have a 16 KiB budget, and a slow client costs only
    itself."""
    process = setup.start(BROKER_MAX_CONNECTIONS_PER_CLIENT=per_client, BROKER_REQUEST_DEADLINE_SECONDS="30")
    well_behaved = setup.cluster.base_runner_pod()
    before_kib = process.memory_kib("VmRSS")

    attack = SlowClientAttack(process.port, source="127.0.0.1", slow=64, flooding=64)
    try:
        attack.wait_floods()
        probes = [process.health(timeout=3).status for _ in range(35)]
        answer = process.jitconfig(well_behaved, source="127.0.0.2", timeout=10)
        peak_kib = process.memory_kib("VmHWM")
    finally:
        attack.close()

    assert probes == [200] * 35
    if per_client == "8":
        assert answer.status == 201, answer.raw
    else:  # one address took all 64 slots: the others are turned away at once, and ask again
        assert answer.status == 503 and "too many connections" in answer.body["error"]
    assert peak_kib < 64 * 1024, f"peak {peak_kib} KiB, from {before_kib} KiB before the attack"
    assert process.running
