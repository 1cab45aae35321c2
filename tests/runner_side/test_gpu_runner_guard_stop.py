"""`gpu-runner guard` and `gpu-runner stop`, against the broker double and a fake GitHub.

guard takes GitHub's list of this run attempt's jobs as the truth of which job a runner
took (by `runner_name`), and cancels the run when a runner will never take the job
that waits for it.
"""

from __future__ import annotations

import pytest

from fake_broker import FakeBroker, GpuFleet, Reply, gpu_runner, gpu_runners_path, snapshot
from fake_github import FakeGitHub
from gpu_runner_harness import REPOSITORY, RUN_ATTEMPT, RUN_ID, TOKEN, FakeClock, environment, run

JOB = f"gpu-runner-{RUN_ID}-{RUN_ATTEMPT}"
STATUS = gpu_runners_path(RUN_ID, RUN_ATTEMPT)
JOBS = f"/repos/{REPOSITORY}/actions/runs/{RUN_ID}/attempts/{RUN_ATTEMPT}/jobs"
CANCEL = f"/repos/{REPOSITORY}/actions/runs/{RUN_ID}/cancel"
GITHUB_TOKEN = "ghs_fake_job_token_for_guard_tests"


def jobs(*entries: tuple[str, str | None]) -> Reply:
    listed = [
        {
            "id": index,
            "name": name,
            "run_id": int(RUN_ID),
            "runner_name": runner,
            "status": "in_progress" if runner else "queued",
        }
        for index, (name, runner) in enumerate(entries)
    ]
    return Reply(200, {"total_count": len(listed), "jobs": listed})


@pytest.fixture
def broker():
    with FakeBroker() as fake:
        yield fake


@pytest.fixture
def github():
    with FakeGitHub() as fake:
        fake.default(CANCEL, Reply(202, {}))
        yield fake


def guard(tmp_path, broker, github, *options: str, clock: FakeClock | None = None, **env: str):
    env = {"GITHUB_API_URL": github.url, "GITHUB_TOKEN": GITHUB_TOKEN, **env}
    return run(["guard", *options], environment(tmp_path, broker.url, **env), clock)


def statuses(broker: FakeBroker, *states: dict, then: dict | None = None) -> None:
    broker.script(STATUS, *(Reply(200, snapshot(RUN_ID, *runners)) for runners in states))
    if then is not None:
        broker.default(STATUS, Reply(200, snapshot(RUN_ID, *then)))


# ----------------------------------------------------------------------- guard --


def test_guard_ends_once_the_runner_has_taken_this_runs_train(tmp_path, broker, github):
    statuses(broker, [gpu_runner(JOB, "online")], [gpu_runner(JOB, "online")], then=[gpu_runner(JOB, "busy")])
    github.default(JOBS, jobs(("train", JOB), ("start-gpu-runner", "base-runner-abc")))
    result = guard(tmp_path, broker, github)

    assert result.code == 0, result.output
    assert "::notice::the GPU runner has taken 'train' of this run" in result.out
    assert [r.path for r in github.requests] == [JOBS], "GitHub is asked only once the runner is busy"
    assert github.requests[0].headers["authorization"] == f"Bearer {GITHUB_TOKEN}"
    assert "per_page=100" in github.requests[0].query
    assert [r.bearer for r in broker.requests] == [TOKEN] * 3


def test_guard_cancels_the_run_when_another_runs_job_took_the_runner(tmp_path, broker, github):
    """Busy, yet no job of this run shows the runner: after the grace, it is another run's job."""
    statuses(broker, then=[gpu_runner(JOB, "busy")])
    github.default(JOBS, jobs(("train", None)))
    clock = FakeClock()
    result = guard(tmp_path, broker, github, clock=clock)

    assert result.code == 1
    assert 60 <= clock.slept < 70
    [error] = result.errors()
    assert (
        f"GPU runner {JOB} has been running a job that is none of this run's jobs: another run's job took it" in error
    )
    assert "The run is cancelled" in error
    cancels = github.requests_to(CANCEL)
    assert len(cancels) == 1 and cancels[0].method == "POST"
    assert cancels[0].headers["authorization"] == f"Bearer {GITHUB_TOKEN}"


def test_guard_cancels_the_run_when_another_job_of_this_run_took_the_runner(tmp_path, broker, github):
    statuses(broker, then=[gpu_runner(JOB, "busy")])
    github.default(JOBS, jobs(("train", None), ("lint", JOB)))
    clock = FakeClock()
    result = guard(tmp_path, broker, github, "--job", "train", clock=clock)

    assert result.code == 1
    assert clock.sleeps == []
    assert f"GPU runner {JOB} took the job 'lint', not 'train'" in result.errors()[0]
    assert len(github.requests_to(CANCEL)) == 1


@pytest.mark.parametrize(
    "after", [[], [gpu_runner(JOB, "failed", reason="DeadlineExceeded")]], ids=["deleted", "failed"]
)
def test_guard_cancels_the_run_when_the_runner_goes_before_taking_its_job(tmp_path, broker, github, after):
    statuses(broker, [gpu_runner(JOB, "online")], then=after)
    github.default(JOBS, jobs(("train", None)))
    result = guard(tmp_path, broker, github)

    assert result.code == 1
    assert f"GPU runner {JOB}" in result.errors()[0] and "before it took 'train'" in result.errors()[0]
    assert len(github.requests_to(CANCEL)) == 1


