"""Preflight: what GKE would find out after 10 to 20 minutes, asked of Compute Engine in seconds.

Before any resource, with the credentials `pulumi up` already has: does the zone exist and
offer the GPU type and the GPU machine, and do the region's quota for that GPU and the
project's GPUS_ALL_REGIONS cover the GPU pool at its largest? Every shortfall is reported
at once, with the numbers and the fix.
"""

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from program.settings import Settings

COMPUTE_API = "https://compute.googleapis.com"
TIMEOUT_SECONDS = 10

# Compute Engine's quota metric for each GPU type; spot VMs draw on the PREEMPTIBLE_ one.
QUOTA_METRICS = {
    "nvidia-tesla-t4": "NVIDIA_T4_GPUS",
    "nvidia-tesla-p4": "NVIDIA_P4_GPUS",
    "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
    "nvidia-tesla-p100": "NVIDIA_P100_GPUS",
    "nvidia-l4": "NVIDIA_L4_GPUS",
    "nvidia-tesla-a100": "NVIDIA_A100_GPUS",
    "nvidia-a100-80gb": "NVIDIA_A100_80GB_GPUS",
    "nvidia-h100-80gb": "NVIDIA_H100_GPUS",
    "nvidia-h100-mega-80gb": "NVIDIA_H100_MEGA_GPUS",
    "nvidia-h200-141gb": "NVIDIA_H200_GPUS",
    "nvidia-b200": "NVIDIA_B200_GPUS",
}


@dataclass(frozen=True)
class GpuPoolPlan:
    """What the GPU pool may use at its largest."""

    gcp_project: str
    zone: str
    zone_key: str
    """The config key the zone came from: gcp:zone, or location."""
    gpu_type: str
    gpu_count: int
    machine_type: str
    max_nodes: int
    spot: bool

    @property
    def region(self) -> str:
        return self.zone.rsplit("-", 1)[0]

    @property
    def gpus(self) -> int:
        return self.max_nodes * self.gpu_count

    @property
    def quota_metric(self) -> str:
        return ("PREEMPTIBLE_" if self.spot else "") + QUOTA_METRICS[self.gpu_type]


