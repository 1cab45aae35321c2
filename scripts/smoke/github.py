"""GitHub's REST API as the smoke test reads it (urllib, GET only), and what it makes of
the repository's runner list.

The token goes into one request header and nowhere else: not into an argv, a message or
a repr.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from runner_contract import BASE_RUNNER, GPU_RUNNER

TIMEOUT_SECONDS = 30
API_VERSION = "2022-11-28"
LATEST_RUNNER_RELEASE = "/repos/actions/runner/releases/latest"
# What GitHub adds to a self-hosted runner's labels by itself.
DEFAULT_LABELS = frozenset({"self-hosted", "linux", "x64", "arm", "arm64", "windows", "macos"})
OWN_GPU_RUNNER = re.compile(rf"{GPU_RUNNER}-([0-9]+)-[0-9]+")
GPU_RUNNER_LABEL = re.compile(rf"{GPU_RUNNER}-[0-9]+")


@dataclass(frozen=True)
class Answer:
    status: int
    """The HTTP status; 0 when no answer came."""
    body: Any
    """The JSON body, or None."""
    error: str = ""
    """Why no answer came."""

    @property
    def message(self) -> str:
        return str(self.body.get("message") or "") if isinstance(self.body, dict) else ""

    @property
    def runners(self) -> list[dict]:
        items = self.body.get("runners") if isinstance(self.body, dict) else None
        return [r for r in items if isinstance(r, dict)] if isinstance(items, list) else []


class GitHub:
    def __init__(self, api_url: str, token: str | None, opener: urllib.request.OpenerDirector | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._opener = opener or urllib.request.build_opener()

    def __repr__(self) -> str:
        return f"GitHub({self.api_url!r})"

    def get(self, path: str) -> Answer:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.api_url + path, headers=headers, method="GET")
        try:
            with self._opener.open(request, timeout=TIMEOUT_SECONDS) as response:
                return Answer(response.status, _json(response.read()))
        except urllib.error.HTTPError as error:
            return Answer(error.code, _json(error.read()))
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            return Answer(0, None, str(reason) or type(error).__name__)

    def runners(self, repository: str) -> Answer:
        return self.get(f"/repos/{repository}/actions/runners?per_page=100")

    def latest_runner_release(self) -> Answer:
        return self.get(LATEST_RUNNER_RELEASE)


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def label_names(runner: dict) -> list[str]:
    return [
        label["name"]
        for label in runner.get("labels") or []
        if isinstance(label, dict) and isinstance(label.get("name"), str)
    ]


def status_of(runners: list[dict], name: str) -> str:
    """How GitHub lists runner `name`: offline, online, or not listed."""
    return next((str(r.get("status") or "unknown") for r in runners if r.get("name") == name), "not listed")


def summary(runners: list[dict]) -> str:
    return ", ".join(f"{r.get('name')} {r.get('status')}" for r in runners) or "no runners"


def online_base_runners(runners: list[dict]) -> list[str]:
    """This stack's base runners that are online. A foreign runner with the label (the
    tutorial's) is warned about elsewhere, never taken for ours."""
    return [
        str(r["name"])
        for r in runners
        if r.get("status") == "online"
        and str(r.get("name") or "").startswith(f"{BASE_RUNNER}-")
        and BASE_RUNNER in label_names(r)
    ]


def gpu_runner_view(runners: list[dict], name: str, label: str) -> tuple[str | None, str]:
    """How GitHub lists GPU runner `name`: its status (None: not listed), and when its
    labels are not `label` alone besides GitHub's defaults, why."""
    runner = next((r for r in runners if r.get("name") == name), None)
    if runner is None:
        return None, ""
    labels = label_names(runner)
    custom = [n for n in labels if n.lower() not in ("self-hosted", "linux", "x64")]
    problem = (
        ""
        if custom == [label]
        else (f"registered with labels {', '.join(labels)}; expected {label} alone (besides self-hosted, Linux, X64)")
    )
    return str(runner.get("status") or "unknown"), problem


def foreign_runners(runners: list[dict]) -> list[tuple[dict, str]]:
    """Runners this stack did not register that could take its jobs, each with why.

    This stack's: base-runner-* with label base-runner, and gpu-runner-<run id>-<attempt>
    with label gpu-runner-<run id>. Any other runner that carries base-runner, a
    gpu-runner-<number> label, or nothing but GitHub's default labels (it takes
    `runs-on: self-hosted`) is one. GitHub compares labels without case.
    """
    found = []
    for runner in runners:
        name = str(runner.get("name") or "")
        labels = label_names(runner)
        lower = [n.lower() for n in labels]
        own_gpu = OWN_GPU_RUNNER.fullmatch(name)
        if (name.startswith(f"{BASE_RUNNER}-") and BASE_RUNNER in lower) or (
            own_gpu and f"{GPU_RUNNER}-{own_gpu.group(1)}" in lower
        ):
            continue
        ours = [n for n in labels if n.lower() == BASE_RUNNER or GPU_RUNNER_LABEL.fullmatch(n.lower())]
        if ours:
            found.append((runner, f"yet it carries {', '.join(ours)}"))
        elif all(n in DEFAULT_LABELS for n in lower):
            found.append((runner, "and it has only default labels: it takes any job that asks for self-hosted"))
    return found
