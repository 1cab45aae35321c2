"""With SMOKE_FOLLOW_NODE=1: follow each GPU node the smoke runners had until the
autoscaler removes it, and print the minutes it was billed."""

from __future__ import annotations

from .cluster import KubeError
from .cold_start import NodeLife, billing_table, epoch
from .context import Context


def follow_nodes(ctx: Context) -> None:
    if not ctx.settings.follow_node:
        return
    created: dict[str, int | None] = {}
    for runner in ctx.gpu.created:
        if runner.node and runner.node not in created:
            created[runner.node] = epoch(((runner.node_object or {}).get("metadata") or {}).get("creationTimestamp"))
    if not created:
        ctx.report.skipped("GPU node billing", "no GPU runner got a node")
        return
    timeout = ctx.settings.node_timeout_seconds
    ctx.report.say(f"\nFollowing {len(created)} GPU node(s) until the autoscaler removes them (up to {timeout}s).")
    gone: dict[str, int] = {}

    def all_gone() -> bool:
        for name in created:
            if name in gone:
                continue
            try:
                if ctx.cluster.get("node", name) is None:
                    gone[name] = int(ctx.clock.time())
            except KubeError:
                pass  # the API did not answer: try again
        return len(gone) == len(created)

    ctx.wait(timeout, all_gone)
    now = int(ctx.clock.time())
    nodes = [NodeLife(name, created[name], gone.get(name)) for name in created]
    for line in billing_table(nodes, ctx.gpu.deleted_at or now, now):
        ctx.report.say(line)
    for name in created:
        if name not in gone:
            ctx.report.warned(
                f"GPU node removed ({name})",
                f"still in the cluster {timeout}s after its runner ended",
                "expected while gpuMinNodes or gpuWarmRunners keeps a GPU node; otherwise see why the "
                f"autoscaler keeps it: kubectl get pods -A --field-selector spec.nodeName={name}, and "
                "the cluster autoscaler's events (autoscalingProfile OPTIMIZE_UTILIZATION removes idle "
                "nodes sooner)",
            )
