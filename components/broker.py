"""The runner broker: the one place in the cluster that holds the runner credential.

Runner pods ask it for a single-use JIT runner, proving which pod they are with a
pod-bound token; it decides the runner's name and labels from the pod's owner,
and removes from GitHub every runner whose pod is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from components import runner_manifests as m

if TYPE_CHECKING:
    from components.settings import RunnerCredential

BROKER = "runner-broker"
CREDENTIAL_SECRET = "runner-credential"
CREDENTIAL_DIR = "/run/secrets/runner-credential"
BROKER_PORT = 8080
SERVICE_PORT = 80
SWEEP_SECONDS = 30
# Enough for the final sweep that removes every runner whose pod is gone.
BROKER_GRACE_SECONDS = 90
# The broker's ServiceAccount token, mounted by hand so that nothing else is.
KUBE_API_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

BROKER_CPU_MILLIS = 50
BROKER_MEMORY_MIB = 64
BROKER_RESOURCES = {
    "requests": {"cpu": f"{BROKER_CPU_MILLIS}m", "memory": f"{BROKER_MEMORY_MIB}Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}

# TokenReview is cluster-scoped: the one right the broker has outside the two namespaces.
TOKEN_REVIEW_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
]


def system_namespace(runner_namespace: str) -> str:
    return f"{runner_namespace}-system"


def broker_url(runner_namespace: str) -> str:
    return f"http://{BROKER}.{system_namespace(runner_namespace)}.svc.cluster.local:{SERVICE_PORT}"


def credential_data(credential: RunnerCredential) -> dict[str, pulumi.Output[str]]:
    """The Secret's keys: the PAT, or the App's private key; IDs are not secret."""
    if credential.is_app:
        return {"private-key": pulumi.Output.secret(credential.app_private_key)}
    return {"token": pulumi.Output.secret(credential.pat)}


def credential_env(credential: RunnerCredential) -> list[dict]:
    if credential.is_app:
        return [
            {"name": "GITHUB_APP_ID", "value": credential.app_id},
            {"name": "GITHUB_APP_INSTALLATION_ID", "value": credential.app_installation_id},
            {"name": "GITHUB_APP_PRIVATE_KEY_FILE", "value": f"{CREDENTIAL_DIR}/private-key"},
        ]
    return [{"name": "GITHUB_TOKEN_FILE", "value": f"{CREDENTIAL_DIR}/token"}]


def kube_api_volume() -> dict:
    """What automounting would give, written out: a token for the API server, its CA, the namespace."""
    return {
        "name": "kube-api",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            ],
        },
    }


def broker_pod_spec(image: str, repository: str, runner_namespace: str, credential: RunnerCredential) -> dict:
    """The broker's pod: read-only, non-root, on the CPU pool, the credential as files."""
    probe = {"httpGet": {"path": "/healthz", "port": BROKER_PORT}, "periodSeconds": 10, "timeoutSeconds": 3}
    return {
        "serviceAccountName": BROKER,
        "automountServiceAccountToken": False,
        "securityContext": m.pod_security_context(),
        "nodeSelector": {"gpu": "false"},
        "terminationGracePeriodSeconds": BROKER_GRACE_SECONDS,
        "containers": [
            {
                "name": "broker",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "/usr/local/bin/broker.py"],
                "env": [
                    {"name": "BROKER_REPOSITORY", "value": repository},
                    {"name": "BROKER_RUNNER_NAMESPACE", "value": runner_namespace},
                    {"name": "BROKER_AUDIENCE", "value": m.BROKER_AUDIENCE},
                    {"name": "BROKER_LISTEN", "value": f"0.0.0.0:{BROKER_PORT}"},
                    {"name": "BROKER_BASE_RUNNER_DEPLOYMENT", "value": m.BASE_RUNNER},
                    {"name": "BROKER_RUNNER_SERVICE_ACCOUNT", "value": m.RUNNER_ACCOUNT},
                    {"name": "BROKER_SWEEP_SECONDS", "value": str(SWEEP_SECONDS)},
                    *credential_env(credential),
                ],
                "ports": [{"name": "http", "containerPort": BROKER_PORT, "protocol": "TCP"}],
                "resources": BROKER_RESOURCES,
                "securityContext": m.container_security_context(read_only_root=True),
                "volumeMounts": [
                    {"name": "credential", "mountPath": CREDENTIAL_DIR, "readOnly": True},
                    {"name": "kube-api", "mountPath": KUBE_API_DIR, "readOnly": True},
                ],
                "readinessProbe": probe,
                "livenessProbe": {**probe, "failureThreshold": 3},
            }
        ],
        "volumes": [
            # The whole Secret, not a subPath: the kubelet then updates the files
            # when `pulumi up` rotates the credential, and the broker reads them on each use.
            {"name": "credential", "secret": {"secretName": CREDENTIAL_SECRET, "defaultMode": 0o440}},
            kube_api_volume(),
        ],
    }


