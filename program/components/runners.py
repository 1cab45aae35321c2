"""The runners in the cluster: their namespace, the base runner, the GPU runner template."""

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from program.manifests import runners as m
from program.components.runner_namespace import guard_runner_namespace
from program.manifests.broker import RUNNER_NAMESPACE_RULES
from runner_contract import BASE_RUNNER, TEMPLATE_CONFIGMAP, TEMPLATE_KEY

BROKER_ACCESS = "runner-broker"


@dataclass(frozen=True)
class RunnersArgs:
    namespace: str
    image: pulumi.Input[str]
    """The runner image, pinned by digest, as the cluster pulls it."""
    broker_url: str
    broker_subject: dict
    """The broker's ServiceAccount, granted its rights in the runner namespace."""
    broker: pulumi.Resource
    """The runner namespace waits for the broker, so destroy removes the runners first."""
    base_runner_replicas: int
    gpu_runner_job: pulumi.Input[dict]
    """The GPU runner Job the broker creates per run, published here read-only as a template."""
    gpu_count: int
    gpu_max_nodes: int
    """The namespace may request no more GPUs than this many nodes of `gpu_count` carry."""
    cpu_pool: pulumi.Resource
    """The base runner waits for this pool, and for no other."""


class Runners(pulumi.ComponentResource):
    """Puts the runners in the cluster through the caller's Kubernetes provider.

    Creates: the runner namespace (Pod Security `restricted`) holding no Secret, the
    runners' ServiceAccount (no API token, no rights), a NetworkPolicy refusing all
    ingress to runner pods, a ResourceQuota capping GPU requests at what the GPU pool
    holds, the broker's Role and RoleBinding, the base-runner Deployment on the CPU
    pool, and ConfigMap `gpu-runner-template`: the GPU runner Job, read-only, for people
    and the smoke test (the broker creates runners from its own copy).
    """

    namespace: pulumi.Output[str]
    gpu_runner_template: pulumi.Output[str]

    def __init__(self, name: str, args: RunnersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:Runners", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": args.namespace, "labels": {**m.app_labels(m.PART_OF), **m.POD_SECURITY}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.broker]),
        )

        # Every object below names the namespace through its output, so it waits for it.
        def metadata(object_name: str, labels: dict | None = None) -> dict:
            return {
                "name": object_name,
                "namespace": namespace.metadata.name,
                "labels": labels or m.app_labels(object_name),
            }

        account = guard_runner_namespace(
            f"{name}-account", name, metadata, args.gpu_max_nodes * args.gpu_count, child
        ).account
        broker_role = k8s.rbac.v1.Role(
            f"{name}-broker", metadata=metadata(BROKER_ACCESS), rules=RUNNER_NAMESPACE_RULES, opts=child
        )
        broker_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-broker",
            metadata=metadata(BROKER_ACCESS),
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": broker_role.metadata.name},
            subjects=[args.broker_subject],
            opts=child,
        )

        base_labels = m.app_labels(BASE_RUNNER)
        k8s.apps.v1.Deployment(
            f"{name}-base-runner",
            metadata=metadata(BASE_RUNNER),
            spec={
                "replicas": args.base_runner_replicas,
                "selector": {"matchLabels": base_labels},
                "template": {
                    "metadata": {"labels": base_labels},
                    "spec": pulumi.Output.from_input(args.image).apply(
                        lambda image: m.base_runner_pod_spec(image, args.broker_url)
                    ),
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[account, broker_binding, args.cpu_pool]),
        )

        self.gpu_runner_template = pulumi.Output.from_input(args.gpu_runner_job).apply(m.render_template)
        k8s.core.v1.ConfigMap(
            f"{name}-gpu-runner-template",
            metadata=metadata(TEMPLATE_CONFIGMAP),
            data={TEMPLATE_KEY: self.gpu_runner_template},
            opts=child,
        )

        self.namespace = namespace.metadata.name
        self.register_outputs({"namespace": self.namespace, "gpu_runner_template": self.gpu_runner_template})
