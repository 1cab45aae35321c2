"""runner_image/job-started.sh, the GPU runner's job-started hook, run for real with bash as the runner runs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gpu_runner_harness import ROOT

HOOK = ROOT / "runner_image" / "job-started.sh"


def hook(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    """As the runner does: `bash -e <hook>`, with the runner's environment and the job's GITHUB_* variables."""
    mark = tmp_path / "refused-job"
    done = subprocess.run(
        ["bash", "-e", str(HOOK)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "GPU_RUNNER_REFUSED_JOB_FILE": str(mark), **env},
    )
    return done, mark


def test_a_job_of_the_runners_own_run_goes_ahead(tmp_path):
    done, mark = hook(tmp_path, GPU_RUNNER_RUN_ID="4242", GITHUB_RUN_ID="4242")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "this job belongs to workflow run 4242, which this GPU runner serves" in done.stdout
    assert not mark.exists()


@pytest.mark.parametrize("job_run", ["4243", "424", "42420", ""])
def test_a_job_of_another_run_fails_before_its_first_step_and_leaves_a_mark(tmp_path, job_run):
    done, mark = hook(tmp_path, GPU_RUNNER_RUN_ID="4242", GITHUB_RUN_ID=job_run)

    assert done.returncode == 1
    [error] = [line for line in done.stdout.splitlines() if line.startswith("::error::")]
    assert f"serves workflow run 4242 only; it refuses this job of run {job_run or '(none)'}" in error
    assert mark.exists()


def test_a_runner_not_told_its_run_refuses_every_job(tmp_path):
    done, _ = hook(tmp_path, GITHUB_RUN_ID="4242")

    assert done.returncode == 1
    assert "::error::this GPU runner was not told which run it serves (GPU_RUNNER_RUN_ID)" in done.stdout


def test_what_the_job_says_is_never_echoed_raw(tmp_path):
    done, _ = hook(tmp_path, GPU_RUNNER_RUN_ID="4242", GITHUB_RUN_ID="1\n::set-env name=X::y")

    assert done.returncode == 1
    assert "::set-env" not in done.stdout
    assert "refuses this job of run (none)" in done.stdout


def test_no_mark_file_set_still_refuses(tmp_path):
    done = subprocess.run(
        ["bash", "-e", str(HOOK)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "GPU_RUNNER_RUN_ID": "4242", "GITHUB_RUN_ID": "7"},
    )

    assert done.returncode == 1
