"""The runner broker's GPU runner API, as a job on a base runner calls it.

Every request carries the pod's projected ServiceAccount token, read from its file
each time (the kubelet rotates it), as `Authorization: Bearer`. The broker checks
with GitHub that this pod's runner is running a job of the run it names, so the
run id and attempt come from GitHub Actions' own variables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

from gpu_runner import transport
from runner_contract import GPU_RUNNERS_PATH

RETRYABLE = frozenset({429, 500, 503, 504})
"""The broker or GitHub is busy or restarting: asking again may work. (502 is GitHub refusing.)"""


class BrokerError(Exception):
    """The broker refused, or did not answer; `retryable` says whether asking again may help."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class Broker:
    url: str
    """The broker's base URL, without a trailing slash."""
    token_file: Path
    run_id: str
    run_attempt: str
    request: Callable[..., transport.Answer] = transport.request
    timeout_seconds: float = 30.0

    @property
    def run_path(self) -> str:
        return f"{GPU_RUNNERS_PATH}/{self.run_id}/{self.run_attempt}"

    def create(self, count: int) -> dict[str, Any]:
        """Ask for this run attempt's `count` GPU runners (again: the same ones). {"label", "jobs"}."""
        body = {"runId": self.run_id, "runAttempt": self.run_attempt, "count": count}
        answer = self._call("POST", GPU_RUNNERS_PATH, body)
        if answer.status not in (200, 201):
            raise self._refusal(answer, f"POST {GPU_RUNNERS_PATH}")
        created = answer.body
        if not (
            isinstance(created, dict)
            and isinstance(created.get("label"), str)
            and isinstance(created.get("jobs"), list)
        ):
            raise BrokerError(
                f"the broker's answer to POST {GPU_RUNNERS_PATH} has no label and jobs: {answer.text[:200]!r}"
            )
        return created

    def status(self) -> dict[str, Any]:
        """This run attempt's GPU runners as the broker sees them: {"label", "runners": [...]}."""
        answer = self._call("GET", self.run_path)
        if answer.status == 404:
            return {"label": "", "runners": []}
        if answer.status != 200:
            raise self._refusal(answer, f"GET {self.run_path}")
        status = answer.body
        if not (
            isinstance(status, dict)
            and isinstance(status.get("runners"), list)
            and all(isinstance(runner, dict) for runner in status["runners"])
        ):
            raise BrokerError(
                f"the broker's answer to GET {self.run_path} has no runners: {answer.text[:200]!r}", retryable=True
            )
        return status

    def delete(self) -> list[str]:
        """Delete this run attempt's GPU runners; the names of the Jobs deleted (none: already gone)."""
        answer = self._call("DELETE", self.run_path)
        if answer.status == 404:
            return []
        if answer.status not in (200, 202, 204):
            raise self._refusal(answer, f"DELETE {self.run_path}")
        deleted = answer.body.get("deleted") if isinstance(answer.body, dict) else None
        return [str(name) for name in deleted] if isinstance(deleted, list) else []

    # ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> transport.Answer:
        token = read_token(self.token_file)
        try:
            # The broker is in the cluster: a job's *_proxy variables must not see its token.
            return self.request(
                method,
                f"{self.url}{path}",
                authorization=f"Bearer {token}",
                body=body,
                timeout=self.timeout_seconds,
                proxies=False,
            )
        except transport.Unreachable as error:
            raise BrokerError(f"the broker did not answer: {error}", retryable=True) from None

    @staticmethod
    def _refusal(answer: transport.Answer, what: str) -> BrokerError:
        reason = answer.reason()
        status = answer.status
        if status == 401:
            message = f"the broker refused this pod's token ({what}: HTTP 401: {reason})"
        elif status == 403:
            message = (
                f"the broker refused ({what}: HTTP 403: {reason}); gpu-runner asks for the runners of "
                "the run whose job it runs in: run it in a job of this run on a base runner "
                "(runs-on: base-runner)"
            )
        elif status == 422:
            message = f"the broker refused the request ({what}: HTTP 422: {reason})"
        elif status == 502:
            message = f"GitHub refused the broker ({what}: HTTP 502: {reason})"
        else:
            message = f"{what} answered HTTP {status}: {reason}"
        return BrokerError(message, status=status, retryable=status in RETRYABLE)


def read_token(path: Path) -> str:
    """The token in `path`: one word. Raises BrokerError (not retryable) saying what is wrong."""
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise BrokerError(f"cannot read RUNNER_BROKER_TOKEN_FILE ({path}): {error.__class__.__name__}") from None
    if not token or any(character.isspace() for character in token):
        raise BrokerError(f"RUNNER_BROKER_TOKEN_FILE ({path}) holds no token")
    return token
