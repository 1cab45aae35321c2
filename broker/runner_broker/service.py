"""The broker put together: its clients, services, sweep and two listeners; started, then stopped in order."""

from __future__ import annotations

import threading
import time

from runner_broker.callers import Callers
from runner_broker.config import Config
from runner_broker.github import GitHubClient
from runner_broker.gpu_runners import GpuRunners
from runner_broker.grants import Grants
from runner_broker.kubernetes import KubernetesClient
from runner_broker.logs import log
from runner_broker.routes import Api, health
from runner_broker.server import Listener
from runner_broker.sweep import Sweeper
from runner_broker.template import TemplateSource

HEALTH_MAX_CONNECTIONS = 16
HEALTH_PER_CLIENT = 4  # the kubelet's probes come from the node's address, a few at a time
HEALTH_DEADLINE_SECONDS = 2.0
DRAIN_MARGIN_SECONDS = 2.0  # on SIGTERM, requests in flight get their deadline and this much more


class Service:
    """Binds both listeners when made (an OSError says the address is taken); `start`, then `stop` once."""

    def __init__(self, config: Config, *, poll_seconds: float = 0.1) -> None:
        self.config = config
        self.poll_seconds = poll_seconds
        """How soon the listeners notice `stop`."""
        self.kubernetes = KubernetesClient(config)
        self.github = GitHubClient(config)
        templates = TemplateSource(config.gpu_runner_template_file)
        callers = Callers(config, self.kubernetes, templates)
        self.grants = Grants(self.kubernetes, self.github, callers)
        self.gpu_runners = GpuRunners(config, self.kubernetes, self.github, callers, templates)
        self.sweeper = Sweeper(config, self.kubernetes, self.github)
        self.api = Listener(
            config.listen,
            Api(self.grants, self.gpu_runners),
            name="api",
            max_connections=config.max_connections,
            per_client=config.max_connections_per_client,
            deadline_seconds=config.request_deadline_seconds,
        )
        try:
            self.health = Listener(
                config.health_listen,
                health,
                name="health",
                max_connections=HEALTH_MAX_CONNECTIONS,
                per_client=HEALTH_PER_CLIENT,
                deadline_seconds=HEALTH_DEADLINE_SECONDS,
            )
        except OSError:
            self.api.server_close()
            raise
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Service:
        for listener in (self.api, self.health):
            self._run(listener.name, listener.serve_forever, poll_interval=self.poll_seconds)
        self._run("sweep", self._sweep_until_stopped)
        config = self.config
        log(
            f"listening on {self.api.address}",
            health=str(self.health.address),
            repository=config.repository,
            namespace=config.runner_namespace,
            credential=config.credential.describe(),
            gpu_runner_template=str(config.gpu_runner_template_file or "none"),
            sweep_seconds=config.sweep_seconds,
        )
        return self

    def stop(self) -> list[str]:
        """No new requests; those in flight finish (a bounded time); then the final sweep. Returns the runners
        of ours that remain registered."""
        log("stopping", reason="no new requests; finishing those in flight, then a final sweep")
        self._stopping.set()
        stopping = [threading.Thread(target=listener.shutdown) for listener in (self.api, self.health)]
        for thread in stopping:  # both at once: each waits for its listener's next poll
            thread.start()
        for thread, listener in zip(stopping, (self.api, self.health), strict=True):
            thread.join()
            listener.server_close()
        until = time.monotonic() + self.config.request_deadline_seconds + DRAIN_MARGIN_SECONDS
        if not self.api.drain(until):
            log("stopping", reason="requests still in flight past their deadline: not waiting for them")
        for thread in self._threads:
            thread.join(max(0.0, until - time.monotonic()))
        remaining = self.sweeper.final()
        log("stopped", remaining=remaining or None)
        return remaining

    def _run(self, name: str, target, **kwargs) -> None:
        thread = threading.Thread(target=target, kwargs=kwargs, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _sweep_until_stopped(self) -> None:
        while not self._stopping.wait(self.config.sweep_seconds):
            self.sweeper.sweep()