@dataclass(frozen=True)
class RunnerBrokerArgs:
    runner_namespace: str
    """The namespace whose pods the broker serves. It is created after the broker, and
    grants the broker its rights there, so that destroy removes it before the broker."""
    repository: str
    """owner/name the runners register with."""
    credential: RunnerCredential
    image: pulumi.Input[str]
    """The runner image, which ships the broker, pinned by digest."""
    cpu_pool: pulumi.Resource
    """The broker runs on the CPU pool, and must outlive every runner pod on destroy."""


class RunnerBroker(pulumi.ComponentResource):
    """Creates namespace `<runner namespace>-system` holding the runner credential Secret,
    the broker Deployment and its Service, a NetworkPolicy that admits only pods of the
    runner namespace, and the right to review tokens (cluster-wide, as TokenReview is).

    Gives `url` (what runner pods call), `subject` (for the runner namespace to grant
    the broker its rights there) and `deployment`: the runner namespace depends on it,
    so `pulumi destroy` deletes the runners first and the broker last, after its final
    sweep has removed their registrations from GitHub.
    """

    url: str
    namespace: pulumi.Output[str]
    """`<runner namespace>-system`."""
    deployment: k8s.apps.v1.Deployment
    subject: dict
    """The broker's ServiceAccount, as an RBAC subject."""

    def __init__(self, name: str, args: RunnerBrokerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:RunnerBroker", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        runner_namespace = args.runner_namespace
        labels = m.app_labels(BROKER)

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={
                "name": system_namespace(runner_namespace),
                "labels": {**m.app_labels(m.PART_OF), **m.POD_SECURITY},
            },
            opts=child,
        )

        def metadata(object_name: str) -> dict:
            return {"name": object_name, "namespace": namespace.metadata.name, "labels": labels}

        credential = k8s.core.v1.Secret(
            f"{name}-credential",
            metadata=metadata(CREDENTIAL_SECRET),
            type="Opaque",
            string_data=credential_data(args.credential),
            opts=child,
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-account", metadata=metadata(BROKER), automount_service_account_token=False, opts=child
        )
        self.subject = {"kind": "ServiceAccount", "name": account.metadata.name, "namespace": namespace.metadata.name}

        review_role = k8s.rbac.v1.ClusterRole(
            f"{name}-token-review",
            metadata={"name": namespace.metadata.name.apply(lambda ns: f"{ns}-{BROKER}-token-review"), "labels": labels},
            rules=TOKEN_REVIEW_RULES,
            opts=child,
        )
        review_binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-token-review",
            metadata={"name": review_role.metadata.name, "labels": labels},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": review_role.metadata.name},
            subjects=[self.subject],
            opts=child,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=metadata(BROKER),
            spec={
                "selector": labels,
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": BROKER_PORT, "protocol": "TCP"}],
            },
            opts=child,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-runners-only",
            metadata=metadata(f"{BROKER}-runners-only"),
            spec={
                "podSelector": {"matchLabels": labels},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": runner_namespace}
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": BROKER_PORT}],
                    }
                ],
            },
            opts=child,
        )

        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={
                **metadata(BROKER),
                # Destroy waits until the broker's pod has run its final sweep.
                "annotations": {"pulumi.com/deletionPropagationPolicy": "foreground"},
            },
            spec={
                "replicas": 1,
                # The broker keeps in memory which pods already had their runner:
                # never two at once.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": pulumi.Output.from_input(args.image).apply(
                        lambda image: broker_pod_spec(image, args.repository, runner_namespace, args.credential)
                    ),
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[credential, account, review_binding, service, args.cpu_pool],
            ),
        )
        self.url = broker_url(runner_namespace)
        self.namespace = namespace.metadata.name
        self.register_outputs({"url": self.url})
