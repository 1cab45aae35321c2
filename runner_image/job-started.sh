#!/usr/bin/env bash
# The job-started hook of a GPU runner: startup.sh points ACTIONS_RUNNER_HOOK_JOB_STARTED
# here when the pod's GPU_RUNNER_RUN_ID is set. The runner runs it before the first step
# of the job it took; failing, it fails that job before any of the job's code runs.
#
# A GPU runner serves one workflow run, and its label gpu-runner-<run id> says so, but a
# label is only a request: a job of another run may ask for it too. This refuses such a
# job. It compares GITHUB_RUN_ID, which the runner sets from the job's own run and no
# workflow can override, with GPU_RUNNER_RUN_ID, which comes from the pod: the runner
# starts its hooks with its own environment, not the job's `env:`.
#
# Having refused, it leaves a mark at GPU_RUNNER_REFUSED_JOB_FILE (set by startup.sh),
# so that startup.sh ends non-zero: the runner is spent on the refused job, its Job
# fails, and the run's `gpu-runner guard` cancels the run with the reason.
set -euo pipefail

expected=${GPU_RUNNER_RUN_ID:-}
actual=${GITHUB_RUN_ID:-}
[[ $actual =~ ^[0-9]+$ ]] || actual="(none)"

if [[ ! $expected =~ ^[0-9]+$ ]]; then
  echo "::error::this GPU runner was not told which run it serves (GPU_RUNNER_RUN_ID), so it runs no job"
  exit 1
fi
if [[ $actual != "$expected" ]]; then
  echo "::error::this GPU runner serves workflow run $expected only; it refuses this job of run $actual," \
    "which asked for another run's runner label"
  if [[ -n ${GPU_RUNNER_REFUSED_JOB_FILE:-} ]]; then
    : >"$GPU_RUNNER_REFUSED_JOB_FILE" || true
  fi
  exit 1
fi
echo "this job belongs to workflow run $expected, which this GPU runner serves"