class ComputeApiError(Exception):
    def __init__(self, status: int, message: str, disabled: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.disabled = disabled


class ComputeApi:
    """GET on the Compute Engine API with a bearer token; errors carry the API's own message."""

    def __init__(self, base_url: str, access_token: str) -> None:
        self._base = base_url.rstrip("/")
        self._token = access_token

    def get(self, path: str) -> dict | None:
        """The JSON answer, or None for a 404."""
        request = urllib.request.Request(
            f"{self._base}/compute/v1/{path}",
            headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            body = _json_or_empty(error.read())
            details = body.get("error", {}) if isinstance(body, dict) else {}
            reasons = json.dumps(details.get("errors", [])) + json.dumps(details.get("details", []))
            disabled = "SERVICE_DISABLED" in reasons or "accessNotConfigured" in reasons
            raise ComputeApiError(error.code, details.get("message") or f"HTTP {error.code}", disabled) from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise ComputeApiError(0, f"could not reach {self._base}: {getattr(error, 'reason', error)}") from None


def _json_or_empty(raw: bytes) -> dict:
    try:
        return json.loads(raw)
    except ValueError:
        return {}


def _quota(document: dict, metric: str) -> tuple[float, float] | None:
    """(limit, usage) of `metric` in a region or project document."""
    for quota in document.get("quotas", []):
        if quota.get("metric") == metric:
            return float(quota.get("limit", 0)), float(quota.get("usage", 0))
    return None


def _quota_problem(
    key: str, where: str, metric: str, found: tuple[float, float] | None, plan: GpuPoolPlan
) -> str | None:
    limit, usage = found or (0.0, 0.0)
    free = limit - usage
    if free >= plan.gpus:
        return None
    pool = f"the GPU pool may use {plan.gpus} GPUs (gpuMaxNodes {plan.max_nodes} x gpuCount {plan.gpu_count})"
    request = f"https://console.cloud.google.com/iam-admin/quotas?project={plan.gcp_project}&metric={metric}"
    if limit <= 0:
        # A new project's GPU quota is 0: nothing to shrink the pool to, only a request to make.
        return (
            f"{key}: your project has no quota for {metric} in {where}, and {pool}; "
            f"request it (at least {plan.gpus}): {request}"
        )
    nodes = int(free) // plan.gpu_count
    if nodes < 1:
        return (
            f"{key}: {pool}, but {metric} in {where} allows {limit:g} with {usage:g} in use ({free:g} free), "
            f"not enough for one GPU node; accepted: free GPUs that other work holds, or request more quota: "
            f"{request}"
        )
    return (
        f"{key}: {pool}, but {metric} in {where} allows {limit:g} with {usage:g} in use ({free:g} free); "
        f"accepted: gpuMaxNodes {nodes} or fewer, or request more quota: {request}"
    )


def check(plan: GpuPoolPlan, api: ComputeApi) -> list[str]:
    """Every shortfall of the zone and the quotas for the GPU pool, each naming its key and the fix."""
    project, zone = plan.gcp_project, plan.zone
    accelerators = api.get(f"projects/{project}/zones/{zone}/acceleratorTypes")
    if accelerators is None:
        return [
            f"{plan.zone_key}: {zone} is not a zone of Compute Engine; accepted: a zone from "
            f"gcloud compute zones list --filter=region:{plan.region}"
        ]
    problems = []
    offered = sorted(item.get("name", "") for item in accelerators.get("items", []))
    if plan.gpu_type not in offered:
        problems.append(
            f"gke-gpu-runners:gpuType: {zone} does not offer {plan.gpu_type} "
            f"(it offers: {', '.join(offered) or 'no GPU'}); "
            f"accepted: a GPU type it offers, or a zone that offers {plan.gpu_type}: "
            f"gcloud compute accelerator-types list --filter=name={plan.gpu_type}"
        )
    if api.get(f"projects/{project}/zones/{zone}/machineTypes/{plan.machine_type}") is None:
        problems.append(
            f"gke-gpu-runners:gpuMachineType: {zone} does not offer {plan.machine_type}; accepted: a zone that does: "
            f"gcloud compute machine-types list --filter=name={plan.machine_type}"
        )
    region = api.get(f"projects/{project}/regions/{plan.region}") or {}
    problems.append(
        _quota_problem(
            "gke-gpu-runners:gpuMaxNodes",
            f"region {plan.region}",
            plan.quota_metric,
            _quota(region, plan.quota_metric),
            plan,
        )
    )
    whole_project = api.get(f"projects/{project}") or {}
    problems.append(
        _quota_problem(
            "gke-gpu-runners:gpuMaxNodes",
            f"project {project}",
            "GPUS_ALL_REGIONS",
            _quota(whole_project, "GPUS_ALL_REGIONS"),
            plan,
        )
    )
    return [problem for problem in problems if problem]


def run_preflight(plan: GpuPoolPlan, access_token: str) -> None:
    """Raises one `pulumi.RunError` listing every shortfall; warns and returns when it cannot ask yet."""
    api = ComputeApi(os.environ.get("GCP_COMPUTE_API_URL", COMPUTE_API), access_token)
    try:
        problems = check(plan, api)
    except ComputeApiError as error:
        if error.disabled:
            # A project set up a minute ago: GKE's API enables Compute Engine's with it, on `pulumi up`.
            pulumi.log.warn(
                f"preflight skipped: the Compute Engine API is not enabled in {plan.gcp_project} yet "
                f"({error}); pulumi up enables it with the Kubernetes Engine API"
            )
            return
        hint = (
            "the GCP credentials pulumi uses were refused: gcloud auth application-default login"
            if error.status in (401, 403)
            else "check the network"
        )
        problems = [
            f"gke-gpu-runners:skipPreflight: the preflight could not ask Compute Engine ({error}); {hint}, "
            "or accepted: pulumi config set skipPreflight true"
        ]
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise pulumi.RunError(f"{len(problems)} preflight problem(s); nothing was created:\n{listed}")


def preflight_gpu_pool(settings: Settings, gcp_provider: pulumi.ProviderResource) -> None:
    """The preflight for these settings, with the GCP provider's own access token; nothing with skipPreflight."""
    if settings.skip_preflight:
        return
    client = gcp.organizations.get_client_config(opts=pulumi.InvokeOptions(provider=gcp_provider))
    plan = GpuPoolPlan(
        gcp_project=settings.gcp_project,
        zone=settings.zone,
        zone_key=settings.zone_key,
        gpu_type=settings.gpu_type,
        gpu_count=settings.gpu_count,
        machine_type=settings.gpu_machine_type,
        max_nodes=settings.gpu_max_nodes,
        spot=settings.gpu_spot,
    )
    run_preflight(plan, client.access_token)
