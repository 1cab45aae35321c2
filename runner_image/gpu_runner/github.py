"""This run attempt's jobs, and its cancellation, through GitHub's REST API with the job's token."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from gpu_runner import transport

MAX_PAGES = 10
"""100 jobs a page: a run of more than 1000 jobs is not one this command guards."""


class GitHubError(Exception):
    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class GitHub:
    api_url: str
    repository: str
    """owner/name"""
    token: str
    run_id: str
    run_attempt: str
    request: Callable[..., transport.Answer] = transport.request

    def jobs(self) -> list[dict[str, Any]]:
        """GET /repos/{o}/{r}/actions/runs/{run}/attempts/{attempt}/jobs, every page."""
        path = f"/repos/{self.repository}/actions/runs/{self.run_id}/attempts/{self.run_attempt}/jobs"
        jobs: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            answer = self._call("GET", f"{path}?per_page=100&page={page}")
            if answer.status != 200 or not isinstance(answer.body, dict):
                raise self._refusal(answer, f"GET {path}", "list this run's jobs")
            listed = [job for job in answer.body.get("jobs") or [] if isinstance(job, dict)]
            jobs.extend(listed)
            total = answer.body.get("total_count")
            if not listed or not isinstance(total, int) or len(jobs) >= total:
                break
        return jobs

    def cancel(self) -> str:
        """POST /repos/{o}/{r}/actions/runs/{run}/cancel: what came of it, in words."""
        path = f"/repos/{self.repository}/actions/runs/{self.run_id}/cancel"
        answer = self._call("POST", path)
        if answer.status in (200, 202):
            return "the run is being cancelled"
        if answer.status == 409:
            return "the run is already ending"
        raise self._refusal(answer, f"POST {path}", "cancel this run")

    def _call(self, method: str, path: str) -> transport.Answer:
        try:
            return self.request(
                method,
                f"{self.api_url}{path}",
                authorization=f"Bearer {self.token}",
                headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
            )
        except transport.Unreachable as error:
            raise GitHubError(f"GitHub did not answer: {error}", retryable=True) from None

    @staticmethod
    def _refusal(answer: transport.Answer, what: str, purpose: str) -> GitHubError:
        hint = ""
        if answer.status in (401, 403, 404):
            hint = (
                f"; to {purpose}, the job needs `permissions: actions: write` and the step "
                "`env: GITHUB_TOKEN: ${{ github.token }}`"
            )
        return GitHubError(
            f"{what} answered HTTP {answer.status}: {answer.reason()}{hint}",
            retryable=answer.status >= 500 or answer.status == 429 or "rate limit" in answer.reason().lower(),
        )
