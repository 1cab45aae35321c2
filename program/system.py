"""How each part of the system is made from the settings: the wiring `__main__.py` calls in order.

Each function registers the same resources, under the same names and parents, as if its
body stood in `__main__.py`; it only keeps the arguments out of the one-screen overview.
"""

from dataclasses import dataclass

import pulumi

from program.checks.existing_cluster import ExistingCluster
from program.checks.github import RepositoryFacts
from program.components.broker import RunnerBroker, RunnerBrokerArgs
from program.components.cluster import GkeCluster, GkeClusterArgs
from program.components.container_image import ContainerImage, ContainerImageArgs
from program.components.deploy_identity import DeployIdentity, DeployIdentityArgs
from program.components.existing_cluster import ExistingGkeCluster, ExistingGkeClusterArgs
from program.components.github_secrets import variable_names
from program.components.image_registry import ImageRegistry
from program.components.node_pools import cpu_pool_spec, gpu_pool_spec
from program.components.runners import Runners, RunnersArgs
from program.components.scale_set import RunnerScaleSet, RunnerScaleSetArgs
from program.components.scale_set_dashboard import ScaleSetDashboard, ScaleSetDashboardArgs
from program.components.workload_identity import GitHubWorkloadIdentity
from program.manifests.images import BROKER_IMAGE, RUNNER_IMAGE, ImageSource, custom_runner_image
from program.manifests.runners import gpu_runner_job
from program.manifests.scale_set import github_config_url
from program.settings import Settings


def cluster(
    settings: Settings,
    existing: ExistingCluster | None,
    services: tuple[pulumi.Resource, ...],
    opts: pulumi.ResourceOptions,
) -> GkeCluster | ExistingGkeCluster:
    """The same pools either way: in the user's cluster (not in the stack, so never destroyed),
    or in a zonal cluster of the program's own."""
    cpu_pool = cpu_pool_spec(
        settings.cpu_machine_type, settings.cpu_min_nodes, settings.cpu_max_nodes, settings.cpu_spot
    )
    gpu_pool = gpu_pool_spec(
        gpu_type=settings.gpu_type,
        gpu_count=settings.gpu_count,
        driver_version=settings.gpu_driver_version,
        machine_type=settings.gpu_machine_type,
        min_nodes=settings.gpu_min_nodes,
        max_nodes=settings.gpu_max_nodes,
        spot=settings.gpu_spot,
    )
    if existing:
        return ExistingGkeCluster(
            "gke",
            ExistingGkeClusterArgs(
                gcp_project=settings.gcp_project,
                cluster_name=existing.name,
                location=existing.location,
                endpoint=existing.endpoint,
                ca_certificate=existing.ca_certificate,
                name_prefix=settings.cluster_name,
                cpu_pool=cpu_pool,
                gpu_pool=gpu_pool,
                node_locations=() if settings.cluster_location == settings.zone else (settings.zone,),
                services=services,
            ),
            opts=opts,
        )
    return GkeCluster(
        "gke",
        GkeClusterArgs(
            gcp_project=settings.gcp_project,
            zone=settings.zone,
            cluster_name=settings.cluster_name,
            deletion_protection=settings.deletion_protection,
            cpu_pool=cpu_pool,
            gpu_pool=gpu_pool,
            autoscaling_profile=settings.autoscaling_profile,
            authorized_networks=settings.control_plane_authorized_networks,
            services=services,
            managed_prometheus=settings.is_scale_set,
        ),
        opts=opts,
    )


@dataclass(frozen=True)
class Images:
    runner: ContainerImage
    broker: ContainerImage | None
    """None in scale-set mode, which has no broker."""
    gpu: ContainerImage
    """What GPU runners run: the user's own image built FROM ours, or ours."""


def images(settings: Settings, registry: ImageRegistry, google_token: pulumi.Input[str]) -> Images:
    """Every image, published to GHCR and pushed to the cluster's repository with `pulumi up`'s own token."""

    def image(name: str, source: ImageSource, base_image: pulumi.Input[str] | None = None) -> ContainerImage:
        return ContainerImage(
            name,
            ContainerImageArgs(
                source=source,
                github_owner=settings.github_owner,
                github_repository=settings.github_repository,
                registry_token=settings.registry_token,
                cluster_repository=registry.repository,
                cluster_registry_token=google_token,
                base_image=base_image,
            ),
        )

    runner = image("runner-image", RUNNER_IMAGE)
    broker = None if settings.is_scale_set else image("broker-image", BROKER_IMAGE)
    gpu = runner
    if settings.runner_image_dockerfile:
        gpu = image("gpu-runner-image", custom_runner_image(settings.runner_image_dockerfile), runner.image)
    return Images(runner=runner, broker=broker, gpu=gpu)


