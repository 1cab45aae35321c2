"""The repository's self-hosted runners and workflow runs, as the runner credential (a PAT or an App) sees them.

Every call goes through `_call`: one bounded exchange, the credential's Authorization
header, an App installation token replaced at once when GitHub revokes it early, and a
refusal that says which credential and which permission.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime
from urllib.parse import quote, urlsplit

from runner_broker.app_jwt import app_jwt
from runner_broker.config import AppCredential, Config, PatCredential
from runner_broker.errors import GitHubRefused, GitHubUnavailable
from runner_broker.http import USER_AGENT, HttpAnswer, Unanswered, exchange
from runner_broker.model import JitConfig, Runner, Runners, WorkflowJob, WorkflowRun
from runner_broker.secrets import Secret, read_file, read_token

PER_PAGE = 100
MAX_PAGES = 100  # 10,000 runners or jobs: far beyond one repository's, and a bound on a looping API
APP_TOKEN_MARGIN_SECONDS = 300  # an installation token is renewed this long before it expires
# What the broker does with an installation token, and no more: runners (Administration),
# and reading runs and their jobs (Actions).
APP_PERMISSIONS = {"administration": "write", "actions": "read"}
ADMINISTRATION = "Administration: read and write (classic PAT: repo scope; App: administration write)"
ACTIONS = "Actions: read (classic PAT: repo scope; App: actions read)"


class GitHubClient:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self._repository = config.repository
        self._repository_name = config.repository_name
        self._repo_path = f"/repos/{config.repository}"
        self._runners_path = f"{self._repo_path}/actions/runners"
        self._api = config.github_api_url
        self._retry = config.github_retry
        self._credential = config.credential
        self._clock = clock
        self._tls = ssl.create_default_context() if urlsplit(self._api).scheme == "https" else None
        self._app_token_lock = threading.Lock()
        self._app_token: tuple[str, Secret, float] | None = None
        """The installation token, with the digest of the key that got it and when to renew it."""

    # ------------------------------------------------------------------ runners --

    def list_runners(self) -> Runners:
        runners: list[Runner] = []
        for page in range(1, MAX_PAGES + 1):
            body = self._get_json(
                f"{self._runners_path}?per_page={PER_PAGE}&page={page}",
                "listing the repository's runners",
                ADMINISTRATION,
            )
            items = _items(body, "runners")
            total = body.get("total_count")
            runners.extend(runner for runner in map(_runner, items) if runner is not None)
            if len(items) < PER_PAGE or (isinstance(total, int) and page * PER_PAGE >= total):
                return Runners(runners, complete=True)
        return Runners(runners, complete=False)

    def find_runner(self, name: str) -> Runner | None:
        body = self._get_json(
            f"{self._runners_path}?name={quote(name, safe='')}", f"looking up runner {name}", ADMINISTRATION
        )
        return next((r for r in map(_runner, _items(body, "runners")) if r is not None and r.name == name), None)

    def generate_jit_config(self, name: str, labels: tuple[str, ...]) -> JitConfig | None:
        """A new runner's JIT config; None when GitHub already has a runner of that name."""
        request = {"name": name, "runner_group_id": 1, "labels": list(labels), "work_folder": "_work"}
        answer = self._call(
            "POST",
            f"{self._runners_path}/generate-jitconfig",
            request,
            operation=f"generating a JIT config for runner {name}",
            permission=ADMINISTRATION,
            tolerated=(409,),
        )
        if answer.status == 409:
            return None
        body = answer.json()
        encoded = body.get("encoded_jit_config") if isinstance(body, dict) else None
        runner = body.get("runner") if isinstance(body, dict) else None
        if not isinstance(encoded, str) or not encoded or not isinstance(runner, dict):
            raise GitHubUnavailable(
                f"GitHub answered generate-jitconfig for {name} without a runner and its encoded_jit_config"
            )
        runner_id = runner.get("id")
        return JitConfig(runner_id if isinstance(runner_id, int) else 0, Secret(encoded))

    def delete_runner(self, runner_id: int) -> str:
        """Remove a runner: "removed", "gone" (GitHub no longer had it) or "busy" (refused while it runs a job)."""
        answer = self._call(
            "DELETE",
            f"{self._runners_path}/{runner_id}",
            operation=f"removing runner {runner_id}",
            permission=ADMINISTRATION,
            tolerated=(404, 422),
        )
        return {404: "gone", 422: "busy"}.get(answer.status, "removed")

    # --------------------------------------------------------------------- runs --

    def run_jobs(self, run_id: str, attempt: str) -> list[WorkflowJob]:
        """The jobs of one attempt of a workflow run, every page."""
        jobs: list[WorkflowJob] = []
        path = f"{self._repo_path}/actions/runs/{run_id}/attempts/{attempt}/jobs"
        for page in range(1, MAX_PAGES + 1):
            body = self._get_json(
                f"{path}?per_page={PER_PAGE}&page={page}",
                f"listing the jobs of run {run_id} attempt {attempt}",
                ACTIONS,
                tolerated=(404,),
            )
            items = _items(body, "jobs")
            jobs.extend(job for job in map(_workflow_job, items) if job is not None)
            total = body.get("total_count")
            if len(items) < PER_PAGE or (isinstance(total, int) and page * PER_PAGE >= total):
                break
        return jobs

    def run(self, run_id: str) -> WorkflowRun | None:
        """A workflow run's status and latest attempt; None when GitHub has no such run."""
        answer = self._call(
            "GET",
            f"{self._repo_path}/actions/runs/{run_id}",
            operation=f"reading run {run_id}",
            permission=ACTIONS,
            tolerated=(404,),
        )
        if answer.status == 404:
            return None
        body = answer.json() if isinstance(answer.json(), dict) else {}
        status, attempt = body.get("status"), body.get("run_attempt")
        return WorkflowRun(
            status if isinstance(status, str) else "",
            attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        )

    # -------------------------------------------------------------- credential --

    def _bearer(self) -> Secret:
        if isinstance(self._credential, PatCredential):
            return read_token(self._credential.token_file, "GITHUB_TOKEN_FILE")
        return self._installation_token(self._credential)

    def _installation_token(self, app: AppCredential) -> Secret:
        """The App installation's token, cached until shortly before it expires or the key changes."""
        key_pem = read_file(app.private_key_file, "GITHUB_APP_PRIVATE_KEY_FILE")
        key_digest = hashlib.sha256(key_pem).hexdigest()
        # One lock: fifty pods arriving at once cause one token request, not fifty.
        with self._app_token_lock:
            if self._app_token and self._app_token[0] == key_digest and self._clock() < self._app_token[2]:
                return self._app_token[1]
            token, expires_at = self._new_installation_token(app, key_pem)
            self._app_token = (key_digest, token, expires_at - APP_TOKEN_MARGIN_SECONDS)
            return token

    def _forget_installation_token(self, token: Secret) -> None:
        with self._app_token_lock:
            if self._app_token and self._app_token[1] is token:
                self._app_token = None

    def _new_installation_token(self, app: AppCredential, key_pem: bytes) -> tuple[Secret, float]:
        jwt = app_jwt(app.app_id, key_pem, now=int(self._clock()))
        what = f"an installation token for {app.describe()}"
        # This repository alone, and only what the broker does with it.
        request = json.dumps({"repositories": [self._repository_name], "permissions": APP_PERMISSIONS}).encode()
        try:
            answer = exchange(
                "POST",
                f"{self._api}/app/installations/{app.installation_id}/access_tokens",
                headers=_headers(jwt, request),
                body=request,
                policy=self._retry,
                tls=self._tls,
            )
        except Unanswered as error:
            raise GitHubUnavailable(f"GitHub did not answer a request for {what}: {error}") from None
        body = answer.json()
        token = body.get("token") if isinstance(body, dict) else None
        if answer.status == 201 and isinstance(token, str) and token:
            return Secret(token), _expiry(body.get("expires_at"), self._clock())
        if answer.status == 201:
            raise GitHubUnavailable(f"GitHub answered the request for {what} without a token")
        if answer.status == 401:
            raise GitHubRefused(
                f"GitHub refused the JWT of GitHub App {app.app_id} (HTTP 401): GITHUB_APP_ID or "
                "the key in GITHUB_APP_PRIVATE_KEY_FILE is wrong, or the key was revoked"
            )
        if answer.status == 404:
            raise GitHubRefused(
                f"installation {app.installation_id} of GitHub App {app.app_id} does not exist "
                f"(HTTP 404): check GITHUB_APP_INSTALLATION_ID and that the App is installed on "
                f"{self._repository}"
            )
        if answer.status == 422:
            raise GitHubRefused(
                f"GitHub App {app.app_id} may not get a token for {self._repository} with "
                f"{APP_PERMISSIONS} (HTTP 422): the installation must include the repository and "
                "grant Administration: read and write and Actions: read"
            )
        if answer.status == 403:
            raise GitHubRefused(
                f"GitHub App {app.app_id} may not get a token for installation "
                f"{app.installation_id} (HTTP 403): the installation may be suspended"
            )
        raise GitHubRefused(f"GitHub refused {what} (HTTP {answer.status})")

    # ------------------------------------------------------------------ plumbing --

    def _get_json(self, path: str, operation: str, permission: str, tolerated: tuple[int, ...] = ()) -> dict:
        body = self._call("GET", path, operation=operation, permission=permission, tolerated=tolerated).json()
        return body if isinstance(body, dict) else {}

    def _call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        operation: str,
        permission: str,
        tolerated: tuple[int, ...] = (),
    ) -> HttpAnswer:
        payload = json.dumps(body).encode() if body is not None else None
        for fresh_token in (False, True):
            bearer = self._bearer()
            try:
                answer = exchange(
                    method,
                    self._api + path,
                    headers=_headers(bearer, payload),
                    body=payload,
                    policy=self._retry,
                    tls=self._tls,
                )
            except Unanswered as error:
                raise GitHubUnavailable(f"GitHub did not answer {operation}: {error}") from None
            if answer.status != 401 or fresh_token or not isinstance(self._credential, AppCredential):
                break
            # An installation token revoked before its time: once more, with a new one.
            self._forget_installation_token(bearer)
        if 200 <= answer.status < 300 or answer.status in tolerated:
            return answer
        raise GitHubRefused(self._refusal(operation, permission, answer))

    def _refusal(self, operation: str, permission: str, answer: HttpAnswer) -> str:
        credential = self._credential.describe()
        prefix = f"GitHub refused {operation} (HTTP {answer.status})"
        if answer.status == 401:
            return f"{prefix}: the runner credential, {credential}, is invalid, expired or revoked"
        if answer.status == 403:
            return f"{prefix}: the credential, {credential}, lacks {permission} on {self._repository}"
        if answer.status == 404:
            return f"{prefix}: {self._repository} does not exist or the credential, {credential}, cannot see it"
        body = answer.json()
        message = body.get("message") if isinstance(body, dict) else None
        return f"{prefix}: {str(message)[:200]}" if message else prefix


