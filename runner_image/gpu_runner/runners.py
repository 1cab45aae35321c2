"""`gpu-runner start` and `gpu-runner stop`: this run attempt's GPU runners asked for, waited on, deleted."""

from __future__ import annotations

from pathlib import Path

from gpu_runner.actions import Log
from gpu_runner.broker import Broker, BrokerError
from gpu_runner.decide import FAIL, READY, WAIT, Decision, start_decision
from gpu_runner.waiting import Clock, Waiter, duration, label_of, retrying, show_failure
from runner_contract import gpu_runner_label

STOP_SECONDS = 120.0
"""How long `stop` keeps asking a broker that is unavailable."""


def start(
    broker: Broker, count: int, log: Log, clock: Clock, *, timeout: float, poll: float, github_output: Path | None
) -> int:
    """Ask the broker for `count` GPU runners, then wait until all are online (0) or one never will be (1)."""
    waiter = Waiter(log, clock, clock.now())
    deadline = waiter.started + timeout
    noun = "a GPU runner" if count == 1 else f"{count} GPU runners"
    log.line(f"asking the runner broker for {noun} for run {broker.run_id}, attempt {broker.run_attempt}")
    try:
        created = retrying(lambda: broker.create(count), waiter, deadline, poll)
        label = label_of(created, gpu_runner_label(broker.run_id))
    except BrokerError as error:
        log.error(f"no GPU runner: {error}")
        return 1
    log.line(f"the broker gave this run {', '.join(map(str, created['jobs'])) or 'no Job'} (runner label {label})")
    if github_output is not None:
        with github_output.open("a") as outputs:
            outputs.write(f"label={label}\n")

    while True:
        try:
            snapshot = broker.status()
        except BrokerError as error:
            if not error.retryable:
                log.error(f"cannot follow the GPU runners: {error}")
                return 1
            decision = Decision(FAIL if waiter.elapsed() >= timeout else WAIT, f"the broker is unavailable ({error})")
        else:
            decision = start_decision(snapshot, count, waiter.elapsed(), timeout)
        if decision.verdict == READY:
            log.notice(f"{decision.message} (label {label}, after {duration(waiter.elapsed())})")
            return 0
        if decision.verdict == FAIL:
            show_failure(log, decision)
            return 1
        waiter.say(decision.message)
        clock.sleep(poll)


def stop(broker: Broker, log: Log, clock: Clock, *, poll: float) -> int:
    """Delete this run attempt's GPU runners; 0 also when they are already gone."""
    waiter = Waiter(log, clock, clock.now())
    try:
        deleted = retrying(broker.delete, waiter, waiter.started + STOP_SECONDS, poll)
    except BrokerError as error:
        log.error(
            f"could not delete this run's GPU runners: {error}. The broker's sweep deletes them once "
            "the run has completed"
        )
        return 1
    if deleted:
        log.line(f"deleted {', '.join(deleted)}: their pods stop, and the broker removes their runners from GitHub")
    else:
        log.line(f"run {broker.run_id}, attempt {broker.run_attempt} has no GPU runner left: nothing to delete")
    return 0
