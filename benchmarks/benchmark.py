"""Prints how fast the things users wait on are. Not a test: figures, no thresholds.

    .venv/bin/python benchmarks/benchmark.py [runs]    # the figures below, each timed `runs` times (10)
    .venv/bin/python benchmarks/benchmark.py suite     # only the test suite's own time (below)

The default run times:

- evaluating the whole program under mocks (what `pulumi preview` costs before the cloud);
- the entrypoint, against a local fake of the runner broker with a stub run.sh: from start
  until run.sh runs, and from SIGTERM until run.sh has stopped, the broker has been told
  (/v1/finished) and the entrypoint has exited;
- the runner broker, as a real process against local fakes of GitHub and Kubernetes: JIT
  request to answer, p50 and p99, over sequential requests and with many pods at once;
- a runner pod's start to run.sh running, with the real entrypoint and the real broker;
- how fast bad input fails: a zone without the GPU (the preflight), and a GPU runner that
  cannot pull its image: the `gpu-runner start` command as the image runs it, a real
  process, against the runner broker's double (tests/fake_broker.py), which first says the
  runner is being scheduled and at the next look that its pod is in ErrImagePull; from the
  command's start to its exit 1, with its default poll between the two looks.

Then four models, figures rather than timings (benchmarks/cold_start_model.py; the published
figures and assumptions they rest on, each with its source, in benchmarks/published.py;
benchmarks/test_cold_start_model.py tests them): the cold start of one GPU runner before and
after this project's cold-start work, N runs started together, the bill per run, per warm node
and per month, and runnerMode: scale-set beside per-run mode.

`suite` runs the test suite once as .ci/run does (`python -m pytest -q -p no:cacheprovider -n 4
--dist loadgroup`, from the project folder, on a warm venv), then once more without
tests/realkube, and prints each run's wall time, its test count and pytest's summary line.
The target: under 120 s on 2 cores.
"""

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "broker", ROOT / "tests", ROOT / "tests" / "runner_side", ROOT / "benchmarks"):
    sys.path.insert(0, str(path))

import pulumi  # noqa: E402

import broker_harness  # noqa: E402
import report  # noqa: E402
from fake_broker import GPU_RUNNERS, FakeBroker, Reply, gpu_runner, gpu_runners_path, snapshot  # noqa: E402
from gpu_runner_harness import LAUNCHER, RUN_ATTEMPT, RUN_ID, environment  # noqa: E402
from program_harness import run_program  # noqa: E402
from test_entrypoint import Harness  # noqa: E402
from test_runner_pod_end_to_end import start_to_runner_seconds  # noqa: E402

SUITE = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "4", "--dist", "loadgroup"]


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
    """`gpu-runner start`, a real process with its default poll, from its start to exit 1: the broker's
    double grants the runner, says it is being scheduled, then at the next look that its pod cannot
    pull its image (ErrImagePull)."""
    job = f"gpu-runner-{RUN_ID}-{RUN_ATTEMPT}"
    pulling = gpu_runner(job, "starting", reason="ErrImagePull", message="pull access denied")
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp, FakeBroker() as broker:
            broker.default(GPU_RUNNERS, Reply(201, {"label": f"gpu-runner-{RUN_ID}", "jobs": [job]}))
            broker.script(
                gpu_runners_path(RUN_ID, RUN_ATTEMPT),
                Reply(200, snapshot(RUN_ID, gpu_runner(job, "scheduling"))),
                Reply(200, snapshot(RUN_ID, pulling)),
            )
            env = {"PATH": os.environ["PATH"], "HOME": tmp, **environment(Path(tmp), broker.url)}
            started = time.perf_counter()
            done = subprocess.run([str(LAUNCHER), "start"], env=env, capture_output=True, text=True, timeout=60)
            elapsed = time.perf_counter() - started
            assert done.returncode == 1, done.stdout + done.stderr
            assert "the image cannot be pulled (ErrImagePull" in done.stdout + done.stderr, done.stdout + done.stderr
            times.append(elapsed)
    return times


def suite_run(*extra: str) -> None:
    """The suite once, as .ci/run runs it: its wall time, its test count and pytest's last line."""
    started = time.perf_counter()
    done = subprocess.run([*SUITE, *extra], cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else f"(no output; exit {done.returncode})"
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)", summary)}
    tests = sum(n for word, n in counts.items() if not word.startswith("error"))
    name = "pytest -n 4" + (f" {' '.join(extra)}" if extra else "")
    print(f"{name:<40} {seconds:7.1f} s wall   {tests} tests   exit {done.returncode}   ({summary})")


def suite() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"the test suite on {cores} cores (the target: under 120 s on 2 cores, warm venv)")
    suite_run()
    suite_run("--ignore=tests/realkube")


def main(argv: list[str]) -> None:
    if argv[:1] == ["suite"]:
        suite()
        return
    runs = int(argv[0]) if argv else 10
    figures("program under mocks", program_evaluation(runs))
    start, stop = entrypoint(runs)
    figures("entrypoint: start -> run.sh running", start)
    figures("entrypoint: SIGTERM -> broker told, exit", stop)
    broker_latency()
    figures("runner pod: start -> run.sh (real broker)", runner_pod_start(runs))
    report.print_models()
    figures("preflight: bad zone -> refusal", bad_zone_to_error(runs))
    figures("gpu-runner start: failing pod -> red", failing_pod_to_red_start_job(3))


if __name__ == "__main__":
    main(sys.argv[1:])
