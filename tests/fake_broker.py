"""A scriptable stand-in for the runner broker's HTTP API, for tests of the runner entrypoint
and of `gpu-runner`.

It binds 127.0.0.1 on a free port at once, so its URL is known, but it may start
listening later (`listening=False`, then `listen()`): until then a connection to it is
refused, as while the broker's pod starts. Each path answers from a queue of scripted
replies, then from a `GpuFleet` if one is given (the GPU runner API), then from that
path's default; every request is recorded.

    with FakeBroker() as broker:
        broker.script("/v1/jitconfig", Reply(503), Reply(201, {...}))
        ... point RUNNER_BROKER_URL at broker.url ...
        assert [r.path for r in broker.requests] == ["/v1/jitconfig"] * 2

    with FakeBroker(fleet=GpuFleet(gpus=2)) as broker:
        ... `gpu-runner start` of three runs: the third waits for a GPU ...
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Self

from runner_contract import FINISHED_PATH, GPU_RUNNERS_PATH, JITCONFIG_PATH, gpu_runner_job_name, gpu_runner_label
from scripted_server import Reply, Request, ScriptedServer

__all__ = [
    "FINISHED",
    "GPU_RUNNERS",
    "JITCONFIG",
    "FakeBroker",
    "GpuFleet",
    "Reply",
    "Request",
    "gpu_runner",
    "gpu_runners_path",
    "snapshot",
]

JITCONFIG = JITCONFIG_PATH
FINISHED = FINISHED_PATH
GPU_RUNNERS = GPU_RUNNERS_PATH


def gpu_runners_path(run_id: str | int, run_attempt: str | int) -> str:
    return f"{GPU_RUNNERS}/{run_id}/{run_attempt}"


def gpu_runner(
    job: str,
    state: str = "online",
    *,
    reason: str | None = None,
    message: str | None = None,
    events: list[dict] | tuple = (),
    pod: str | None = "",
    runner_status: str | None = None,
    busy: bool = False,
) -> dict:
    """One runner as GET /v1/gpu-runners/<run>/<attempt> shows it."""
    if runner_status is None and state in ("online", "busy"):
        runner_status = "online"
    return {
        "job": job,
        "pod": f"{job}-x7k2p" if pod == "" else pod,
        "state": state,
        "reason": reason,
        "message": message,
        "events": list(events),
        "runnerStatus": runner_status,
        "runnerBusy": busy or state == "busy",
    }


def snapshot(run_id: str | int, *runners: dict) -> dict:
    """GET /v1/gpu-runners/<run>/<attempt>'s answer."""
    return {"label": gpu_runner_label(run_id), "runners": list(runners)}


@dataclass
class _Runner:
    job: str
    run: tuple[str, str]
    index: int
    admitted: bool = False
    reads: int = 0
    """Status reads of its run since it got a GPU."""
    busy: bool = False


