"""A scriptable stand-in for GitHub's REST API, for tests of the broker, the smoke test and gpu-runner.

It listens on 127.0.0.1 on a free port, answers each path from a queue of scripted
responses (then from that path's default, if any), and logs every request it sees.

    with FakeGitHub() as github:
        github.script(REGISTRATION, Reply(500), Reply(201, {"token": "t"}))
        ... point GITHUB_API_URL at github.url ...
        assert [r.path for r in github.requests] == [REGISTRATION, REGISTRATION]

A path can also be answered by a function of the request (`respond`), for doubles
that keep state, such as the runner registry in github_runners.py.
"""

from __future__ import annotations

import re
from http.server import BaseHTTPRequestHandler
from collections.abc import Callable

from local_server import send_json
from scripted_server import Reply, Request, ScriptedServer

__all__ = ["FakeGitHub", "Reply", "Request", "Responder", "run_jobs_path", "run_path", "runners_path"]

Responder = Callable[[Request, "re.Match[str]"], Reply]


class FakeGitHub(ScriptedServer):
    thread_name = "fake-github"

    def __init__(self) -> None:
        super().__init__()
        self._responders: list[tuple[str, re.Pattern[str], Responder]] = []

    def respond(self, method: str, path_pattern: str, responder: Responder) -> None:
        """Answer `method` requests whose whole path matches the regex `path_pattern` with
        `responder(request, match)`, once the path's scripted queue is empty (before its default)."""
        with self._lock:
            self._responders.append((method, re.compile(path_pattern), responder))

    def _answer_otherwise(self, request: Request) -> Reply | None:
        with self._lock:
            responders = list(self._responders)
        for method, pattern, responder in responders:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                return responder(request, match)
        return None

    def _unscripted(self, path: str) -> Reply:
        # 418: a status the entrypoint neither retries nor mistakes for success.
        return Reply(418, {"message": f"the fake GitHub has no reply scripted for {path}"})

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        send_json(
            handler,
            reply.status,
            reply.body,
            reply.headers,
            content_type=None if reply.body is None else "application/json; charset=utf-8",
        )


def runners_path(repository: str, kind: str) -> str:
    """The API path of a runner token request: kind is registration-token or remove-token."""
    return f"/repos/{repository}/actions/runners/{kind}"


def run_path(repository: str, run_id: str | int) -> str:
    """The API path of a workflow run."""
    return f"/repos/{repository}/actions/runs/{run_id}"


def run_jobs_path(repository: str, run_id: str | int, attempt: str | int) -> str:
    """The API path of the jobs of one attempt of a workflow run."""
    return f"{run_path(repository, run_id)}/attempts/{attempt}/jobs"
