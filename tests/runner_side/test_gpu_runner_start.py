"""`gpu-runner start` against a broker double that keeps GPU runners as a quota-bound cluster would.

In-process, real HTTP on 127.0.0.1, a fake clock: waiting costs no time.
"""

from __future__ import annotations

import json

import pytest

from fake_broker import GPU_RUNNERS, FakeBroker, GpuFleet, Reply, gpu_runner, gpu_runners_path, snapshot
from gpu_runner_harness import RUN_ATTEMPT, RUN_ID, TOKEN, FakeClock, environment, run

JOB = f"gpu-runner-{RUN_ID}-{RUN_ATTEMPT}"
STATUS = gpu_runners_path(RUN_ID, RUN_ATTEMPT)


@pytest.fixture
def fleet():
    return GpuFleet(gpus=2, max_count=3, token=TOKEN)


@pytest.fixture
def broker(fleet):
    with FakeBroker(fleet=fleet) as fake:
        yield fake


@pytest.fixture
def scripted():
    """A broker whose status answers are scripted: it grants the runner, then says what the test says."""
    with FakeBroker() as fake:
        fake.default(GPU_RUNNERS, Reply(201, {"label": f"gpu-runner-{RUN_ID}", "jobs": [JOB]}))
        yield fake


def test_start_asks_for_this_run_attempts_runner_and_waits_until_it_is_online(tmp_path, broker):
    outputs = tmp_path / "github_output"
    clock = FakeClock()
    result = run(["start"], environment(tmp_path, broker.url, GITHUB_OUTPUT=str(outputs)), clock)

    assert result.code == 0, result.output
    ask = broker.requests[0]
    assert (ask.method, ask.path, ask.bearer) == ("POST", GPU_RUNNERS, TOKEN)
    assert json.loads(ask.body) == {"runId": RUN_ID, "runAttempt": RUN_ATTEMPT, "count": 1}
    assert {(r.method, r.path) for r in broker.requests[1:]} == {("GET", STATUS)}
    assert "waiting for a GPU node: the autoscaler is adding one" in result.out
    assert "waiting for the runner to start" in result.out
    assert f"::notice::the GPU runner is up: {JOB} (label gpu-runner-{RUN_ID}" in result.out
    assert outputs.read_text() == f"label=gpu-runner-{RUN_ID}\n"
    assert clock.sleeps == [5.0, 5.0]


def test_a_third_concurrent_run_waits_for_the_quota_then_starts_when_a_gpu_frees(tmp_path, broker, fleet):
    """Two GPUs: runs 1 and 2 hold them; run 3 waits (QuotaExceeded) until run 1 stops."""
    first, second, third = (
        environment(tmp_path, broker.url, run_id=run_id, run_attempt="1") for run_id in ("101", "102", "103")
    )
    assert run(["start"], first).code == 0
    assert run(["start"], second).code == 0

    def first_run_ends(sleeps: int) -> None:
        if sleeps == 4:  # run 1's last job ends, and its stop job deletes its runner
            assert run(["stop"], first).code == 0

    clock = FakeClock(on_sleep=first_run_ends)
    result = run(["start"], third, clock)

    assert result.code == 0, result.output
    assert "waiting: the GPU quota is in use by other runs (2 of 2); this run starts when one ends" in result.out
    assert result.out.count("the GPU quota is in use") == 1, "an unchanged wait is said once (within a minute)"
    assert "::notice::the GPU runner is up: gpu-runner-103-1" in result.out
    assert fleet.jobs_of(101, 1) == [] and fleet.jobs_of(103, 1) == ["gpu-runner-103-1"]
    assert len(clock.sleeps) == 6  # 4 waiting for the GPU, then scheduling and starting


def test_a_long_wait_is_said_again_every_minute_with_the_time_so_far(tmp_path, broker, fleet):
    fleet.gpus = 1
    holder, waiter = (environment(tmp_path, broker.url, run_id=run_id, run_attempt="1") for run_id in ("101", "102"))
    assert run(["start"], holder).code == 0

    def holder_ends(sleeps: int) -> None:
        if sleeps == 30:
            assert run(["stop"], holder).code == 0

    result = run(["start"], waiter, FakeClock(on_sleep=holder_ends))

    assert result.code == 0, result.output
    said = [line for line in result.out.splitlines() if "the GPU quota is in use by other runs (1 of 1)" in line]
    assert [line.rpartition("ends")[2] for line in said] == ["", " (1m00s so far)", " (2m00s so far)"]


def test_count_3_asks_for_three_runners_and_waits_for_all_of_them(tmp_path, fleet, broker):
    fleet.gpus = 3
    outputs = tmp_path / "github_output"
    clock = FakeClock()
    result = run(["start", "--count", "3"], environment(tmp_path, broker.url, GITHUB_OUTPUT=str(outputs)), clock)

    assert result.code == 0, result.output
    assert json.loads(broker.requests[0].body)["count"] == 3
    jobs = [JOB, f"{JOB}-1", f"{JOB}-2"]
    assert fleet.jobs_of(RUN_ID, RUN_ATTEMPT) == jobs
    assert f"the broker gave this run {', '.join(jobs)} (runner label gpu-runner-{RUN_ID})" in result.out
    assert f"2 of 3 GPU runners up; {JOB}-2: waiting for the runner to start" in result.out
    assert f"::notice::all 3 GPU runners are up: {', '.join(jobs)}" in result.out
    assert len(clock.sleeps) == 4  # the slowest runner's scheduling, starting, starting, starting
    assert outputs.read_text() == f"label=gpu-runner-{RUN_ID}\n"


