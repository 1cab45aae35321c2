"""Shorter GPU cold starts: the image pulled while the driver installs, and optional warm nodes."""

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from program.manifests.runners import app_labels
from program.manifests.warmup import (
    PLACEHOLDER,
    PLACEHOLDER_PRIORITY,
    PRELOADER,
    placeholder_pod_spec,
    preloader_pod_spec,
)


@dataclass(frozen=True)
class GpuWarmupArgs:
    namespace: pulumi.Input[str]
    """Outside the runner namespace, so placeholders count against no runner quota."""
    image: pulumi.Input[str]
    """The runner image as the cluster pulls it."""
    gpu_count: int
    gpu_machine_type: str
    warm_runners: int
    """GPU nodes to keep free for the next run; 0 keeps none."""


class GpuWarmup(pulumi.ComponentResource):
    """Creates DaemonSet `gpu-image-preloader`, which pulls the runner image on each GPU node the
    moment it joins, so the pull overlaps GKE's driver install (the GPU runner cannot start before
    the driver). With `warm_runners` > 0, also a PriorityClass below 0 and Deployment
    `gpu-warm-placeholder`: pods that each hold a GPU node as a runner would, which a GPU runner
    preempts; the Deployment then asks for a new one and the autoscaler adds a node for it.
    """

    def __init__(self, name: str, args: GpuWarmupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:GpuWarmup", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        image = pulumi.Output.from_input(args.image)

        def metadata(object_name: str) -> dict:
            return {"name": object_name, "namespace": args.namespace, "labels": app_labels(object_name)}

        k8s.apps.v1.DaemonSet(
            f"{name}-preloader",
            metadata=metadata(PRELOADER),
            spec={
                "selector": {"matchLabels": app_labels(PRELOADER)},
                "template": {"metadata": {"labels": app_labels(PRELOADER)}, "spec": image.apply(preloader_pod_spec)},
            },
            opts=child,
        )
        if args.warm_runners == 0:
            self.register_outputs({})
            return

        priority = k8s.scheduling.v1.PriorityClass(
            f"{name}-placeholder-priority",
            metadata={
                "name": pulumi.Output.from_input(args.namespace).apply(lambda ns: f"{ns}-{PLACEHOLDER}"),
                "labels": app_labels(PLACEHOLDER),
            },
            value=PLACEHOLDER_PRIORITY,
            preemption_policy="Never",
            global_default=False,
            description="Warm GPU capacity: any GPU runner preempts these placeholders.",
            opts=child,
        )
        k8s.apps.v1.Deployment(
            f"{name}-placeholder",
            metadata=metadata(PLACEHOLDER),
            spec={
                "replicas": args.warm_runners,
                "selector": {"matchLabels": app_labels(PLACEHOLDER)},
                "template": {
                    "metadata": {"labels": app_labels(PLACEHOLDER)},
                    "spec": pulumi.Output.all(image, priority.metadata.name).apply(
                        lambda values: placeholder_pod_spec(values[0], args.gpu_count, args.gpu_machine_type, values[1])
                    ),
                },
            },
            opts=child,
        )
        self.register_outputs({})
