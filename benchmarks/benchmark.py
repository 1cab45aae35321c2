"""Prints how fast the things users wait on are. Not a test: figures, no thresholds.

    .venv/bin/python benchmarks/benchmark.py [runs]

- evaluating the whole program under mocks (what `pulumi preview` costs before the cloud);
- the entrypoint, against a local fake of the runner broker with a stub run.sh: from start
  until run.sh runs, and from SIGTERM until run.sh has stopped, the broker has been told
  (/v1/finished) and the entrypoint has exited;
- the runner broker, as a real process against local fakes of GitHub and Kubernetes: JIT
  request to answer, p50 and p99, over sequential requests and with many pods at once;
- a runner pod's start to run.sh running, with the real entrypoint and the real broker;
- how fast bad input fails: a zone without the GPU (the preflight), and a GPU runner pod
  that cannot pull its image (gpu-runner start, with its default poll).

Then three models, figures rather than timings (benchmarks/cold_start_model.py, which cites every
published figure and marks every assumption; benchmarks/test_cold_start_model.py tests them): the
cold start of one GPU runner before and after this project's cold-start work, N runs started
together, and the bill per run, per warm node and per month.
"""

import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "broker", ROOT / "tests", ROOT / "benchmarks"):
    sys.path.insert(0, str(path))

import pulumi  # noqa: E402

import broker_harness  # noqa: E402
import cold_start_model  # noqa: E402
from program_harness import run_program  # noqa: E402
from fake_broker import FakeBroker  # noqa: E402
from test_entrypoint import Harness  # noqa: E402
from test_runner_pod_end_to_end import start_to_runner_seconds  # noqa: E402


def figures(name: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    print(f"{name:<40} median {statistics.median(ms):7.1f} ms   min {ms[0]:7.1f}   max {ms[-1]:7.1f}   (n={len(ms)})")


def program_evaluation(runs: int) -> list[float]:
    run_program()  # imports and first-run costs are not what a user waits on twice
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        program = run_program()
        times.append(time.perf_counter() - started)
    print(f"resources registered per run: {len(program.resources)}")
    return times


def entrypoint(runs: int) -> tuple[list[float], list[float]]:
    to_runner, to_exit = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp, FakeBroker() as broker:
            harness = Harness(Path(tmp), broker)
            harness.run_mode("wait")
            started = time.time()
            process = harness.start()
            harness.wait_until_running(process)
            to_runner.append(harness.run_started_at() - started)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            result = harness.finish(process, signalled)
            assert result.returncode == 143, result.output
            to_exit.append(result.elapsed)
    return to_runner, to_exit


def runner_pod_start(runs: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as tmp, broker_harness.BrokerSetup(Path(tmp) / "broker") as setup:
        broker = setup.start()
        for run in range(runs):
            directory = Path(tmp) / f"pod-{run}"
            directory.mkdir()
            times.append(start_to_runner_seconds(setup, directory, broker))
    return times


def broker_latency() -> None:
    result = broker_harness.benchmark(requests=200, concurrent_pods=50)
    ms = {key: value * 1000 for key, value in result.items() if key.endswith("_seconds")}
    print(
        f"{'broker: JIT request -> answer, sequential':<40} p50 {ms['sequential_p50_seconds']:7.1f} ms   "
        f"p99 {ms['sequential_p99_seconds']:7.1f}   (n={result['requests']})"
    )
    print(
        f"{'broker: JIT request -> answer, together':<40} p50 {ms['concurrent_p50_seconds']:7.1f} ms   "
        f"p99 {ms['concurrent_p99_seconds']:7.1f}   (n={result['concurrent_pods']} pods at once, all answered "
        f"in {ms['concurrent_all_answered_seconds']:.0f} ms)"
    )


def bad_zone_to_error(runs: int) -> list[float]:
    """`pulumi up` with a zone that lacks the GPU: until the preflight's refusal (local Compute API double)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        try:
            run_program({"gcp:zone": "us-central1-b", "gke-gpu-runners:gpuType": "nvidia-l4"})
        except pulumi.RunError:
            times.append(time.perf_counter() - started)
    return times


def failing_pod_to_red_start_job(runs: int) -> list[float]:
    """`gpu-runner start` with its default poll, from the first look at a pod that cannot pull its image to exit 1."""
    from test_gpu_runner_script import gpu_runner, pod

    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            pulling = pod(waiting={"reason": "ErrImagePull", "message": "403 Forbidden"})
            backing_off = pod(waiting={"reason": "ImagePullBackOff", "message": "403 Forbidden"})
            run = gpu_runner(Path(tmp), "start", pods=[[pod()], [backing_off], [pulling]], GPU_RUNNER_POLL_SECONDS="5")
            assert run.returncode == 1, run.output
            times.append(run.elapsed)
    return times


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    figures("program under mocks", program_evaluation(runs))
    start, stop = entrypoint(runs)
    figures("entrypoint: start -> run.sh running", start)
    figures("entrypoint: SIGTERM -> broker told, exit", stop)
    broker_latency()
    figures("runner pod: start -> run.sh (real broker)", runner_pod_start(runs))
    cold_start_model.print_models()
    figures("preflight: bad zone -> refusal", bad_zone_to_error(runs))
    figures("gpu-runner start: failing pod -> red", failing_pod_to_red_start_job(3))