@dataclass(frozen=True)
class RunnerSide:
    """What the rest of the system needs of the runners, in either mode."""

    namespace: pulumi.Output[str]
    """The runner namespace."""
    system_namespace: pulumi.Output[str]
    """`<namespace>-system`: the broker, or ARC's controller and listener."""
    gpu_runner_template: pulumi.Output[str] | None = None
    """Per-run mode: the GPU runner Job the broker creates, published read-only."""


def per_run_runners(
    settings: Settings, images: Images, cpu_pool: pulumi.Resource, opts: pulumi.ResourceOptions
) -> RunnerSide:
    """The broker, the only holder of the runner credential and the only creator of GPU runners,
    and the base runners that ask it for a run's GPU runners."""
    gpu_runner = images.gpu.cluster_image.apply(
        lambda image: gpu_runner_job(
            image,
            settings.namespace,
            settings.gpu_count,
            settings.gpu_machine_type,
            settings.gpu_runner_deadline_minutes,
        )
    )
    broker = RunnerBroker(
        "broker",
        RunnerBrokerArgs(
            runner_namespace=settings.namespace,
            repository=f"{settings.github_owner}/{settings.github_repository}",
            credential=settings.runner_credential,
            image=images.broker.cluster_image,
            gpu_runner_job=gpu_runner,
            max_gpu_runners_per_run=settings.gpu_max_nodes,
            cpu_pool=cpu_pool,
        ),
        opts=opts,
    )
    runners = Runners(
        "runners",
        RunnersArgs(
            namespace=settings.namespace,
            image=images.runner.cluster_image,
            broker_url=broker.url,
            broker_subject=broker.subject,
            broker=broker.deployment,
            base_runner_replicas=settings.base_runner_replicas,
            gpu_runner_job=gpu_runner,
            gpu_count=settings.gpu_count,
            gpu_max_nodes=settings.gpu_max_nodes,
            cpu_pool=cpu_pool,
        ),
        opts=opts,
    )
    return RunnerSide(runners.namespace, broker.namespace, runners.gpu_runner_template)


def scale_set_runners(
    settings: Settings,
    images: Images,
    cluster: GkeCluster | ExistingGkeCluster,
    in_cluster: pulumi.ResourceOptions,
    in_project: pulumi.ResourceOptions,
) -> RunnerSide:
    """GitHub's Actions Runner Controller: its listener takes the scale set's jobs from GitHub's
    queue and its controller starts one GPU runner pod per job (`runs-on: <scaleSetName>`)."""
    scale_set = RunnerScaleSet(
        "scale-set",
        RunnerScaleSetArgs(
            namespace=settings.namespace,
            name=settings.scale_set_name,
            config_url=github_config_url(
                settings.github_owner, settings.github_repository, settings.github_organization
            ),
            runner_group=settings.runner_group,
            credential=settings.runner_credential,
            image=images.gpu.cluster_image,
            gpu_count=settings.gpu_count,
            gpu_machine_type=settings.gpu_machine_type,
            gpu_max_nodes=settings.gpu_max_nodes,
            warm_runners=settings.gpu_warm_runners,
            deadline_minutes=settings.gpu_runner_deadline_minutes,
            cpu_pool=cluster.cpu_pool,
        ),
        opts=in_cluster,
    )
    ScaleSetDashboard(
        "scale-set-dashboard",
        ScaleSetDashboardArgs(
            gcp_project=settings.gcp_project,
            cluster_name=cluster.name,
            location=cluster.location,
            controller_namespace=scale_set.controller_namespace,
            scale_set_name=settings.scale_set_name,
        ),
        opts=in_project,
    )
    return RunnerSide(scale_set.namespace, scale_set.controller_namespace)


def deploy_identity(
    settings: Settings,
    repository: RepositoryFacts,
    workload_identity: GitHubWorkloadIdentity,
    services: tuple[pulumi.Resource, ...],
    opts: pulumi.ResourceOptions,
) -> DeployIdentity | None:
    """Opt-in: the repository's deploy job, on the default branch only, pushes the model's image
    and applies it to the user's namespace with the same keyless tokens, instead of a key."""
    if not settings.deploy_identity:
        return None
    return DeployIdentity(
        "deploy",
        DeployIdentityArgs(
            gcp_project=settings.gcp_project,
            name_prefix=settings.cluster_name,
            repository_full_name=repository.full_name,
            default_branch=repository.default_branch,
            workload_identity_provider=workload_identity.provider_name,
            namespace=settings.deploy_namespace,
            registry=settings.deploy_registry,
            data_bucket=settings.data_bucket,
            services=services,
        ),
        opts=opts,
    )


def github_variables(
    settings: Settings, workload_identity: GitHubWorkloadIdentity, deploy: DeployIdentity | None
) -> dict[str, pulumi.Input[str]]:
    """The Actions variables, by the names workflows read them."""
    values = (
        workload_identity.provider_name,
        workload_identity.ci_account_email,
        *([deploy.email] if deploy else []),
    )
    return dict(zip(variable_names(settings.deploy_identity), values, strict=True))
