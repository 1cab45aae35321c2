"""A repository's self-hosted runners and workflow runs, kept by a FakeGitHub: what the broker registers, lists
and removes, and the runs and jobs it checks callers against.

    with FakeGitHub() as github:
        runners = GitHubRunners(github, "acme-ml/models", tokens={PAT})
        runners.add("tutorial-runner", ["base-runner"])      # one that is not the broker's
        ... the broker generates, lists and deletes ...
        assert runners.names() == {"base-runner-abc12-xyz34", "tutorial-runner"}

Paths scripted on the FakeGitHub (`github.script(...)`) still answer first, so a
test can put a 500 or a hang in front of the registry. Requests whose bearer token is
not in `accepted_tokens` get 401, as GitHub answers a bad credential.

    runs = GitHubRuns(runners)                    # the same repository and tokens
    runs.add_job(4242, 1, "train", runner_name="base-runner-abc12-xyz34")
    runs.set_run_status(4242, "completed")
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs

from fake_github import FakeGitHub, Reply, Request, run_path

DEFAULT_LABELS = ("self-hosted", "Linux", "X64")


def runners_api(repository: str, tail: str = "") -> str:
    return f"/repos/{repository}/actions/runners{tail}"


def access_tokens_path(installation_id: str) -> str:
    return f"/app/installations/{installation_id}/access_tokens"


class GitHubRunners:
    def __init__(self, github: FakeGitHub, repository: str, *, tokens: set[str] | frozenset[str] = frozenset()) -> None:
        self.github = github
        self.repository = repository
        self.accepted_tokens: set[str] = set(tokens)
        self.jit_configs: list[str] = []
        """Every encoded JIT config handed out, in order."""
        self.installation_tokens: list[str] = []
        """Every App installation token handed out, in order."""
        self.lost_answers = 0
        """The next this many generate calls register the runner, then answer after `lost_answer_delay`."""
        self.lost_answer_delay = 5.0
        self.generate_delay = 0.0
        """Every generate call is answered this much later (the runner registered at once)."""
        self.generated_status = "offline"
        """The status a generated runner has: "online" makes it look connected at once."""
        self._lock = threading.Lock()
        self._runners: dict[int, dict] = {}
        self._ids = itertools.count(1001)
        base = re.escape(runners_api(repository))
        github.respond("POST", base + "/generate-jitconfig", self._generate)
        github.respond("GET", base, self._list)
        github.respond("DELETE", base + r"/(\d+)", self._delete)

    # ------------------------------------------------------------- registry --

    def add(self, name: str, labels: list[str], *, busy: bool = False, status: str = "online") -> int:
        """A runner registered by someone else (or earlier)."""
        with self._lock:
            return self._add(name, labels, busy=busy, status=status)

    def remove(self, name: str) -> None:
        """As when a JIT runner finishes its one job and deregisters itself."""
        with self._lock:
            for runner_id, runner in list(self._runners.items()):
                if runner["name"] == name:
                    del self._runners[runner_id]

    def set_state(self, name: str, *, status: str | None = None, busy: bool | None = None) -> None:
        """As when the runner called `name` connects ("online"), takes a job (busy) or goes away."""
        with self._lock:
            (runner,) = [r for r in self._runners.values() if r["name"] == name]
            runner.update({k: v for k, v in (("status", status), ("busy", busy)) if v is not None})

    def names(self) -> set[str]:
        with self._lock:
            return {runner["name"] for runner in self._runners.values()}

    def labels(self, name: str) -> list[str]:
        """The labels of the runner called `name`, as GitHub lists them."""
        with self._lock:
            (runner,) = [r for r in self._runners.values() if r["name"] == name]
            return [label["name"] for label in runner["labels"]]

    def runner(self, name: str) -> dict | None:
        with self._lock:
            return next((dict(r) for r in self._runners.values() if r["name"] == name), None)

    # ----------------------------------------------------------------- App --

    def enable_app(self, installation_id: str, *, expires_in_seconds: int = 3600) -> None:
        """Answer the App's installation token requests with fresh tokens the runner endpoints accept."""

        def issue(request: Request, match: re.Match[str]) -> Reply:
            with self._lock:
                token = f"ghs_FAKE-installation-token-{len(self.installation_tokens) + 1:04d}"
                self.installation_tokens.append(token)
                self.accepted_tokens.add(token)
            expires_at = datetime.fromtimestamp(time.time() + expires_in_seconds, UTC)
            return Reply(
                201,
                {
                    "token": token,
                    "expires_at": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "permissions": {"administration": "write"},
                },
            )

        self.github.respond("POST", re.escape(access_tokens_path(installation_id)), issue)

    # ------------------------------------------------------------ handlers --

    def _refused(self, request: Request) -> Reply | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in self.accepted_tokens:
            return Reply(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
        return None

    def _generate(self, request: Request, _match: re.Match[str]) -> Reply:
        refused = self._refused(request)
        if refused:
            return refused
        body = json.loads(request.body or b"{}")
        name, labels = body.get("name"), body.get("labels")
        if not name or not isinstance(labels, list) or not labels or body.get("runner_group_id") != 1:
            return Reply(422, {"message": "Invalid request: name, labels and runner_group_id are required"})
        with self._lock:
            if any(runner["name"] == name for runner in self._runners.values()):
                return Reply(409, {"message": f"Already exists - A runner with the name {name} already exists."})
            runner_id = self._add(name, labels, busy=False, status=self.generated_status)
            encoded = f"FAKE-JIT-{runner_id}-{name}-do-not-log"
            self.jit_configs.append(encoded)
            runner = dict(self._runners[runner_id])
            delay = self.generate_delay
            if self.lost_answers:
                self.lost_answers -= 1
                delay = self.lost_answer_delay
        return Reply(201, {"runner": runner, "encoded_jit_config": encoded}, delay=delay)

    def _list(self, request: Request, _match: re.Match[str]) -> Reply:
        refused = self._refused(request)
        if refused:
            return refused
        query = parse_qs(request.query)
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        page = max(int(query.get("page", ["1"])[0]), 1)
        with self._lock:
            runners = sorted(self._runners.values(), key=lambda r: r["id"])
        if "name" in query:  # GitHub's filter: the runners of that exact name
            runners = [r for r in runners if r["name"] == query["name"][0]]
        start = (page - 1) * per_page
        return Reply(200, {"total_count": len(runners), "runners": runners[start : start + per_page]})

    def _delete(self, request: Request, match: re.Match[str]) -> Reply:
        refused = self._refused(request)
        if refused:
            return refused
        with self._lock:
            runner = self._runners.get(int(match.group(1)))
            if runner is None:
                return Reply(404, {"message": "Not Found"})
            if runner["busy"]:
                return Reply(422, {"message": f'Bad request - Runner "{runner["name"]}" is still running a job"'})
            del self._runners[runner["id"]]
        return Reply(204)

    def _add(self, name: str, labels: list[str], *, busy: bool, status: str) -> int:
        runner_id = next(self._ids)
        names = [*DEFAULT_LABELS, *(label for label in labels if label not in DEFAULT_LABELS)]
        self._runners[runner_id] = {
            "id": runner_id,
            "name": name,
            "os": "Linux",
            "status": status,
            "busy": busy,
            "ephemeral": True,
            "labels": [
                {"id": i + 1, "name": label, "type": "read-only" if label in DEFAULT_LABELS else "custom"}
                for i, label in enumerate(names)
            ],
        }
        return runner_id


class GitHubRuns:
    """Workflow runs and their attempts' jobs, as `GET .../actions/runs/{id}` and `.../attempts/{n}/jobs` show them."""

    def __init__(self, runners: GitHubRunners) -> None:
        self.runners = runners
        self._lock = threading.Lock()
        self._runs: dict[int, dict] = {}
        self._jobs: dict[tuple[int, int], list[dict]] = {}
        self._ids = itertools.count(70001)
        base = re.escape(run_path(runners.repository, "")) + r"(\d+)"
        runners.github.respond("GET", base, self._run)
        runners.github.respond("GET", base + r"/attempts/(\d+)/jobs", self._attempt_jobs)

    def start_run(self, run_id: int | str, attempt: int | str = 1, status: str = "in_progress") -> None:
        with self._lock:
            self._runs[int(run_id)] = {
                "id": int(run_id),
                "status": status,
                "run_attempt": int(attempt),
                "conclusion": None,
            }
            self._jobs.setdefault((int(run_id), int(attempt)), [])

    def set_run_status(self, run_id: int | str, status: str) -> None:
        with self._lock:
            self._runs[int(run_id)]["status"] = status

    def forget_run(self, run_id: int | str) -> None:
        """As when the run is deleted."""
        with self._lock:
            self._runs.pop(int(run_id), None)

    def add_job(
        self,
        run_id: int | str,
        attempt: int | str,
        name: str,
        *,
        status: str = "in_progress",
        runner_name: str | None = None,
    ) -> dict:
        """A job of the run attempt (the run starts, in progress, if it has not)."""
        if int(run_id) not in self._runs:
            self.start_run(run_id, attempt)
        with self._lock:
            self._runs[int(run_id)]["run_attempt"] = max(self._runs[int(run_id)]["run_attempt"], int(attempt))
            job = {
                "id": next(self._ids),
                "run_id": int(run_id),
                "run_attempt": int(attempt),
                "name": name,
                "status": status,
                "conclusion": None,
                "runner_name": runner_name,
                "runner_id": None if runner_name is None else 1,
                "labels": [],
            }
            self._jobs.setdefault((int(run_id), int(attempt)), []).append(job)
            return job

    def set_job(self, run_id: int | str, attempt: int | str, name: str, **changes: object) -> None:
        with self._lock:
            (job,) = [j for j in self._jobs[(int(run_id), int(attempt))] if j["name"] == name]
            job.update(changes)

    def _run(self, request: Request, match: re.Match[str]) -> Reply:
        refused = self.runners._refused(request)
        if refused:
            return refused
        with self._lock:
            run = self._runs.get(int(match.group(1)))
            return Reply(200, dict(run)) if run else Reply(404, {"message": "Not Found"})

    def _attempt_jobs(self, request: Request, match: re.Match[str]) -> Reply:
        refused = self.runners._refused(request)
        if refused:
            return refused
        query = parse_qs(request.query)
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        page = max(int(query.get("page", ["1"])[0]), 1)
        with self._lock:
            if int(match.group(1)) not in self._runs:
                return Reply(404, {"message": "Not Found"})
            jobs = [dict(job) for job in self._jobs.get((int(match.group(1)), int(match.group(2))), [])]
        start = (page - 1) * per_page
        return Reply(200, {"total_count": len(jobs), "jobs": jobs[start : start + per_page]})
