"""Prints how fast the runner broker is and how little an attack costs it. Not a test: figures, no thresholds.

    .venv/bin/python benchmarks/broker.py [--quick]

The broker runs as a real process (`python3 -m runner_broker`) on 127.0.0.1 against the
local doubles of GitHub and Kubernetes (tests/fake_github.py, tests/fake_kubernetes.py),
which answer at once: the figures are the broker's own cost plus its local round trips.

- JIT config: request -> answer, p50 and p99, 200 requests one after another, then 50
  pods at once (each from its own loopback address, as pods have in a cluster);
- GPU runners: POST /v1/gpu-runners -> Job created (the 201), and -> the runner online as
  GET /v1/gpu-runners/<run>/<attempt> reports it, with the Job controller's and the
  runner's parts played at once by the doubles (pod made, /v1/jitconfig, runner connects);
- the slow-client attack (64 connections from one address that send ~14 KiB
  of headers and stall, 64 more sending 64 KiB header lines): the broker's resident memory
  before and its peak (VmHWM) during, the health probes answered, and a runner pod from
  another address served.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "tests", ROOT / "broker", ROOT):
    sys.path.insert(0, str(path))

import broker_harness  # noqa: E402
from broker_harness import BrokerSetup, SlowClientAttack, percentile, pod_address, timed, wait_until  # noqa: E402


def line(name: str, seconds: list[float], note: str = "") -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{name:<46} p50 {statistics.median(ms):7.1f} ms   p99 {percentile(ms, 99):7.1f} ms   (n={len(ms)}{note})")


def jit_latency(requests: int, concurrent_pods: int) -> None:
    result = broker_harness.benchmark(requests=requests, concurrent_pods=concurrent_pods)
    ms = {key: value * 1000 for key, value in result.items() if key.endswith("_seconds")}
    print(
        f"{'JIT config, one after another':<46} p50 {ms['sequential_p50_seconds']:7.1f} ms   "
        f"p99 {ms['sequential_p99_seconds']:7.1f} ms   (n={requests})"
    )
    print(
        f"{'JIT config, pods at once':<46} p50 {ms['concurrent_p50_seconds']:7.1f} ms   "
        f"p99 {ms['concurrent_p99_seconds']:7.1f} ms   (n={concurrent_pods} at once, all answered in "
        f"{ms['concurrent_all_answered_seconds']:.0f} ms)"
    )


def gpu_runner_latency(runs: int, poll_seconds: float = 0.02) -> None:
    created, online = [], []
    with tempfile.TemporaryDirectory() as tmp, BrokerSetup(Path(tmp)) as setup:
        broker = setup.start()
        setup.cluster.start_job_pods = True  # the Job controller makes each Job's pod at once

        def runner_pod_starts(job_name: str) -> None:
            """The pod's entrypoint asks for its runner, which then connects to GitHub."""
            runner = wait_until(lambda: setup.cluster.job_pods.get(job_name), "the Job's pod")
            answer = broker.jitconfig(runner, source=pod_address(1))
            assert answer.status == 201, answer.raw
            setup.runners.set_state(job_name, status="online")

        for run in range(runs):
            run_id = str(10_000 + run)
            caller = setup.cluster.base_runner_pod()
            setup.run_job(caller, run_id, "1")
            started = time.perf_counter()
            answer = broker.gpu_runners(caller, run_id, "1")
            created.append(time.perf_counter() - started)
            assert answer.status == 201, answer.raw
            pod = threading.Thread(target=runner_pod_starts, args=(answer.body["jobs"][0],))
            pod.start()
            while broker.gpu_runner_state(caller, run_id, "1").body["runners"][0]["state"] != "online":
                time.sleep(poll_seconds)
            online.append(time.perf_counter() - started)
            pod.join()
        setup.check_no_leaks()
    line("GPU runner: request -> Job created", created)
    line("GPU runner: request -> runner online (GET)", online, f", polled every {poll_seconds * 1000:.0f} ms")


def attack_memory() -> None:
    with tempfile.TemporaryDirectory() as tmp, BrokerSetup(Path(tmp)) as setup:
        broker = setup.start(BROKER_REQUEST_DEADLINE_SECONDS="30")
        for _ in range(20):  # warm: a few grants' worth of imports and buffers
            assert broker.jitconfig(setup.cluster.base_runner_pod()).status == 201
        before = broker.memory_kib("VmRSS")
        started = time.perf_counter()
        attack = SlowClientAttack(broker.port, source="127.0.0.1", slow=64, flooding=64)
        try:
            attack.wait_floods()
            probes = [broker.health(timeout=3).status for _ in range(35)]
            pod = setup.cluster.base_runner_pod()
            served = timed(lambda: broker.jitconfig(pod, source="127.0.0.2", timeout=15))
            peak = broker.memory_kib("VmHWM")
        finally:
            attack.close()
        held = time.perf_counter() - started
    print(
        f"{'slow-client attack: resident memory':<46} before {before / 1024:6.1f} MiB   peak (VmHWM) "
        f"{peak / 1024:6.1f} MiB   (container limit 256 MiB)"
    )
    print(
        f"{'slow-client attack: what still works':<46} /healthz {probes.count(200)}/{len(probes)} answered 200; "
        f"a runner pod from another address got its JIT config in {served * 1000:.0f} ms "
        f"(attack held {held:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests: a rough figure in seconds")
    quick = parser.parse_args().quick
    jit_latency(40 if quick else 200, 20 if quick else 50)
    gpu_runner_latency(10 if quick else 50)
    attack_memory()


if __name__ == "__main__":
    main()
