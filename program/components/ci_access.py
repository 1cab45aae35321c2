"""CI's access to the cluster: a Google service account that may only read the runner namespace."""

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from program.manifests.kubeconfigs import ci_kubeconfig
from program.manifests.runners import app_labels
from runner_contract import CI_ROLE

# Read-only: the broker creates and deletes GPU runners, on a run's own request. CI may
# watch them, their pods and events, and read a runner's log; nothing else, nowhere else.
READ = ["get", "list", "watch"]
CI_RULES = [
    {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": READ},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": READ},
]


@dataclass(frozen=True)
class CiAccessArgs:
    namespace: pulumi.Input[str]
    """The runner namespace; CI's rights end at its edge."""
    ci_identity: pulumi.Input[str]
    """The Google service account CI acts as (its email), as GKE names it to RBAC."""
    cluster_name: pulumi.Input[str]
    """The name the kubeconfig gives the cluster."""
    endpoint: pulumi.Input[str]
    ca_certificate: pulumi.Input[str]
    """The cluster CA, base64-encoded PEM."""


class CiAccess(pulumi.ComponentResource):
    """A read-only namespaced Role, a RoleBinding to CI's Google service account, and a kubeconfig
    without credentials.

    Gives `kubeconfig`: endpoint, CA and the runner namespace; for credentials it runs
    `gpu-runner credential`, which trades the run's GitHub OIDC token for a short-lived
    Google access token. Nothing in it, or in the cluster, is a long-lived credential.
    """

    kubeconfig: pulumi.Output[str]

    def __init__(self, name: str, args: CiAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:CiAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        metadata = {"name": CI_ROLE, "namespace": args.namespace, "labels": app_labels(CI_ROLE)}

        role = k8s.rbac.v1.Role(f"{name}-role", metadata=metadata, rules=CI_RULES, opts=child)
        k8s.rbac.v1.RoleBinding(
            f"{name}-binding",
            metadata=metadata,
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": args.ci_identity}],
            opts=child,
        )
        self.kubeconfig = pulumi.Output.all(
            args.cluster_name, args.endpoint, args.ca_certificate, args.namespace
        ).apply(lambda values: ci_kubeconfig(*values))
        self.register_outputs({"kubeconfig": self.kubeconfig})
