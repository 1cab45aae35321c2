"""The pure decisions of `gpu-runner start` and `gpu-runner guard`, table by table."""

from __future__ import annotations

import pytest

import gpu_runner_harness  # noqa: F401 - puts the package on sys.path
from fake_broker import gpu_runner, snapshot
from gpu_runner.decide import FAIL, READY, WAIT, gpu_quota, guard_decision, job_matches, runner_decision, start_decision

JOB = "gpu-runner-4242-3"
QUOTA = (
    'pods "gpu-runner-4242-3-x7k2p" is forbidden: exceeded quota: gpu-runners, requested: '
    "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=2, limited: requests.nvidia.com/gpu=2"
)
AT_MAX = (
    "pod didn't trigger scale-up: 1 max node group size reached, 1 node(s) didn't match Pod's node affinity/selector"
)
NEVER_FITS = (
    "pod didn't trigger scale-up: 2 node(s) didn't match Pod's node affinity/selector, 1 Insufficient nvidia.com/gpu"
)
GCE_QUOTA = (
    "Node scale up in zones us-central1-a associated with this pod failed: GCE quota exceeded. "
    "Pod is at risk of not being scheduled."
)
STOCKOUT = (
    "Node scale up in zones us-central1-a associated with this pod failed: GCE out of resources. "
    "Pod is at risk of not being scheduled."
)
PULL_EVENT = {"type": "Warning", "reason": "Failed", "message": "Failed to pull image: 403 Forbidden", "count": 3}


# ------------------------------------------------------------------- one runner --


