"""GPU-backed GitHub Actions runners on GKE: the whole system on one screen."""

import pulumi
import pulumi_gcp as gcp
import pulumi_github as github
import pulumi_kubernetes as k8s

from components.broker import RunnerBroker, RunnerBrokerArgs
from components.ci_access import CiAccess, CiAccessArgs
from components.cluster import GkeCluster, GkeClusterArgs, NodePoolSpec, gpu_pool_spec
from components.github_repository import look_up_repository, require_no_silent_takeover
from components.github_secrets import SECRET_NAMES, VARIABLE_NAMES, GitHubSecrets, GitHubSecretsArgs
from components.gpu_warmup import GpuWarmup, GpuWarmupArgs
from components.preflight import preflight_gpu_pool
from components.project_services import (
    ARTIFACT_REGISTRY, CONTAINER, IAM, IMAGE_STREAMING, IMPERSONATION, SECRET_MANAGER, TOKEN_EXCHANGE,
    ProjectServices, ProjectServicesArgs,
)
from components.registry import PullThroughRegistry, PullThroughRegistryArgs
from components.runner_image import RunnerImage, RunnerImageArgs
from components.runners import Runners, RunnersArgs
from components.settings import load_settings
from components.workload_identity import GitHubWorkloadIdentity, GitHubWorkloadIdentityArgs

settings = load_settings()
repository = f"{settings.github_owner}/{settings.github_repository}"
gcp_provider = gcp.Provider("gcp", project=settings.gcp_project, zone=settings.zone)
github_provider = github.Provider("github", owner=settings.github_owner, token=settings.github_token)
# Before anything is created: the zone and quotas can hold the GPU pool, the repository
# is not public (a fork's code would run on our runners), and no secret or variable of
# the same name that is not this stack's would be silently taken over.
preflight_gpu_pool(settings, gcp_provider)
github_repository = look_up_repository(repository, settings.allow_public_repository, github_provider)
require_no_silent_takeover(repository, {*SECRET_NAMES, *VARIABLE_NAMES}, settings.adopt_existing_secrets,
                           github_provider)

in_project = pulumi.ResourceOptions(providers={"gcp": gcp_provider})
apis = ProjectServices("apis", ProjectServicesArgs(gcp_project=settings.gcp_project), opts=in_project).apis

cluster = GkeCluster(
    "gke",
    GkeClusterArgs(
        gcp_project=settings.gcp_project,
        zone=settings.zone,
        cluster_name=settings.cluster_name,
        deletion_protection=settings.deletion_protection,
        cpu_pool=NodePoolSpec(
            machine_type=settings.cpu_machine_type,
            min_nodes=settings.cpu_min_nodes,
            max_nodes=settings.cpu_max_nodes,
            labels={"gpu": "false"},
            spot=settings.cpu_spot,
        ),
        gpu_pool=gpu_pool_spec(
            gpu_type=settings.gpu_type,
            gpu_count=settings.gpu_count,
            driver_version=settings.gpu_driver_version,
            machine_type=settings.gpu_machine_type,
            min_nodes=settings.gpu_min_nodes,
            max_nodes=settings.gpu_max_nodes,
            spot=settings.gpu_spot,
        ),
        autoscaling_profile=settings.autoscaling_profile,
        authorized_networks=settings.control_plane_authorized_networks,
        services=(apis[CONTAINER], apis[IMAGE_STREAMING], apis[IAM]),
    ),
    opts=in_project,
)

# Built from the registry token alone, so it builds while GKE creates the cluster.
runner_image = RunnerImage(
    "runner-image",
    RunnerImageArgs(
        github_owner=settings.github_owner,
        github_repository=settings.github_repository,
        registry_token=settings.registry_token,
    ),
)
# The cluster pulls the same digest through Artifact Registry: no registry credential in the cluster.
registry = PullThroughRegistry(
    "registry",
    PullThroughRegistryArgs(
        gcp_project=settings.gcp_project,
        zone=settings.zone,
        name_prefix=settings.cluster_name,
        github_owner=settings.github_owner,
        pull_token=settings.registry_pull_token,
        services=(apis[ARTIFACT_REGISTRY], apis[SECRET_MANAGER]),
    ),
    opts=in_project,
)
cluster_runner_image = registry.image_for(runner_image.image)

# Everything in the cluster goes through this provider, never the ambient kubeconfig.
# delete_unreachable lets `pulumi destroy` finish if the cluster is already gone.
in_cluster = pulumi.ResourceOptions(
    providers={"kubernetes": k8s.Provider("gke", kubeconfig=cluster.kubeconfig, delete_unreachable=True)}
)

# The only holder of the runner credential; runner pods get single-use JIT runners from it.
broker = RunnerBroker(
    "broker",
    RunnerBrokerArgs(
        runner_namespace=settings.namespace,
        repository=repository,
        credential=settings.runner_credential,
        image=cluster_runner_image,
        cpu_pool=cluster.cpu_pool,
    ),
    opts=in_cluster,
)

runners = Runners(
    "runners",
    RunnersArgs(
        namespace=settings.namespace,
        image=cluster_runner_image,
        broker_url=broker.url,
        broker_subject=broker.subject,
        broker=broker.deployment,
        base_runner_replicas=settings.base_runner_replicas,
        gpu_count=settings.gpu_count,
        gpu_machine_type=settings.gpu_machine_type,
        gpu_max_nodes=settings.gpu_max_nodes,
        gpu_runner_deadline_minutes=settings.gpu_runner_deadline_minutes,
        cpu_pool=cluster.cpu_pool,
    ),
    opts=in_cluster,
)

# The image pulled while a new GPU node installs its driver, and optional warm GPU nodes.
GpuWarmup(
    "gpu-warmup",
    GpuWarmupArgs(
        namespace=broker.namespace,
        image=cluster_runner_image,
        gpu_count=settings.gpu_count,
        gpu_machine_type=settings.gpu_machine_type,
        warm_runners=settings.gpu_warm_runners,
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
        services=(apis[IAM], apis[TOKEN_EXCHANGE], apis[IMPERSONATION]),
    ),
    opts=in_project,
)

ci_access = CiAccess(
    "ci",
    CiAccessArgs(
        namespace=runners.namespace,
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
        secrets=dict(zip(SECRET_NAMES, (ci_access.kubeconfig, cluster.name, cluster.location), strict=True)),
        variables=dict(zip(VARIABLE_NAMES, (workload_identity.provider_name, workload_identity.ci_account_email), strict=True)),
    ),
    opts=pulumi.ResourceOptions(providers={"github": github_provider}),
)

pulumi.export("clusterName", cluster.name)
pulumi.export("clusterLocation", cluster.location)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("runnerImage", runner_image.image)
pulumi.export("clusterRunnerImage", cluster_runner_image)
pulumi.export("namespace", runners.namespace)
pulumi.export("gpuRunnerTemplate", runners.gpu_runner_template)
