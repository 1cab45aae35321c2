"""GPU-backed GitHub Actions runners on GKE: the whole system on one screen."""

import pulumi
import pulumi_gcp as gcp
import pulumi_github as github
import pulumi_kubernetes as k8s

from program.components.broker import RunnerBroker, RunnerBrokerArgs
from program.components.ci_access import CiAccess, CiAccessArgs
from program.components.cluster import GkeCluster, GkeClusterArgs
from program.components.existing_cluster import ExistingGkeCluster, ExistingGkeClusterArgs
from program.components.node_pools import cpu_pool_spec, gpu_pool_spec
from program.checks.existing_cluster import require_fit_existing_cluster
from program.checks.github import look_up_repository, require_no_silent_takeover
from program.components.deploy_identity import DeployIdentity, DeployIdentityArgs
from program.components.github_secrets import SECRET_NAMES, GitHubSecrets, GitHubSecretsArgs, variable_names
from program.components.gpu_warmup import GpuWarmup, GpuWarmupArgs
from program.checks.preflight import preflight_gpu_pool
from program.components.container_image import ContainerImage, ContainerImageArgs
from program.components.image_registry import ImageRegistry, ImageRegistryArgs
from program.components.project_services import (
    ARTIFACT_REGISTRY,
    CONTAINER,
    IAM,
    IMAGE_STREAMING,
    IMPERSONATION,
    TOKEN_EXCHANGE,
    ProjectServices,
    ProjectServicesArgs,
)
from program.components.runners import Runners, RunnersArgs
from program.components.scale_set import RunnerScaleSet, RunnerScaleSetArgs
from program.components.scale_set_dashboard import ScaleSetDashboard, ScaleSetDashboardArgs
from program.components.workload_identity import GitHubWorkloadIdentity, GitHubWorkloadIdentityArgs
from program.manifests.images import BROKER_IMAGE, RUNNER_IMAGE, ImageSource, custom_runner_image
from program.manifests.runners import gpu_runner_job
from program.manifests.scale_set import github_config_url
from program.settings import load_settings

settings = load_settings()
repository = f"{settings.github_owner}/{settings.github_repository}"
gcp_provider = gcp.Provider("gcp", project=settings.gcp_project, zone=settings.zone)
github_provider = github.Provider("github", owner=settings.github_owner, token=settings.github_token)
# Before anything is created: an existing cluster has what the runners' safety needs, the
# zone and quotas can hold the GPU pool, the repository is not public (a fork's code would
# run on our runners), and no secret or variable of the same name that is not this
# stack's would be silently taken over.
existing_cluster = require_fit_existing_cluster(settings, gcp_provider) if settings.existing_cluster else None
preflight_gpu_pool(settings, gcp_provider)
github_repository = look_up_repository(repository, settings.allow_public_repository, github_provider)
require_no_silent_takeover(
    repository,
    {*SECRET_NAMES, *variable_names(settings.deploy_identity)},
    settings.adopt_existing_secrets,
    github_provider,
)

in_project = pulumi.ResourceOptions(providers={"gcp": gcp_provider})
apis = ProjectServices("apis", ProjectServicesArgs(gcp_project=settings.gcp_project), opts=in_project).apis

cpu_pool = cpu_pool_spec(settings.cpu_machine_type, settings.cpu_min_nodes, settings.cpu_max_nodes, settings.cpu_spot)
gpu_pool = gpu_pool_spec(
    gpu_type=settings.gpu_type,
    gpu_count=settings.gpu_count,
    driver_version=settings.gpu_driver_version,
    machine_type=settings.gpu_machine_type,
    min_nodes=settings.gpu_min_nodes,
    max_nodes=settings.gpu_max_nodes,
    spot=settings.gpu_spot,
)
cluster_services = (apis[CONTAINER], apis[IMAGE_STREAMING], apis[IAM])
# The same pools either way: in the user's cluster (not in the stack, so never destroyed),
# or in a zonal cluster of the program's own.
cluster = (
    ExistingGkeCluster(
        "gke",
        ExistingGkeClusterArgs(
            gcp_project=settings.gcp_project,
            cluster_name=existing_cluster.name,
            location=existing_cluster.location,
            endpoint=existing_cluster.endpoint,
            ca_certificate=existing_cluster.ca_certificate,
            name_prefix=settings.cluster_name,
            cpu_pool=cpu_pool,
            gpu_pool=gpu_pool,
            node_locations=() if settings.cluster_location == settings.zone else (settings.zone,),
            services=cluster_services,
        ),
        opts=in_project,
    )
    if existing_cluster
    else GkeCluster(
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
            services=cluster_services,
            managed_prometheus=settings.is_scale_set,
        ),
        opts=in_project,
    )
)

# The cluster pulls its images by digest from a repository only its nodes may read;
# `pulumi up` pushes them there with its own short-lived Google token, and to GHCR.
registry = ImageRegistry(
    "registry",
    ImageRegistryArgs(
        gcp_project=settings.gcp_project,
        zone=settings.zone,
        name_prefix=settings.cluster_name,
        node_account_member=cluster.node_account_member,
        services=(apis[ARTIFACT_REGISTRY],),
    ),
    opts=in_project,
)
google_token = gcp.organizations.get_client_config_output(opts=pulumi.InvokeOptions(provider=gcp_provider)).access_token


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


runner_image = image("runner-image", RUNNER_IMAGE)
# Scale-set mode has no broker.
broker_image = None if settings.is_scale_set else image("broker-image", BROKER_IMAGE)
# GPU runners run the user's own image, built FROM ours, where one is configured.
gpu_image = (
    image("gpu-runner-image", custom_runner_image(settings.runner_image_dockerfile), runner_image.image)
    if settings.runner_image_dockerfile
    else runner_image
)