@pytest.mark.parametrize(
    "runner, verdict, words",
    [
        # Up.
        (gpu_runner(JOB, "online"), READY, "is online"),
        (gpu_runner(JOB, "busy"), READY, "is busy"),
        (gpu_runner(JOB, "finished"), READY, "is finished"),
        (gpu_runner(JOB, "starting", runner_status="online"), READY, "is online"),
        # Waiting is the rule.
        (gpu_runner(JOB, "pending", pod=None), WAIT, "waiting for the runner's pod to be created"),
        (
            gpu_runner(JOB, "pending", pod=None, reason="QuotaExceeded", message=QUOTA),
            WAIT,
            "waiting: the GPU quota is in use by other runs (2 of 2); this run starts when one ends",
        ),
        (
            gpu_runner(JOB, "pending", pod=None, reason="QuotaExceeded", message="exceeded quota"),
            WAIT,
            "the GPU quota is in use by other runs; this run starts",
        ),
        (gpu_runner(JOB, "scheduling"), WAIT, "waiting for a GPU node"),
        (
            gpu_runner(JOB, "scheduling", reason="TriggeredScaleUp", message="pod triggered scale-up"),
            WAIT,
            "waiting for a GPU node: the autoscaler is adding one",
        ),
        (
            gpu_runner(
                JOB,
                "scheduling",
                reason="Unschedulable",
                message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu",
            ),
            WAIT,
            "none has a free GPU",
        ),
        (
            gpu_runner(JOB, "scheduling", reason="NotTriggerScaleUp", message=AT_MAX),
            WAIT,
            "every GPU node is taken and the GPU pool is at its maximum size",
        ),
        (
            gpu_runner(
                JOB,
                "scheduling",
                reason="NotTriggerScaleUp",
                message="pod didn't trigger scale-up: 1 in backoff after failed scale-up",
            ),
            WAIT,
            "maximum size",
        ),
        (
            gpu_runner(JOB, "scheduling", reason="FailedScaleUp", message=STOCKOUT),
            WAIT,
            "Compute Engine has none free in the zone right now",
        ),
        (
            gpu_runner(JOB, "scheduling", reason="FailedScaleUp", message="failed: Internal error"),
            WAIT,
            "a scale-up failed, the autoscaler tries again",
        ),
        (gpu_runner(JOB, "starting"), WAIT, "waiting for the runner to start"),
        (gpu_runner(JOB, "starting", reason="ContainerCreating"), WAIT, "waiting for the runner to start"),
        (gpu_runner(JOB, "mystery"), WAIT, "waiting (mystery)"),
        # Failing fast, only for what waiting cannot fix.
        (
            gpu_runner(JOB, "starting", reason="ImagePullBackOff", message="403 Forbidden", events=[PULL_EVENT]),
            FAIL,
            "the image cannot be pulled (ImagePullBackOff: 403 Forbidden)",
        ),
        (gpu_runner(JOB, "starting", reason="ErrImagePull", message="not found"), FAIL, "cannot be pulled"),
        (gpu_runner(JOB, "starting", reason="InvalidImageName", message="bad"), FAIL, "cannot be pulled"),
        (
            gpu_runner(JOB, "starting", reason="CreateContainerConfigError", message='secret "x" not found'),
            FAIL,
            'CreateContainerConfigError: secret "x" not found',
        ),
        (gpu_runner(JOB, "starting", reason="CrashLoopBackOff"), FAIL, "CrashLoopBackOff"),
        (
            gpu_runner(JOB, "scheduling", reason="NotTriggerScaleUp", message=NEVER_FITS),
            FAIL,
            "no node pool could ever take it",
        ),
        (gpu_runner(JOB, "scheduling", reason="FailedScaleUp", message=GCE_QUOTA), FAIL, "the GPU pool cannot grow"),
        (
            gpu_runner(
                JOB, "pending", pod=None, reason="QuotaExceeded", message=QUOTA.replace("gpu=1, used", "gpu=4, used")
            ),
            FAIL,
            "asks for 4 GPUs, the quota allows 2",
        ),
        (
            gpu_runner(JOB, "failed", reason="DeadlineExceeded", message="Job was active longer than specified"),
            FAIL,
            "failed: DeadlineExceeded",
        ),
        (gpu_runner(JOB, "failed", reason="BackoffLimitExceeded"), FAIL, "BackoffLimitExceeded"),
        (gpu_runner(JOB, "failed"), FAIL, "its Job failed"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 20 else None,
)
def test_runner_decision(runner, verdict, words):
    decision = runner_decision(runner)

    assert decision.verdict == verdict, decision
    assert words in decision.message
    assert decision.runner == JOB
    if verdict == FAIL:
        assert decision.hint, "a failure says what to do"


def test_a_failure_carries_the_runners_events_and_a_hint():
    decision = runner_decision(
        gpu_runner(JOB, "starting", reason="ImagePullBackOff", message="403", events=[PULL_EVENT])
    )

    assert decision.events == (PULL_EVENT,)
    assert "pulumi up" in decision.hint


def test_a_multi_line_message_stays_on_one_line():
    decision = runner_decision(gpu_runner(JOB, "starting", reason="ErrImagePull", message="a\n::error::b\r\nc"))

    assert "\n" not in decision.message and "\r" not in decision.message


@pytest.mark.parametrize(
    "message, expected",
    [
        (QUOTA, (1, 2, 2)),
        (
            (
                "exceeded quota: q, requested: limits.cpu=1,requests.nvidia.com/gpu=2, "
                "used: requests.nvidia.com/gpu=0, "
                "limited: limits.cpu=8,requests.nvidia.com/gpu=1"
            ),
            (2, 0, 1),
        ),
        ("exceeded quota: q, requested: cpu=1, used: cpu=1, limited: cpu=1", (None, None, None)),
        ("forbidden", (None, None, None)),
    ],
)
def test_gpu_quota_reads_the_resourcequota_refusal(message, expected):
    assert gpu_quota(message) == expected


# ------------------------------------------------------------------- a run's runners --


def runners(*states: str) -> dict:
    return snapshot(4242, *(gpu_runner(f"{JOB}{'-' + str(i) if i else ''}", state) for i, state in enumerate(states)))


@pytest.mark.parametrize(
    "status, count, elapsed, verdict, words",
    [
        (runners("online"), 1, 0, READY, f"the GPU runner is up: {JOB}"),
        (runners("busy"), 1, 0, READY, "the GPU runner is up"),
        (runners("pending"), 1, 0, WAIT, "waiting for the runner's pod to be created"),
        (runners("online", "online", "online"), 3, 0, READY, f"all 3 GPU runners are up: {JOB}, {JOB}-1, {JOB}-2"),
        (
            runners("online", "scheduling", "online"),
            3,
            0,
            WAIT,
            f"2 of 3 GPU runners up; {JOB}-1: waiting for a GPU node",
        ),
        (runners("online"), 3, 0, WAIT, "waiting for the broker to list this run's GPU runners (1 of 3)"),
        (snapshot(4242), 1, 0, WAIT, "waiting for the broker to list this run's GPU runners (0 of 1)"),
        (runners("online", "failed"), 2, 0, FAIL, f"GPU runner {JOB}-1 failed"),
        (runners("scheduling"), 1, 1199, WAIT, "waiting for a GPU node"),
        (runners("scheduling"), 1, 1200, FAIL, "the GPU runners are not up after 1200s (waiting for a GPU node)"),
        (runners("online", "starting"), 2, 1200, FAIL, "not up after 1200s (1 of 2 GPU runners up"),
    ],
)
def test_start_decision(status, count, elapsed, verdict, words):
    decision = start_decision(status, count, elapsed, 1200)

    assert decision.verdict == verdict, decision
    assert words in decision.message, decision.message


def test_giving_up_says_what_it_waited_for_and_what_to_do():
    decision = start_decision(runners("scheduling"), 1, 1200, 1200)

    assert "GPU_RUNNER_TIMEOUT_SECONDS" in decision.hint and "gpuMaxNodes" in decision.hint


# ------------------------------------------------------------------------- guard --


def job(name: str, runner: str | None, run_id: int = 4242) -> dict:
    return {"name": name, "run_id": run_id, "runner_name": runner, "status": "in_progress" if runner else "queued"}


@pytest.mark.parametrize(
    "name, expected, matches",
    [
        ("train", ["train"], True),
        ("train (0.01)", ["train"], True),
        ("train (0.01, a)", ["train"], True),
        ("training", ["train"], False),
        ("train-and-report", ["train"], False),
        ("evaluate", ["train", "evaluate"], True),
        ("Train", ["train"], False),
    ],
)
def test_job_matches_the_name_or_a_matrix_instance_of_it(name, expected, matches):
    assert job_matches(name, expected) is matches


def guard(runners_now, jobs, *, gone=(), expected=("train",), unexplained=None, elapsed=0.0):
    return guard_decision(runners_now, gone, jobs, list(expected), "4242", unexplained or {}, 60, elapsed, 600)


ONLINE = gpu_runner(JOB, "online")
BUSY = gpu_runner(JOB, "busy")
FINISHED = gpu_runner(JOB, "finished")


@pytest.mark.parametrize(
    "runners_now, jobs, options, verdict, words",
    [
        ([BUSY], [job("train", JOB)], {}, READY, "the GPU runner has taken 'train' of this run"),
        ([FINISHED], [job("train", JOB)], {}, READY, "taken 'train'"),
        ([], [job("train", JOB)], {"gone": [JOB]}, READY, "taken 'train'"),
        ([ONLINE], [job("train", None)], {}, WAIT, f"waiting for GPU runner {JOB} (online) to take 'train'"),
        ([BUSY], [job("train", None)], {"unexplained": {JOB: 10}}, WAIT, "is busy; looking for its job"),
        ([BUSY], [job("train", None)], {"unexplained": {JOB: 60}}, FAIL, "none of this run's jobs: another run's job"),
        ([FINISHED], [job("train", None)], {"unexplained": {JOB: 60}}, FAIL, "ran a job that is none of this run's"),
        ([BUSY], [job("train", None), job("lint", JOB)], {}, FAIL, "took the job 'lint', not 'train'"),
        ([BUSY], [job("train", JOB, run_id=99)], {}, FAIL, "took the job 'train', not 'train'"),
        ([gpu_runner(JOB, "failed")], [job("train", None)], {}, FAIL, "failed before it took 'train'"),
        ([], [job("train", None)], {"gone": [JOB]}, FAIL, f"GPU runner {JOB} is gone before it took 'train'"),
        ([], [], {}, FAIL, "this run has no GPU runners"),
        ([ONLINE], [], {"elapsed": 600}, FAIL, "took no job in 600s"),
        (
            [BUSY, gpu_runner(f"{JOB}-1", "busy")],
            [job("train (a)", JOB), job("train (b)", f"{JOB}-1")],
            {},
            READY,
            "all 2 GPU runners have taken 'train'",
        ),
        (
            [BUSY, gpu_runner(f"{JOB}-1", "online")],
            [job("train (a)", JOB), job("train (b)", None)],
            {},
            WAIT,
            "1 of 2 GPU runners have taken their job",
        ),
        (
            [BUSY, gpu_runner(f"{JOB}-1", "busy")],
            [job("train", JOB), job("evaluate", f"{JOB}-1")],
            {"expected": ["train", "evaluate"]},
            READY,
            "'train' or 'evaluate'",
        ),
    ],
)
def test_guard_decision(runners_now, jobs, options, verdict, words):
    decision = guard(runners_now, jobs, **options)

    assert decision.verdict == verdict, decision
    assert words in decision.message, decision.message
