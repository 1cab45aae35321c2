"""What the broker answers, path by path: the API on BROKER_LISTEN, /healthz alone on BROKER_HEALTH_LISTEN.

POST   /v1/jitconfig                        201 {"name", "labels", "encodedJitConfig"}
POST   /v1/finished                         200 {"name", "runnerRemoved", "podDeleted"}
POST   /v1/gpu-runners                      201 {"label", "jobs", "created"}
GET    /v1/gpu-runners/<run id>/<attempt>   200 {"label", "runners": [...]}  (see gpu_state)
DELETE /v1/gpu-runners/<run id>/<attempt>   200 {"deleted"}
GET    /healthz  (health listener only)     200 {"status": "ok"}
"""

from __future__ import annotations

import json
import re

from runner_broker.decisions import run_number
from runner_broker.gpu_runners import GpuRunners
from runner_broker.grants import Grants
from runner_broker.secrets import bearer_token
from runner_broker.server import Answer, Request
from runner_contract import FINISHED_PATH, GPU_RUNNERS_PATH, HEALTH_PATH, JITCONFIG_PATH

GPU_RUNNERS_OF_RUN = re.compile(f"{re.escape(GPU_RUNNERS_PATH)}/([0-9]{{1,20}})/([0-9]{{1,20}})")


class Api:
    """The broker's API: each path to the service that answers it."""

    def __init__(self, grants: Grants, gpu_runners: GpuRunners) -> None:
        self._grants = grants
        self._gpu_runners = gpu_runners

    def __call__(self, request: Request) -> Answer:
        token = bearer_token(request.headers.get("authorization"))
        path, method = request.path, request.method
        if path == JITCONFIG_PATH:
            return _only(method, "POST") or (201, self._grants.issue(token), {})
        if path == FINISHED_PATH:
            return _only(method, "POST") or (200, self._grants.finish(token), {})
        if path == GPU_RUNNERS_PATH:
            return _only(method, "POST") or (201, self._gpu_runners.create(token, _json(request.body)), {})
        if match := GPU_RUNNERS_OF_RUN.fullmatch(path):
            wrong = _only(method, "GET", "DELETE")
            if wrong:
                return wrong
            run_id, attempt = run_number(match.group(1), "the run ID"), run_number(match.group(2), "the attempt")
            if method == "GET":
                return 200, self._gpu_runners.status(token, run_id, attempt), {}
            return 200, self._gpu_runners.delete(token, run_id, attempt), {}
        return 404, {"error": f"no such path: {path[:100]}"}, {}


def health(request: Request) -> Answer:
    if request.path != HEALTH_PATH:
        return 404, {"error": f"no such path: {request.path[:100]}"}, {}
    return _only(request.method, "GET") or (200, {"status": "ok"}, {})


def _only(method: str, *allowed: str) -> Answer | None:
    if method in allowed:
        return None
    return 405, {"error": f"this path answers {' and '.join(allowed)} only"}, {"Allow": ", ".join(allowed)}


def _json(body: bytes) -> object:
    try:
        return json.loads(body) if body.strip() else {}
    except ValueError:
        return "<not JSON>"  # the service says what it wanted, once it knows who asks
