"""A scriptable stand-in for the runner broker's HTTP API, for tests of the runner entrypoint.

It binds 127.0.0.1 on a free port at once, so its URL is known, but it may start
listening later (`listening=False`, then `listen()`): until then a connection to it is
refused, as while the broker's pod starts. Each path answers from a queue of scripted
replies, then from that path's default; every request is recorded.

    with FakeBroker() as broker:
        broker.script("/v1/jitconfig", Reply(503), Reply(201, {...}))
        ... point RUNNER_BROKER_URL at broker.url ...
        assert [r.path for r in broker.requests] == ["/v1/jitconfig"] * 2
"""

from __future__ import annotations

from typing import Self

from scripted_server import Reply, Request, ScriptedServer

__all__ = ["FINISHED", "JITCONFIG", "FakeBroker", "Reply", "Request"]

JITCONFIG = "/v1/jitconfig"
FINISHED = "/v1/finished"


class FakeBroker(ScriptedServer):
    thread_name = "fake-broker"

    def __init__(self, *, listening: bool = True) -> None:
        super().__init__()
        self._listening = listening

    def start(self) -> Self:
        """Bind the port; listen at once unless made with `listening=False` (then see `listen()`)."""
        return super().start(listening=self._listening)

    def _unscripted(self, path: str) -> Reply:
        return Reply(404, {"error": f"the fake broker has no reply scripted for {path}"})
