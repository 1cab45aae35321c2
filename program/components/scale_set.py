"""GPU runners from GitHub's Actions Runner Controller (ARC), in runner scale-set mode."""

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from program.components.runner_namespace import guard_runner_namespace
from program.manifests import runners as r
from program.manifests import scale_set as m
from program.settings import RunnerCredential
from runner_contract import PART_OF, system_namespace

# Helm's own limit on one install or uninstall step. Uninstalling the scale set waits
# for ARC to remove its runners from GitHub and lift its finalizers.
HELM_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class RunnerScaleSetArgs:
    namespace: str
    """The runner namespace; ARC's controller and listener go in `<namespace>-system`."""
    name: str
    """The scale set's name: the one label its workflows ask for (`runs-on: <name>`)."""
    config_url: str
    """`https://github.com/<owner>/<repository>`, or `https://github.com/<organization>`."""
    runner_group: str | None
    """The organization's runner group the scale set joins; None: the default group."""
    credential: RunnerCredential
    """The PAT or GitHub App ARC registers runners with; only ARC's controller reads it."""
    image: pulumi.Input[str]
    """The runner image, pinned by digest, as the cluster pulls it."""
    gpu_count: int
    gpu_machine_type: str
    gpu_max_nodes: int
    """At most this many runners (one per GPU node), and the namespace's GPU quota."""
    warm_runners: int
    """Idle runners kept waiting for a job, each holding a GPU node."""
    deadline_minutes: int
    """A runner pod is stopped after this long."""
    cpu_pool: pulumi.Resource
    """ARC's controller and listener run on the CPU pool; the controller waits for it."""


class RunnerScaleSet(pulumi.ComponentResource):
    """ARC's controller and one GPU runner scale set, through the caller's Kubernetes provider.

    Creates: namespace `<namespace>-system` (Pod Security `restricted`) with ARC's controller
    (Helm chart gha-runner-scale-set-controller, which brings ARC's CRDs) and, started by
    it, the scale set's listener; the runner namespace (`restricted`) with the runners'
    ServiceAccount (no token, no rights), a NetworkPolicy refusing all ingress, a quota of
    GPUs, the GitHub credential Secret ARC's controller reads, and the scale set (chart
    gha-runner-scale-set); PodMonitorings so that Managed Service for Prometheus scrapes
    the controller and the listener.

    Order: the scale set waits for the controller, which waits for both namespaces and the
    credential, so `pulumi destroy` uninstalls the scale set first and waits while the
    still-running controller removes its runners from GitHub and lifts the
    `actions.github.com/cleanup-protection` finalizers.
    """

    namespace: pulumi.Output[str]
    controller_namespace: pulumi.Output[str]
    controller: k8s.helm.v3.Release
    scale_set: k8s.helm.v3.Release

    def __init__(self, name: str, args: RunnerScaleSetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:RunnerScaleSet", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def namespace(role: str, namespace_name: str) -> k8s.core.v1.Namespace:
            return k8s.core.v1.Namespace(
                f"{name}-{role}-namespace",
                metadata={"name": namespace_name, "labels": {**r.app_labels(PART_OF), **r.POD_SECURITY}},
                opts=child,
            )

        controller_namespace = namespace("controller", system_namespace(args.namespace))
        runner_namespace = namespace("runner", args.namespace)

        def metadata(object_name: str) -> dict:
            return {
                "name": object_name,
                "namespace": runner_namespace.metadata.name,
                "labels": r.app_labels(object_name),
            }

        (secret,) = args.credential.secret_data().values()
        credential = k8s.core.v1.Secret(
            f"{name}-credential",
            metadata=metadata(m.CREDENTIAL_SECRET),
            type="Opaque",
            string_data=pulumi.Output.secret(
                m.github_config_secret(secret, args.credential.app_id, args.credential.app_installation_id)
            ),
            opts=child,
        )
        guards = guard_runner_namespace(
            f"{name}-runner-account", name, metadata, args.gpu_max_nodes * args.gpu_count, child
        )

        # The controller also grants itself its rights in the runner namespace, so it waits for it.
        self.controller = k8s.helm.v3.Release(
            f"{name}-controller",
            name=m.CONTROLLER_RELEASE,
            chart=m.CONTROLLER_CHART,
            version=m.CHART_VERSION,
            namespace=controller_namespace.metadata.name,
            values=runner_namespace.metadata.name.apply(m.controller_values),
            timeout=HELM_TIMEOUT_SECONDS,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[runner_namespace, credential, args.cpu_pool]),
        )
        template = pulumi.Output.from_input(args.image).apply(
            lambda image: m.gpu_runner_pod_template(image, args.gpu_count, args.gpu_machine_type, args.deadline_minutes)
        )
        self.scale_set = k8s.helm.v3.Release(
            f"{name}-scale-set",
            name=args.name,
            chart=m.SCALE_SET_CHART,
            version=m.CHART_VERSION,
            namespace=runner_namespace.metadata.name,
            values=pulumi.Output.all(controller_namespace.metadata.name, template).apply(
                lambda values: m.scale_set_values(
                    args.name,
                    args.config_url,
                    args.runner_group,
                    args.warm_runners,
                    args.gpu_max_nodes,
                    controller_namespace=values[0],
                    runner_template=values[1],
                )
            ),
            timeout=HELM_TIMEOUT_SECONDS,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.controller, credential, guards.account, guards.quota]
            ),
        )

        for monitoring_name, spec in m.pod_monitoring_specs().items():
            k8s.apiextensions.CustomResource(
                f"{name}-{monitoring_name}",
                api_version="monitoring.googleapis.com/v1",
                kind="PodMonitoring",
                metadata={
                    "name": monitoring_name,
                    "namespace": controller_namespace.metadata.name,
                    "labels": r.app_labels(monitoring_name),
                },
                spec=spec,
                opts=child,
            )

        self.namespace = runner_namespace.metadata.name
        self.controller_namespace = controller_namespace.metadata.name
        self.register_outputs({"namespace": self.namespace, "controller_namespace": self.controller_namespace})
