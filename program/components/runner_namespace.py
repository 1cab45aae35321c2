"""What keeps the runner namespace worth nothing to a job, in either runner mode."""

from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from runner_contract import GPU_RESOURCE, RUNNER_ACCOUNT

GPU_QUOTA = "gpu-runners"


@dataclass(frozen=True)
class RunnerNamespaceGuards:
    account: k8s.core.v1.ServiceAccount
    """The runner pods' ServiceAccount: no API token mounted, no rights granted."""
    quota: k8s.core.v1.ResourceQuota
    """The namespace's GPUs: no more than the GPU pool holds."""


def guard_runner_namespace(
    account_resource: str,
    prefix: str,
    metadata: Callable[[str], dict],
    gpus: int,
    opts: pulumi.ResourceOptions,
) -> RunnerNamespaceGuards:
    """The runners' ServiceAccount, a NetworkPolicy refusing all ingress to runner pods, and a
    quota of `gpus` GPUs; `metadata` names an object in the runner namespace."""
    account = k8s.core.v1.ServiceAccount(
        account_resource, metadata=metadata(RUNNER_ACCOUNT), automount_service_account_token=False, opts=opts
    )
    k8s.networking.v1.NetworkPolicy(
        f"{prefix}-deny-ingress",
        metadata=metadata("runners-deny-ingress"),
        spec={"podSelector": {}, "policyTypes": ["Ingress"]},
        opts=opts,
    )
    quota = k8s.core.v1.ResourceQuota(
        f"{prefix}-gpu-quota",
        metadata=metadata(GPU_QUOTA),
        spec={"hard": {f"requests.{GPU_RESOURCE}": str(gpus)}},
        opts=opts,
    )
    return RunnerNamespaceGuards(account, quota)