@dataclass
class GpuFleet:
    """GPU runners as a cluster with `gpus` GPUs in the runner namespace's quota would have them.

    A runner takes a GPU when one is free, in the order asked for, then shows `scheduling`
    (the autoscaler adding a node), `starting`, and `online` on successive status reads of
    its run (the runner of index i needs i reads more). The others are `pending` with the
    quota's refusal, until a DELETE frees GPUs. POST and DELETE check what the broker
    checks that matters here: the bearer token, the body, the count, a refused run.
    """

    gpus: int = 2
    max_count: int = 3
    token: str = ""
    """The bearer every request must carry; empty: any."""
    refused_runs: set[str] = field(default_factory=set)
    """Runs whose caller "is not running a job of that run" (403)."""
    _runners: list[_Runner] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Request) -> Reply | None:
        if not request.path.startswith(GPU_RUNNERS):
            return None
        if self.token and request.bearer != self.token:
            return Reply(401, {"error": "missing or invalid token"})
        with self._lock:
            if request.method == "POST" and request.path == GPU_RUNNERS:
                return self._create(request.body)
            match = re.fullmatch(rf"{GPU_RUNNERS}/(\d+)/(\d+)", request.path)
            if not match:
                return Reply(404, {"error": f"no route {request.method} {request.path}"})
            run = (match.group(1), match.group(2))
            if run[0] in self.refused_runs:
                return Reply(403, {"error": f"the caller's runner is not running a job of run {run[0]}"})
            if request.method == "GET":
                return Reply(200, self._status(run))
            if request.method == "DELETE":
                deleted = [runner.job for runner in self._runners if runner.run == run]
                self._runners = [runner for runner in self._runners if runner.run != run]
                return Reply(200, {"deleted": deleted})
        return Reply(405, {"error": f"{request.method} is not allowed here"})

    def take(self, job: str) -> None:
        """The runner `job` takes a job: it shows `busy` from now on."""
        with self._lock:
            [runner] = [runner for runner in self._runners if runner.job == job]
            runner.busy = True

    def jobs_of(self, run_id: str | int, run_attempt: str | int) -> list[str]:
        with self._lock:
            return [runner.job for runner in self._runners if runner.run == (str(run_id), str(run_attempt))]

    def _create(self, raw: bytes) -> Reply:
        try:
            body: Any = json.loads(raw or b"null")
        except ValueError:
            return Reply(422, {"error": "the body is not JSON"})
        if not isinstance(body, dict) or not all(
            re.fullmatch(r"\d+", str(body.get(key, ""))) for key in ("runId", "runAttempt")
        ):
            return Reply(422, {"error": "runId and runAttempt must be strings of digits"})
        count = body.get("count", 1)
        if not isinstance(count, int) or not 1 <= count <= self.max_count:
            return Reply(422, {"error": f"count must be 1 to {self.max_count}"})
        run = (body["runId"], body["runAttempt"])
        if run[0] in self.refused_runs:
            return Reply(403, {"error": f"the caller's runner is not running a job of run {run[0]}"})
        if not any(runner.run == run for runner in self._runners):
            self._runners += [_Runner(gpu_runner_job_name(*run, index), run, index) for index in range(count)]
        return Reply(201, {"label": gpu_runner_label(run[0]), "jobs": [r.job for r in self._runners if r.run == run]})

    def _status(self, run: tuple[str, str]) -> dict:
        for runner in self._runners:
            if not runner.admitted and sum(r.admitted for r in self._runners) < self.gpus:
                runner.admitted = True
        used = sum(r.admitted for r in self._runners)
        shown = []
        for runner in (r for r in self._runners if r.run == run):
            if not runner.admitted:
                shown.append(
                    gpu_runner(
                        runner.job,
                        "pending",
                        pod=None,
                        reason="QuotaExceeded",
                        message=f'pods "{runner.job}-x7k2p" is forbidden: exceeded quota: gpu-runners, requested: '
                        f"requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu={used}, limited: "
                        f"requests.nvidia.com/gpu={self.gpus}",
                    )
                )
                continue
            runner.reads += 1
            step = runner.reads - runner.index
            if step <= 1:
                shown.append(
                    gpu_runner(
                        runner.job,
                        "scheduling",
                        reason="TriggeredScaleUp",
                        message="pod triggered scale-up: [{gpu-pool 0->1 (max: 2)}]",
                    )
                )
            elif step == 2:
                shown.append(gpu_runner(runner.job, "starting"))
            else:
                shown.append(gpu_runner(runner.job, "busy" if runner.busy else "online"))
        return snapshot(run[0], *shown)


class FakeBroker(ScriptedServer):
    thread_name = "fake-broker"

    def __init__(self, *, listening: bool = True, fleet: GpuFleet | None = None) -> None:
        super().__init__()
        self._listening = listening
        self.fleet = fleet

    def start(self) -> Self:
        """Bind the port; listen at once unless made with `listening=False` (then see `listen()`)."""
        return super().start(listening=self._listening)

    def _answer_otherwise(self, request: Request) -> Reply | None:
        return self.fleet.answer(request) if self.fleet is not None else None

    def _unscripted(self, path: str) -> Reply:
        return Reply(404, {"error": f"the fake broker has no reply scripted for {path}"})
