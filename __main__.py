"""GPU-backed GitHub Actions runners on GKE: the whole system on one screen.

How each part is made from the settings is in program/system.py; what each part is,
in its component under program/components/.
"""

import pulumi
import pulumi_gcp as gcp
import pulumi_github as github
import pulumi_kubernetes as k8s

from program import system
from program.checks.existing_cluster import require_fit_existing_cluster
from program.checks.github import look_up_repository, require_no_silent_takeover
from program.checks.preflight import preflight_gpu_pool
from program.components.ci_access import CiAccess, CiAccessArgs
from program.components.github_secrets import SECRET_NAMES, GitHubSecrets, GitHubSecretsArgs, variable_names
from program.components.gpu_warmup import GpuWarmup, GpuWarmupArgs
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
from program.components.workload_identity import GitHubWorkloadIdentity, GitHubWorkloadIdentityArgs
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

# A CPU pool for base runners and the broker, a tainted GPU pool from zero: in the user's
# cluster, or in a zonal cluster of the program's own.
cluster = system.cluster(
    settings, existing_cluster, (apis[CONTAINER], apis[IMAGE_STREAMING], apis[IAM]), opts=in_project
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
images = system.images(settings, registry, google_token)

# Everything in the cluster goes through this provider, never the ambient kubeconfig.
# delete_unreachable lets `pulumi destroy` finish if the cluster is already gone.
in_cluster = pulumi.ResourceOptions(
    providers={"kubernetes": k8s.Provider("gke", kubeconfig=cluster.kubeconfig, delete_unreachable=True)}
)

# Per-run: the broker and the base runners that ask it for each run's GPU runners.
# Scale-set: GitHub's Actions Runner Controller, `runs-on: <scaleSetName>`.
runner_side = (
    system.scale_set_runners(settings, images, cluster, in_cluster, in_project)
    if settings.is_scale_set
    else system.per_run_runners(settings, images, cluster.cpu_pool, in_cluster)
)

# The image pulled while a new GPU node installs its driver, and optional warm GPU nodes
# (in scale-set mode ARC keeps gpuWarmRunners idle runners instead of placeholders).
GpuWarmup(
    "gpu-warmup",
    GpuWarmupArgs(
        namespace=runner_side.system_namespace,
        image=images.gpu.cluster_image,
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
deploy_identity = system.deploy_identity(
    settings,
    github_repository,
    workload_identity,
    (apis[IAM],),
    opts=pulumi.ResourceOptions.merge(in_project, in_cluster),
)

# CI reads the runner namespace, signing in with GitHub's OIDC token; no credential in GitHub.
ci_access = CiAccess(
    "ci",
    CiAccessArgs(
        namespace=runner_side.namespace,
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
        variables=system.github_variables(settings, workload_identity, deploy_identity),
    ),
    opts=pulumi.ResourceOptions(providers={"github": github_provider}),
)

pulumi.export("clusterName", cluster.name)
pulumi.export("clusterLocation", cluster.location)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("runnerImage", images.runner.image)
pulumi.export("clusterRunnerImage", images.runner.cluster_image)
pulumi.export("gpuRunnerImage", images.gpu.cluster_image)
pulumi.export("namespace", runner_side.namespace)
if settings.is_scale_set:
    pulumi.export("scaleSetName", settings.scale_set_name)
else:
    pulumi.export("brokerImage", images.broker.cluster_image)
    pulumi.export("gpuRunnerTemplate", runner_side.gpu_runner_template)
