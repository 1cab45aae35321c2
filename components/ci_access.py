"""CI's access to the cluster: one ServiceAccount that may only start and stop GPU runners."""

import base64
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.documents import ci_kubeconfig
from components.runner_manifests import TEMPLATE_CONFIGMAP, app_labels

CI_ACCOUNT = "ci-runner-launcher"

# Exactly what the example workflow does: create this run's runner Job from the
# template, watch it and its pod, read its logs, delete it.
CI_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [TEMPLATE_CONFIGMAP], "verbs": ["get"]},
]


@dataclass(frozen=True)
class CiAccessArgs:
    namespace: pulumi.Input[str]
    """The runner namespace; CI's rights end at its edge."""
    cluster_name: pulumi.Input[str]
    """The name the kubeconfig gives the cluster."""
    endpoint: pulumi.Input[str]
    ca_certificate: pulumi.Input[str]
    """The cluster CA, base64-encoded PEM."""


class CiAccess(pulumi.ComponentResource):
    """A namespaced ServiceAccount, Role and RoleBinding for CI, and a kubeconfig that carries its token.

    Gives `kubeconfig` (secret): endpoint, CA and the account's bearer token, with the
    runner namespace as default. It holds no Google credential.
    """

    kubeconfig: pulumi.Output[str]

    def __init__(self, name: str, args: CiAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:CiAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def metadata(object_name: str) -> dict:
            return {"name": object_name, "namespace": args.namespace, "labels": app_labels(CI_ACCOUNT)}

        account = k8s.core.v1.ServiceAccount(
            f"{name}-account", metadata=metadata(CI_ACCOUNT), automount_service_account_token=False, opts=child
        )
        role = k8s.rbac.v1.Role(f"{name}-role", metadata=metadata(CI_ACCOUNT), rules=CI_RULES, opts=child)
        k8s.rbac.v1.RoleBinding(
            f"{name}-binding",
            metadata=metadata(CI_ACCOUNT),
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=[{"kind": "ServiceAccount", "name": account.metadata.name, "namespace": args.namespace}],
            opts=child,
        )
        # A long-lived token Secret: the controller fills it in, and the provider waits
        # for that. It must follow the account, or the controller has nothing to bind.
        token_secret = k8s.core.v1.Secret(
            f"{name}-token",
            metadata={
                **metadata(f"{CI_ACCOUNT}-token"),
                "annotations": {"kubernetes.io/service-account.name": CI_ACCOUNT},
            },
            type="kubernetes.io/service-account-token",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[account]),
        )
        token = token_secret.data.apply(lambda data: base64.b64decode(data["token"]).decode())
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(args.cluster_name, args.endpoint, args.ca_certificate, token, args.namespace).apply(
                lambda values: ci_kubeconfig(*values)
            )
        )
        self.register_outputs({"kubeconfig": self.kubeconfig})
