"""The runners in the cluster: namespace, secrets, the base runner, the GPU runner template."""

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import runner_manifests as m
from components.documents import docker_config_json
from components.gpu_catalog import runner_share
from components.runner_image import REGISTRY

# Runner pods meet the `restricted` Pod Security Standard; enforce it so nothing
# weaker can be started in the namespace.
POD_SECURITY = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}


@dataclass(frozen=True)
class RunnersArgs:
    namespace: str
    github_owner: str
    github_repository: str
    image: pulumi.Input[str]
    """The runner image, pinned by digest."""
    runner_token: pulumi.Input[str]
    """The PAT runners use to ask for registration tokens; mounted as a file."""
    registry_token: pulumi.Input[str]
    """A token that may read the image from GHCR."""
    base_runner_replicas: int
    gpu_count: int
    gpu_machine_type: str
    """The GPU runner is sized to take what GKE leaves of one such machine."""
    gpu_runner_deadline_minutes: int
    cpu_pool: pulumi.Resource
    """The base runner waits for this pool, and for no other."""


class Runners(pulumi.ComponentResource):
    """Puts the runners in the cluster through the caller's Kubernetes provider.

    Creates: the namespace (Pod Security `restricted`), the PAT Secret, the GHCR pull
    Secret, the runners' ServiceAccount (no API token), a NetworkPolicy refusing all
    ingress to runner pods, the base-runner Deployment on the CPU pool, and ConfigMap
    `gpu-runner-template` holding the GPU runner Job template.
    """

    namespace: pulumi.Output[str]
    gpu_runner_template: pulumi.Output[str]

    def __init__(self, name: str, args: RunnersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:Runners", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        repository = f"{args.github_owner}/{args.github_repository}"

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": args.namespace, "labels": {**m.app_labels("gke-gpu-runners"), **POD_SECURITY}},
            opts=child,
        )
        # Every object below names the namespace through its output, so it waits for it.
        def metadata(object_name: str, labels: dict | None = None) -> dict:
            return {"name": object_name, "namespace": namespace.metadata.name, "labels": labels or m.app_labels(object_name)}

        pat = k8s.core.v1.Secret(
            f"{name}-pat",
            metadata=metadata(m.PAT_SECRET),
            type="Opaque",
            string_data={m.PAT_KEY: pulumi.Output.secret(args.runner_token)},
            opts=child,
        )
        pull = k8s.core.v1.Secret(
            f"{name}-pull",
            metadata=metadata(m.PULL_SECRET),
            type="kubernetes.io/dockerconfigjson",
            string_data={
                ".dockerconfigjson": pulumi.Output.secret(args.registry_token).apply(
                    lambda token: docker_config_json(REGISTRY, args.github_owner, token)
                )
            },
            opts=child,
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-account",
            metadata=metadata(m.RUNNER_ACCOUNT),
            automount_service_account_token=False,
            opts=child,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-deny-ingress",
            metadata=metadata("runners-deny-ingress"),
            spec={"podSelector": {}, "policyTypes": ["Ingress"]},
            opts=child,
        )

        base_labels = m.app_labels(m.BASE_RUNNER)
        k8s.apps.v1.Deployment(
            f"{name}-base-runner",
            metadata=metadata(m.BASE_RUNNER),
            spec={
                "replicas": args.base_runner_replicas,
                "selector": {"matchLabels": base_labels},
                "template": {
                    "metadata": {"labels": base_labels},
                    "spec": pulumi.Output.from_input(args.image).apply(
                        lambda image: m.base_runner_pod_spec(image, repository)
                    ),
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[pat, pull, account, args.cpu_pool]),
        )

        share = runner_share(args.gpu_machine_type)
        self.gpu_runner_template = pulumi.Output.all(args.image, namespace.metadata.name).apply(
            lambda values: m.render_template(
                m.gpu_runner_job(values[0], repository, values[1], args.gpu_count, share, args.gpu_runner_deadline_minutes)
            )
        )
        k8s.core.v1.ConfigMap(
            f"{name}-gpu-runner-template",
            metadata=metadata(m.TEMPLATE_CONFIGMAP),
            data={m.TEMPLATE_KEY: self.gpu_runner_template},
            opts=child,
        )

        self.namespace = namespace.metadata.name
        self.register_outputs({"namespace": self.namespace, "gpu_runner_template": self.gpu_runner_template})
