"""The runner broker: the one place in the cluster that holds the runner credential.

Runner pods ask it for a single-use JIT runner, proving which pod they are with a
pod-bound token; it decides the runner's name and labels from the pod's owner,
creates a run's GPU runner Jobs when a job of that run asks, and removes from GitHub
every runner whose pod is gone.
"""

import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from program.manifests import broker as b
from program.manifests.runners import POD_SECURITY, app_labels
from program.settings import RunnerCredential
from runner_contract import BROKER, BROKER_PORT, BROKER_SERVICE_PORT, PART_OF, broker_url, system_namespace


@dataclass(frozen=True)
class RunnerBrokerArgs:
    runner_namespace: str
    """The namespace whose pods the broker serves. It is created after the broker, and
    grants the broker its rights there, so that destroy removes it before the broker."""
    repository: str
    """owner/name the runners register with."""
    credential: RunnerCredential
    image: pulumi.Input[str]
    """The broker's own image, pinned by digest, as the cluster pulls it."""
    gpu_runner_job: pulumi.Input[dict]
    """The GPU runner Job template the broker creates runners from (run IDs as placeholders)."""
    max_gpu_runners_per_run: int
    """The most GPU runners one run may ask for: the GPU pool's size."""
    cpu_pool: pulumi.Resource
    """The broker runs on the CPU pool, and must outlive every runner pod on destroy."""


class RunnerBroker(pulumi.ComponentResource):
    """Creates namespace `<runner namespace>-system` holding the runner credential Secret,
    the GPU runner Job template (a ConfigMap CI cannot reach), the broker Deployment and
    its Service, a NetworkPolicy that admits only pods of the runner namespace, and the
    right to review tokens (cluster-wide, as TokenReview is).

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
        labels = app_labels(BROKER)

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={
                "name": system_namespace(runner_namespace),
                "labels": {**app_labels(PART_OF), **POD_SECURITY},
            },
            opts=child,
        )

        def metadata(object_name: str) -> dict:
            return {"name": object_name, "namespace": namespace.metadata.name, "labels": labels}

        credential = k8s.core.v1.Secret(
            f"{name}-credential",
            metadata=metadata(b.CREDENTIAL_SECRET),
            type="Opaque",
            string_data=args.credential.secret_data(),
            opts=child,
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-account", metadata=metadata(BROKER), automount_service_account_token=False, opts=child
        )
        self.subject = {"kind": "ServiceAccount", "name": account.metadata.name, "namespace": namespace.metadata.name}

        review_role = k8s.rbac.v1.ClusterRole(
            f"{name}-token-review",
            metadata={
                "name": namespace.metadata.name.apply(lambda ns: f"{ns}-{BROKER}-token-review"),
                "labels": labels,
            },
            rules=b.TOKEN_REVIEW_RULES,
            opts=child,
        )
        review_binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-token-review",
            metadata={"name": review_role.metadata.name, "labels": labels},
            role_ref={
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": review_role.metadata.name,
            },
            subjects=[self.subject],
            opts=child,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=metadata(BROKER),
            spec={
                "selector": labels,
                "ports": [{"name": "http", "port": BROKER_SERVICE_PORT, "targetPort": BROKER_PORT, "protocol": "TCP"}],
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
                            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": runner_namespace}}}
                        ],
                        "ports": [{"protocol": "TCP", "port": BROKER_PORT}],
                    }
                ],
            },
            opts=child,
        )

        template = k8s.core.v1.ConfigMap(
            f"{name}-gpu-runner-job",
            metadata=metadata(b.BROKER_TEMPLATE_CONFIGMAP),
            data={b.TEMPLATE_FILE: pulumi.Output.from_input(args.gpu_runner_job).apply(json.dumps)},
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
                # Grants are recorded on the pods, so a new broker refuses what an old
                # one granted; one at a time keeps the sweep's view simple.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": pulumi.Output.from_input(args.image).apply(
                        lambda image: b.broker_pod_spec(
                            image,
                            args.repository,
                            runner_namespace,
                            args.max_gpu_runners_per_run,
                            args.credential.app_id,
                            args.credential.app_installation_id,
                        )
                    ),
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[credential, template, account, review_binding, service, args.cpu_pool],
            ),
        )
        self.url = broker_url(runner_namespace)
        self.namespace = namespace.metadata.name
        self.register_outputs({"url": self.url})