def test_a_bad_image_fails_at_once_with_the_reason_the_events_and_a_hint(tmp_path, scripted):
    pulling = gpu_runner(
        JOB,
        "starting",
        reason="ErrImagePull",
        message="pull access denied",
        events=[
            {"type": "Normal", "reason": "Scheduled", "message": "assigned to gke-gpu-1", "count": 1},
            {"type": "Warning", "reason": "Failed", "message": "Failed to pull image: 403 Forbidden", "count": 3},
        ],
    )
    scripted.script(
        STATUS, Reply(200, snapshot(RUN_ID, gpu_runner(JOB, "scheduling"))), Reply(200, snapshot(RUN_ID, pulling))
    )
    clock = FakeClock()
    result = run(["start"], environment(tmp_path, scripted.url), clock)

    assert result.code == 1
    assert len(clock.sleeps) == 1
    [error] = result.errors()
    assert f"GPU runner {JOB} cannot start: the image cannot be pulled (ErrImagePull: pull access denied)" in error
    assert "pulumi up" in error
    assert f"events of {JOB}:" in result.out
    assert "  Warning Failed (x3): Failed to pull image: 403 Forbidden" in result.out


def test_it_gives_up_after_its_timeout_saying_what_it_waited_for(tmp_path, scripted):
    scripted.default(STATUS, Reply(200, snapshot(RUN_ID, gpu_runner(JOB, "scheduling", reason="TriggeredScaleUp"))))
    clock = FakeClock()
    result = run(["start"], environment(tmp_path, scripted.url, GPU_RUNNER_TIMEOUT_SECONDS="30"), clock)

    assert result.code == 1
    assert 30 <= clock.slept <= 35
    [error] = result.errors()
    assert "not up after 30s (waiting for a GPU node: the autoscaler is adding one)" in error


@pytest.mark.parametrize(
    "status, body, words",
    [
        (
            403,
            {"error": "the caller's runner is not running a job of run 4242"},
            "HTTP 403: the caller's runner is not running a job of run 4242",
        ),
        (
            422,
            {"error": "count must be 1 to 2"},
            "the broker refused the request (POST /v1/gpu-runners: HTTP 422: count",
        ),
        (401, {"error": "invalid token"}, "the broker refused this pod's token"),
        (502, {"error": "GitHub refused the broker's credential"}, "GitHub refused the broker"),
    ],
)
def test_a_refusal_fails_at_once(tmp_path, broker, status, body, words):
    broker.script(GPU_RUNNERS, Reply(status, body))
    clock = FakeClock()
    result = run(["start"], environment(tmp_path, broker.url), clock)

    assert result.code == 1
    assert clock.sleeps == []
    [error] = result.errors()
    assert words in error
    assert [r.path for r in broker.requests] == [GPU_RUNNERS]


def test_a_job_of_another_run_is_refused_and_too_many_runners_too(tmp_path, broker, fleet):
    fleet.refused_runs = {"999"}
    other = run(["start"], environment(tmp_path, broker.url, run_id="999"))
    too_many = run(["start", "--count", "4"], environment(tmp_path, broker.url))

    assert other.code == too_many.code == 1
    assert "HTTP 403: the caller's runner is not running a job of run 999" in other.errors()[0]
    assert "run it in a job of this run on a base runner (runs-on: base-runner)" in other.errors()[0]
    assert "HTTP 422: count must be 1 to 3" in too_many.errors()[0]
    assert fleet.jobs_of(999, RUN_ATTEMPT) == fleet.jobs_of(RUN_ID, RUN_ATTEMPT) == []


def test_an_unavailable_broker_is_asked_again(tmp_path, broker):
    broker.script(GPU_RUNNERS, Reply(503, {"error": "GitHub is unavailable"}), Reply(503, "not json"))
    broker.script(STATUS, Reply(500, {"error": "restarting"}))
    clock = FakeClock()
    result = run(["start"], environment(tmp_path, broker.url), clock)

    assert result.code == 0, result.output
    assert [r.method for r in broker.requests][:3] == ["POST"] * 3
    assert "HTTP 503: GitHub is unavailable; asking again" in result.out
    assert "the broker is unavailable (GET" in result.out


def test_a_broker_that_never_answers_ends_the_wait_at_the_timeout(tmp_path):
    with FakeBroker(listening=False) as broker:
        clock = FakeClock()
        result = run(["start"], environment(tmp_path, broker.url, GPU_RUNNER_TIMEOUT_SECONDS="20"), clock)

    assert result.code == 1
    assert clock.slept <= 20
    [error] = result.errors()
    assert "the broker did not answer: POST" in error and broker.url in error


def test_the_token_file_is_read_again_for_each_request(tmp_path, broker, fleet):
    fleet.token = ""
    env = environment(tmp_path, broker.url)
    rotated = "fake-projected-token.after-rotation.0002"

    def rotate(sleeps: int) -> None:
        (tmp_path / "broker-token").write_text(rotated + "\n")

    assert run(["start"], env, FakeClock(on_sleep=rotate)).code == 0
    assert [r.bearer for r in broker.requests] == [TOKEN, TOKEN, rotated, rotated]


def test_asking_again_gets_the_same_runners(tmp_path, broker, fleet):
    env = environment(tmp_path, broker.url)

    assert run(["start"], env).code == 0
    assert run(["start"], env).code == 0
    assert fleet.jobs_of(RUN_ID, RUN_ATTEMPT) == [JOB]
