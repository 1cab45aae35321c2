"""Prints how fast the things users wait on are. Not a test: figures, no thresholds.

    .venv/bin/python tests/benchmark.py [runs]

- evaluating the whole program under mocks (what `pulumi preview` costs before the cloud);
- the entrypoint, against a local fake of GitHub's API with stub config.sh/run.sh:
  from start until run.sh runs, and from SIGTERM until it has deregistered and exited.
"""

import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import run_program  # noqa: E402
from fake_github import FakeGitHub  # noqa: E402
from test_entrypoint import Harness  # noqa: E402


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
        with tempfile.TemporaryDirectory() as tmp, FakeGitHub() as github:
            harness = Harness(Path(tmp), github)
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


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    figures("program under mocks", program_evaluation(runs))
    start, stop = entrypoint(runs)
    figures("entrypoint: start -> run.sh running", start)
    figures("entrypoint: SIGTERM -> deregistered, exit", stop)
