"""A stand-in for the Compute Engine API answers the preflight reads, on 127.0.0.1.

It serves one project with zones, accelerator types, machine types and quotas that a
test can change; every request is recorded with its Authorization header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from program.checks.preflight import QUOTA_METRICS
from local_server import LocalServer, QuietHandler, send_json


@dataclass
class ComputeWorld:
    """What the fake answers. Quotas are (limit, usage)."""

    zones: dict[str, list[str]] = field(
        default_factory=lambda: {
            "us-central1-a": ["nvidia-tesla-t4", "nvidia-l4", "nvidia-tesla-a100"],
            "us-central1-b": ["nvidia-tesla-t4"],
            "europe-west4-a": ["nvidia-tesla-t4", "nvidia-l4"],
            "europe-west4-b": ["nvidia-tesla-t4", "nvidia-l4", "nvidia-tesla-v100"],
        }
    )
    machine_types: set[str] = field(
        default_factory=lambda: {
            *(f"n1-standard-{n}" for n in (1, 2, 4, 8, 16, 32, 64, 96)),
            *(f"g2-standard-{n}" for n in (4, 8, 12, 16, 24, 32, 48, 96)),
            "a2-highgpu-1g",
            "a2-highgpu-2g",
            "a2-ultragpu-1g",
        }
    )
    # Generous, so that every test not about quota passes it.
    region_quotas: dict[str, float] = field(
        default_factory=lambda: {
            prefix + metric: 64 for metric in QUOTA_METRICS.values() for prefix in ("", "PREEMPTIBLE_")
        }
    )
    region_usage: dict[str, float] = field(default_factory=dict)
    all_regions_limit: float = 128
    all_regions_usage: float = 0
    fail_with: tuple[int, dict] | None = None
    """Answer every request with this status and body."""


class FakeCompute(LocalServer):
    thread_name = "fake-compute"

    def __init__(self) -> None:
        self.world = ComputeWorld()
        self.requests: list[tuple[str, str]] = []

    def reset(self) -> None:
        self.world = ComputeWorld()
        self.requests.clear()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                fake.requests.append((self.path, self.headers.get("Authorization", "")))
                status, body = fake.answer(self.path)
                send_json(self, status, body)

        return Handler

    def answer(self, path: str) -> tuple[int, dict]:
        world = self.world
        if world.fail_with:
            return world.fail_with
        if match := re.fullmatch(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/acceleratorTypes", path):
            gpus = world.zones.get(match[2])
            if gpus is None:
                return 404, {
                    "error": {
                        "code": 404,
                        "message": f"The resource 'projects/{match[1]}/zones/{match[2]}' was not found",
                    }
                }
            return 200, {"items": [{"name": name} for name in gpus]}
        if match := re.fullmatch(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/machineTypes/([^/]+)", path):
            if match[2] in world.zones and match[3] in world.machine_types:
                return 200, {"name": match[3]}
            return 404, {"error": {"code": 404, "message": "not found"}}
        if match := re.fullmatch(r"/compute/v1/projects/([^/]+)/regions/([^/]+)", path):
            quotas = [
                {"metric": metric, "limit": limit, "usage": world.region_usage.get(metric, 0)}
                for metric, limit in world.region_quotas.items()
            ]
            return 200, {"name": match[2], "quotas": quotas}
        if re.fullmatch(r"/compute/v1/projects/([^/]+)", path):
            return 200, {
                "quotas": [
                    {"metric": "GPUS_ALL_REGIONS", "limit": world.all_regions_limit, "usage": world.all_regions_usage}
                ]
            }
        return 404, {"error": {"code": 404, "message": f"no route {path}"}}


_shared: FakeCompute | None = None


def shared_fake_compute() -> FakeCompute:
    """One fake for the whole test run (and the benchmark), started on first use."""
    global _shared
    if _shared is None:
        _shared = FakeCompute().start()
    return _shared
