"""What lands in GitHub: the Actions secrets and variables CI reads, and the variable that says whose they are."""

from dataclasses import dataclass

import pulumi
import pulumi_github as github

from program.settings import this_stack
from runner_contract import (
    DEPLOY_SERVICE_ACCOUNT_VARIABLE,
    KUBECONFIG_SECRET,
    OWNER_VARIABLE,
    SERVICE_ACCOUNT_VARIABLE,
    WORKLOAD_IDENTITY_PROVIDER_VARIABLE,
)

# What the program writes, by the names workflows read (the README's table). The
# variables name who may sign in, and are no credential. Never GCP_K8S_CLUSTER_NAME or
# GCP_K8S_CLUSTER_ZONE: they are the tutorial's deploy job's, which nothing here reads
# (the stack outputs clusterName and clusterLocation say the same).
SECRET_NAMES = (KUBECONFIG_SECRET,)
VARIABLE_NAMES = (WORKLOAD_IDENTITY_PROVIDER_VARIABLE, SERVICE_ACCOUNT_VARIABLE)


def variable_names(deploy_identity: bool) -> tuple[str, ...]:
    """The variables written: with a deploy identity, its service account too."""
    return VARIABLE_NAMES + ((DEPLOY_SERVICE_ACCOUNT_VARIABLE,) if deploy_identity else ())


@dataclass(frozen=True)
class GitHubSecretsArgs:
    repository: str
    """The repository's name; its owner comes with the caller's GitHub provider."""
    secrets: dict[str, pulumi.Input[str]]
    """Secret name -> value; the provider stores every value as a Pulumi secret."""
    variables: dict[str, pulumi.Input[str]]
    """Variable name -> value, readable by workflows as vars.<name>."""


class GitHubSecrets(pulumi.ComponentResource):
    """Writes Actions secrets and variables to one repository through the caller's GitHub provider,
    after the Actions variable `GKE_GPU_RUNNERS_STACK` naming this stack as their owner."""

    def __init__(self, name: str, args: GitHubSecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:GitHubSecrets", name, None, opts)
        owner = github.ActionsVariable(
            f"{name}-owner",
            repository=args.repository,
            variable_name=OWNER_VARIABLE,
            value=this_stack(),
            opts=pulumi.ResourceOptions(parent=self),
        )
        for variable_name, value in args.variables.items():
            github.ActionsVariable(
                f"{name}-{variable_name.lower().replace('_', '-')}",
                repository=args.repository,
                variable_name=variable_name,
                value=value,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[owner]),
            )
        for secret_name, value in args.secrets.items():
            github.ActionsSecret(
                f"{name}-{secret_name.lower().replace('_', '-')}",
                repository=args.repository,
                secret_name=secret_name,
                value=value,  # the provider keeps `value` secret
                opts=pulumi.ResourceOptions(parent=self, depends_on=[owner]),
            )
        self.register_outputs({})