def test_guard_cancels_the_run_when_no_job_comes_in_time(tmp_path, broker, github):
    statuses(broker, then=[gpu_runner(JOB, "online")])
    clock = FakeClock()
    result = guard(tmp_path, broker, github, clock=clock, GPU_RUNNER_TIMEOUT_SECONDS="30")

    assert result.code == 1
    assert 30 <= clock.slept <= 35
    assert "took no job in 30s" in result.errors()[0]
    assert [r.path for r in github.requests] == [CANCEL]


def test_guard_cancels_when_the_run_has_no_gpu_runner(tmp_path, broker, github):
    broker.script(STATUS, Reply(404, {"error": "no GPU runners for run 4242 attempt 3"}))
    result = guard(tmp_path, broker, github)

    assert result.code == 1
    assert "this run has no GPU runners" in result.errors()[0]
    assert len(github.requests_to(CANCEL)) == 1


def test_guard_watches_a_matrix_of_runners_until_each_took_an_instance(tmp_path, broker, github):
    second = f"{JOB}-1"
    statuses(
        broker,
        [gpu_runner(JOB, "busy"), gpu_runner(second, "online")],
        then=[gpu_runner(JOB, "finished"), gpu_runner(second, "busy")],
    )
    github.script(JOBS, jobs(("Train (0.01)", JOB), ("Train (0.001)", None)))
    github.default(JOBS, jobs(("Train (0.01)", JOB), ("Train (0.001)", second)))
    result = guard(tmp_path, broker, github, "--job", "Train")

    assert result.code == 0, result.output
    assert "1 of 2 GPU runners have taken their job" in result.out
    assert "all 2 GPU runners have taken 'Train'" in result.out
    assert github.requests_to(CANCEL) == []


def test_guard_pages_through_a_long_list_of_jobs(tmp_path, broker, github):
    statuses(broker, then=[gpu_runner(JOB, "busy")])
    page_one = [{"name": f"job {index}", "run_id": int(RUN_ID), "runner_name": None} for index in range(100)]
    github.script(
        JOBS,
        Reply(200, {"total_count": 101, "jobs": page_one}),
        Reply(200, {"total_count": 101, "jobs": [{"name": "train", "run_id": int(RUN_ID), "runner_name": JOB}]}),
    )
    result = guard(tmp_path, broker, github)

    assert result.code == 0, result.output
    assert [r.query for r in github.requests] == ["per_page=100&page=1", "per_page=100&page=2"]


def test_guard_without_the_jobs_token_is_told_what_to_add(tmp_path, broker, github):
    result = guard(tmp_path, broker, github, GITHUB_TOKEN="")

    assert result.code == 2
    assert "GITHUB_TOKEN: ${{ github.token }}" in result.errors()[0]
    assert "permissions: actions: write" in result.errors()[0]
    assert broker.requests == [] and github.requests == []


def test_guard_that_may_not_read_the_runs_jobs_fails_without_cancelling(tmp_path, broker, github):
    statuses(broker, then=[gpu_runner(JOB, "busy")])
    github.default(JOBS, Reply(403, {"message": "Resource not accessible by integration"}))
    result = guard(tmp_path, broker, github)

    assert result.code == 1
    assert "HTTP 403: Resource not accessible by integration" in result.errors()[0]
    assert "permissions: actions: write" in result.errors()[0]
    assert github.requests_to(CANCEL) == []


def test_guard_says_so_when_the_cancel_itself_fails(tmp_path, broker, github):
    broker.script(STATUS, Reply(404, {"error": "none"}))
    github.default(CANCEL, Reply(403, {"message": "Resource not accessible by integration"}))
    result = guard(tmp_path, broker, github)

    assert result.code == 1
    assert "::warning::could not cancel the run" in result.out
    assert GITHUB_TOKEN not in result.output


# ------------------------------------------------------------------------ stop --


@pytest.fixture
def fleet_broker():
    with FakeBroker(fleet=GpuFleet(gpus=2, max_count=3, token=TOKEN)) as fake:
        yield fake


def test_stop_deletes_the_run_attempts_runners_and_is_idempotent(tmp_path, fleet_broker):
    env = environment(tmp_path, fleet_broker.url)
    assert run(["start", "--count", "2"], env).code == 0

    first, second = run(["stop"], env), run(["stop"], env)

    assert first.code == second.code == 0
    assert f"deleted {JOB}, {JOB}-1: their pods stop" in first.out
    assert "has no GPU runner left: nothing to delete" in second.out
    deletes = [r for r in fleet_broker.requests if r.method == "DELETE"]
    assert [(r.path, r.bearer) for r in deletes] == [(STATUS, TOKEN)] * 2
    assert fleet_broker.fleet.jobs_of(RUN_ID, RUN_ATTEMPT) == []


def test_stop_of_runners_the_broker_no_longer_knows_succeeds(tmp_path, broker):
    broker.script(STATUS, Reply(404, {"error": "no such run"}))
    result = run(["stop"], environment(tmp_path, broker.url))

    assert result.code == 0, result.output
    assert "nothing to delete" in result.out


def test_stop_asks_an_unavailable_broker_again(tmp_path, broker):
    broker.script(STATUS, Reply(503, {"error": "restarting"}), Reply(200, {"deleted": [JOB]}))
    clock = FakeClock()
    result = run(["stop"], environment(tmp_path, broker.url), clock)

    assert result.code == 0, result.output
    assert clock.sleeps == [5.0]


@pytest.mark.parametrize("status", [403, 401])
def test_stop_refused_fails_and_says_the_sweep_cleans_up(tmp_path, broker, status):
    broker.script(STATUS, Reply(status, {"error": "not a job of this run"}))
    result = run(["stop"], environment(tmp_path, broker.url))

    assert result.code == 1
    assert "The broker's sweep deletes them once the run has completed" in result.errors()[0]
