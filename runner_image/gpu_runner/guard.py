"""`gpu-runner guard`: every GPU runner of this run takes one of this run's expected jobs, or the run ends.

A GPU runner serves one run, but its label is only a label: a job of another run, or
another job of this one, may ask for it. The runner's job-started hook refuses another
run's job, and this checks, through GitHub's record of this run attempt's jobs, that each
runner took an expected job by name and run id. If a runner goes, fails, or takes
something else first, the expected job would wait for a runner for a day: the run is
cancelled instead, saying why.
"""

from __future__ import annotations

from gpu_runner.actions import Log
from gpu_runner.broker import Broker, BrokerError
from gpu_runner.decide import BUSY_OR_DONE, FAIL, READY, WAIT, Decision, guard_decision
from gpu_runner.github import GitHub, GitHubError
from gpu_runner.waiting import Clock, Waiter, duration

GRACE_SECONDS = 60.0
"""How long a busy runner may show no job of this run before it counts as another run's:
GitHub lists a job's runner a few seconds after the runner says it is busy."""


def guard(
    broker: Broker, github: GitHub, expected: list[str], log: Log, clock: Clock, *, timeout: float, poll: float
) -> int:
    waiter = Waiter(log, clock, clock.now())
    known: set[str] = set()
    unexplained_since: dict[str, float] = {}
    wanted = " or ".join(f"'{name}'" for name in expected)
    log.line(f"watching run {broker.run_id}'s GPU runners until each has taken {wanted}")
    while True:
        now = clock.now()
        try:
            decision = _look(broker, github, expected, known, unexplained_since, now, waiter.elapsed(), timeout)
        except (BrokerError, GitHubError) as error:
            if not error.retryable:
                log.error(f"cannot guard the GPU runners: {error}")
                return 1
            decision = Decision(FAIL if waiter.elapsed() >= timeout else WAIT, f"looking again: {error}")
        if decision.verdict == READY:
            log.notice(f"{decision.message} (after {duration(waiter.elapsed())})")
            return 0
        if decision.verdict == FAIL:
            _cancel(github, log)
            log.error(f"{decision.message}. The run is cancelled rather than left waiting")
            return 1
        waiter.say(decision.message)
        clock.sleep(poll)


def _look(
    broker: Broker,
    github: GitHub,
    expected: list[str],
    known: set[str],
    unexplained_since: dict[str, float],
    now: float,
    elapsed: float,
    timeout: float,
) -> Decision:
    runners = broker.status()["runners"]
    names = {str(runner.get("job")) for runner in runners}
    gone = known - names
    known |= names
    for runner in runners:
        name = str(runner.get("job"))
        if runner.get("state") in BUSY_OR_DONE or runner.get("runnerBusy"):
            unexplained_since.setdefault(name, now)
        else:
            unexplained_since.pop(name, None)
    # GitHub is asked only once some runner may have a job to show.
    jobs = github.jobs() if gone or unexplained_since else []
    unexplained = {name: now - since for name, since in unexplained_since.items()}
    return guard_decision(runners, gone, jobs, expected, broker.run_id, unexplained, GRACE_SECONDS, elapsed, timeout)


def _cancel(github: GitHub, log: Log) -> None:
    try:
        log.line(github.cancel())
    except GitHubError as error:
        log.warning(f"could not cancel the run: {error}")