# Everything in the cluster goes through this provider, never the ambient kubeconfig.
# delete_unreachable lets `pulumi destroy` finish if the cluster is already gone.
in_cluster = pulumi.ResourceOptions(
    providers={"kubernetes": k8s.Provider("gke", kubeconfig=cluster.kubeconfig, delete_unreachable=True)}
)

if settings.is_scale_set:
    # GitHub's Actions Runner Controller: its listener takes the scale set's jobs from GitHub's
    # queue and its controller starts one GPU runner pod per job (`runs-on: <scaleSetName>`).
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
            image=gpu_image.cluster_image,
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
    runner_namespace, system_namespace = scale_set.namespace, scale_set.controller_namespace
else:
    # The GPU runner Job the broker creates for a run that asks; runner IDs are filled in per run.
    gpu_runner = gpu_image.cluster_image.apply(
        lambda image: gpu_runner_job(
            image,
            settings.namespace,
            settings.gpu_count,
            settings.gpu_machine_type,
            settings.gpu_runner_deadline_minutes,
        )
    )

    # The only holder of the runner credential, and the only creator of GPU runners.
    broker = RunnerBroker(
        "broker",
        RunnerBrokerArgs(
            runner_namespace=settings.namespace,
            repository=repository,
            credential=settings.runner_credential,
            image=broker_image.cluster_image,
            gpu_runner_job=gpu_runner,
            max_gpu_runners_per_run=settings.gpu_max_nodes,
            cpu_pool=cluster.cpu_pool,
        ),
        opts=in_cluster,
    )

    runners = Runners(
        "runners",
        RunnersArgs(
            namespace=settings.namespace,
            image=runner_image.cluster_image,
            broker_url=broker.url,
            broker_subject=broker.subject,
            broker=broker.deployment,
            base_runner_replicas=settings.base_runner_replicas,
            gpu_runner_job=gpu_runner,
            gpu_count=settings.gpu_count,
            gpu_max_nodes=settings.gpu_max_nodes,
            cpu_pool=cluster.cpu_pool,
        ),
        opts=in_cluster,
    )
    runner_namespace, system_namespace = runners.namespace, broker.namespace

# The image pulled while a new GPU node installs its driver, and optional warm GPU nodes
# (in scale-set mode ARC keeps gpuWarmRunners idle runners instead of placeholders).
GpuWarmup(
    "gpu-warmup",
    GpuWarmupArgs(
        namespace=system_namespace,
        image=gpu_image.cluster_image,
        gpu_count=settings.gpu_count,
        gpu_machine_type=settings.gpu_machine_type,
        warm_runners=0 if settings.is_scale_set else settings.gpu_warm_runners,
    ),
    opts=in_cluster,
)

# Keyless: the repository's workflows trade GitHub's OIDC token for short-lived Google credentials.
workload_identity = GitHubWorkloadIdentity(
    "github-oidc",
    GitHubWorkloadIdentityArgs(
        gcp_project=settings.gcp_project,
        name_prefix=settings.cluster_name,
        repository_full_name=github_repository.full_name,
        repository_id=github_repository.repository_id,
        owner_id=github_repository.owner_id,
        data_bucket=settings.data_bucket,
        data_write_branch=settings.data_write_branch or github_repository.default_branch,
        services=(apis[IAM], apis[TOKEN_EXCHANGE], apis[IMPERSONATION]),
    ),
    opts=in_project,
)

# Opt-in: the repository's deploy job, on the default branch only, pushes the model's image
# and applies it to the user's namespace with the same keyless tokens, instead of a key.
deploy_identity = (
    DeployIdentity(
        "deploy",
        DeployIdentityArgs(
            gcp_project=settings.gcp_project,
            name_prefix=settings.cluster_name,
            repository_full_name=github_repository.full_name,
            default_branch=github_repository.default_branch,
            workload_identity_provider=workload_identity.provider_name,
            namespace=settings.deploy_namespace,
            registry=settings.deploy_registry,
            data_bucket=settings.data_bucket,
            services=(apis[IAM],),
        ),
        opts=pulumi.ResourceOptions.merge(in_project, in_cluster),
    )
    if settings.deploy_identity
    else None
)

ci_access = CiAccess(
    "ci",
    CiAccessArgs(
        namespace=runner_namespace,
        ci_identity=workload_identity.ci_account_email,
        cluster_name=cluster.context_name,
        endpoint=cluster.endpoint,
        ca_certificate=cluster.ca_certificate,
    ),
    opts=in_cluster,
)

GitHubSecrets(
    "actions-secrets",
    GitHubSecretsArgs(
        repository=settings.github_repository,
        secrets=dict(zip(SECRET_NAMES, (ci_access.kubeconfig,), strict=True)),
        variables=dict(
            zip(
                variable_names(settings.deploy_identity),
                (
                    workload_identity.provider_name,
                    workload_identity.ci_account_email,
                    *([deploy_identity.email] if deploy_identity else []),
                ),
                strict=True,
            )
        ),
    ),
    opts=pulumi.ResourceOptions(providers={"github": github_provider}),
)

pulumi.export("clusterName", cluster.name)
pulumi.export("clusterLocation", cluster.location)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("runnerImage", runner_image.image)
pulumi.export("clusterRunnerImage", runner_image.cluster_image)
pulumi.export("gpuRunnerImage", gpu_image.cluster_image)
pulumi.export("namespace", runner_namespace)
if settings.is_scale_set:
    pulumi.export("scaleSetName", settings.scale_set_name)
else:
    pulumi.export("brokerImage", broker_image.cluster_image)
    pulumi.export("gpuRunnerTemplate", runners.gpu_runner_template)
