"""A GPU runner's cold start, and its node's bill, from Kubernetes' own timestamps.

Pure functions: the objects as the API server answered them in, the table's lines out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime

COLUMNS = ("pod-created", "scale-up", "node-ready", "scheduled", "pulled", "started", "online")
WIDTHS = (11, 8, 10, 9, 7, 7, 6)
NOT_SEEN = "-"


def epoch(text: object) -> int | None:
    """A Kubernetes timestamp (RFC 3339, with or without a fraction) in whole epoch seconds."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True)
class Row:
    runner: str
    values: tuple[str, ...]
    """Seconds after the Job's creation, per COLUMNS; NOT_SEEN where it did not happen."""
    cached: bool
    """The image was already on the node: nothing was pulled."""


def _condition_time(obj: dict, kind: str) -> int | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return epoch(condition.get("lastTransitionTime"))
    return None


def _event_time(event: dict, *fields: str) -> int | None:
    for field in fields:
        value = (event.get("metadata") or {}).get("creationTimestamp") if field == "created" else event.get(field)
        if value:
            return epoch(value)
    return None


def cold_start_row(
    runner: str, job: dict | None, pod: dict | None, events: list[dict], node: dict | None, online: float | None
) -> Row:
    """One row: when each part of the start happened, after the Job was created."""
    job, pod, node = job or {}, pod or {}, node or {}
    t0 = epoch((job.get("metadata") or {}).get("creationTimestamp"))

    def since(t: float | None) -> str:
        return NOT_SEEN if t is None or t0 is None else str(math.floor(t - t0))

    scale_ups = [
        t
        for e in events
        if e.get("reason") == "TriggeredScaleUp"
        if (t := _event_time(e, "firstTimestamp", "eventTime", "lastTimestamp", "created")) is not None
    ]
    pulls = sorted(
        (e for e in events if e.get("reason") == "Pulled"),
        key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "",
    )
    pulled = pulls[-1] if pulls else {}
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    runner_status = next((s for s in statuses if s.get("name") == "runner"), statuses[0] if statuses else {})
    state = runner_status.get("state") or {}
    started = (state.get("running") or {}).get("startedAt") or (state.get("terminated") or {}).get("startedAt")
    values = (
        since(epoch((pod.get("metadata") or {}).get("creationTimestamp"))),
        since(min(scale_ups) if scale_ups else None),
        since(_condition_time(node, "Ready")),
        since(_condition_time(pod, "PodScheduled")),
        since(_event_time(pulled, "lastTimestamp", "eventTime", "firstTimestamp")),
        since(epoch(started)),
        since(online),
    )
    return Row(runner, values, "already present" in str(pulled.get("message") or ""))


def cold_start_table(rows: list[Row], poll_seconds: float) -> list[str]:
    if not rows:
        return []
    width = max(6, *(len(row.runner) for row in rows))

    def line(first: str, values: tuple[str, ...]) -> str:
        return f"{first:<{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, WIDTHS, strict=True))

    lines = ["", "GPU runner cold start, seconds after its Job was created:", line("runner", COLUMNS)]
    any_cached = any_negative = False
    for row in rows:
        values = list(row.values)
        if row.cached and values[4] != NOT_SEEN:
            values[4] += "*"
            any_cached = True
        any_negative = any_negative or any(v.startswith("-") and v != NOT_SEEN for v in values)
        lines.append(line(row.runner, tuple(values)))
    lines.append(
        f"-: did not happen or not seen. online: the first poll (every {poll_seconds:g}s) that found the "
        "runner online in GitHub."
    )
    if any_cached:
        lines.append("* the image was already present (image streaming or a cached image): nothing was pulled")
    if any_negative:
        lines.append("negative: before the Job was created (the node was already up)")
    return lines


@dataclass(frozen=True)
class NodeLife:
    name: str
    created: int | None
    """When the node was created (epoch seconds), from its own metadata."""
    gone: int | None
    """When it was first seen gone, or None while it is still there."""


def billing_table(nodes: list[NodeLife], runners_ended: int, now: int) -> list[str]:
    """Each GPU node's billed minutes (per started minute, from creation to removal), and how
    long it stayed after its runners ended at `runners_ended`."""
    width = max(4, *(len(node.name) for node in nodes))

    def line(*cells: str) -> str:
        return f"{cells[0]:<{width}}  {cells[1]:<20}  {cells[2]:<20}  {cells[3]:>10}  {cells[4]}"

    lines = [
        "",
        "GPU node billing (per started minute, from creation to removal):",
        line("node", "created", "removed", "billed", "idle after its runner"),
    ]
    for node in nodes:
        if node.created is None:
            lines.append(line(node.name, "-", iso(node.gone) if node.gone is not None else "-", "-", "-"))
        elif node.gone is not None:
            lines.append(
                line(
                    node.name,
                    iso(node.created),
                    iso(node.gone),
                    f"{(node.gone - node.created + 59) // 60} min",
                    f"{node.gone - runners_ended}s",
                )
            )
        else:
            lines.append(
                line(
                    node.name,
                    iso(node.created),
                    "still there",
                    f">={(now - node.created + 59) // 60} min",
                    f">={now - runners_ended}s",
                )
            )
    return lines