def _headers(bearer: Secret, payload: bytes | None) -> dict[str, str]:
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": USER_AGENT,
        "Authorization": f"Bearer {bearer.reveal()}",
    }
    if payload is not None:
        headers["Content-Type"] = "application/json"
    return headers


def _items(body: dict, key: str) -> list[dict]:
    return [item for item in body.get(key) or [] if isinstance(item, dict)]


def _runner(item: dict) -> Runner | None:
    if not isinstance(item.get("id"), int) or not isinstance(item.get("name"), str):
        return None
    labels = frozenset(
        label.get("name")
        for label in item.get("labels") or []
        if isinstance(label, dict) and isinstance(label.get("name"), str)
    )
    return Runner(item["id"], item["name"], labels, item.get("status") == "online", item.get("busy") is True)


def _workflow_job(item: dict) -> WorkflowJob | None:
    if not isinstance(item.get("status"), str):
        return None

    def number(key: str) -> int | None:
        value = item.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    runner_name = item.get("runner_name")
    return WorkflowJob(
        str(item.get("name") or ""),
        item["status"],
        runner_name if isinstance(runner_name, str) else None,
        number("run_id"),
        number("run_attempt"),
    )


def _expiry(expires_at: object, now: float) -> float:
    """When an installation token expires; an unreadable answer is taken as GitHub's usual hour."""
    try:
        return datetime.fromisoformat(str(expires_at).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return now + 3600
