"""What `start`, `guard` and `stop` share: the clock, retries, and how waiting and failing read in the log."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpu_runner.actions import Log, one_line
from gpu_runner.broker import BrokerError
from gpu_runner.decide import Decision
from gpu_runner.github import GitHubError

T = TypeVar("T")

HEARTBEAT_SECONDS = 60.0
"""An unchanged wait is said again this often, with the time waited."""


@dataclass
class Clock:
    """time.monotonic and time.sleep, or a test's stand-ins."""

    now: Callable[[], float]
    sleep: Callable[[float], None]


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class Waiter:
    """Says what a command waits for when it changes, and every HEARTBEAT_SECONDS otherwise."""

    log: Log
    clock: Clock
    started: float
    _said: str = ""
    _said_at: float = field(default=float("-inf"))

    def elapsed(self) -> float:
        return self.clock.now() - self.started

    def say(self, message: str) -> None:
        now = self.clock.now()
        if message != self._said:
            self.log.line(message)
        elif now - self._said_at >= HEARTBEAT_SECONDS:
            self.log.line(f"{message} ({duration(now - self.started)} so far)")
        else:
            return
        self._said, self._said_at = message, now


def retrying(call: Callable[[], T], waiter: Waiter, deadline: float, pause: float) -> T:
    """`call()`, asked again after a pause while it fails in a way that may pass, until `deadline`."""
    while True:
        try:
            return call()
        except (BrokerError, GitHubError) as error:
            if not error.retryable or waiter.clock.now() + pause > deadline:
                raise
            waiter.say(f"{error}; asking again")
        waiter.clock.sleep(pause)


def show_failure(log: Log, decision: Decision) -> None:
    """The runner's events, the error, and what to do about it."""
    if decision.events:
        log.line(f"events of {decision.runner}:")
        for event in decision.events[-15:]:
            count = event.get("count")
            times = f" (x{count})" if isinstance(count, int) and count > 1 else ""
            log.detail(f"{event.get('type', '')} {event.get('reason', '')}{times}: {event.get('message', '')}")
    log.error(decision.message + (f". {decision.hint}" if decision.hint else ""))


def label_of(created: Mapping[str, Any], expected: str) -> str:
    label = str(created.get("label"))
    if label != expected:
        raise BrokerError(f"the broker named the runners' label {one_line(label, 100)!r}, not {expected!r}")
    return label
