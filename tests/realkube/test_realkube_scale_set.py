"""Scale-set mode's pods, admitted by the real API server under Pod Security `restricted`.

ARC's controller and listener pods are made by Helm and by ARC, not by the program: they are
rebuilt here as ARC 0.14.2 makes them, with what the program sets in the charts' values (the
controller chart's deployment.yaml; resourcebuilder.go's newScaleSetListenerPod and
mergeListenerPodWithTemplate for the listener), so the admission below is the one they meet.
"""

import pytest

from program.manifests import scale_set as m
from realkube.cluster import ApiError

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
IMAGE = "us-central1-docker.pkg.dev/acme-ml/gpu-runners-images/github-runner@sha256:" + "a" * 64
ARC_IMAGE = "ghcr.io/actions/gha-runner-scale-set-controller:0.14.2"


def controller_pod() -> dict:
    values = m.controller_values("github-runners")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "arc-controller"},
        "spec": {
            "securityContext": values["podSecurityContext"],
            "nodeSelector": values["nodeSelector"],
            "containers": [
                {
                    "name": "manager",
                    "image": ARC_IMAGE,
                    "command": ["/manager"],
                    "securityContext": values["securityContext"],
                    "resources": values["resources"],
                    "ports": [{"containerPort": m.METRICS_PORT, "name": "metrics", "protocol": "TCP"}],
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def listener_pod() -> dict:
    template = m.listener_template()["spec"]
    (ours,) = template["containers"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-listener"},
        "spec": {
            # ARC's own pod, with the fields the merge replaces taken from our template.
            "restartPolicy": "Never",
            "securityContext": template["securityContext"],
            "nodeSelector": template["nodeSelector"],
            "terminationGracePeriodSeconds": template["terminationGracePeriodSeconds"],
            "containers": [
                {
                    "name": m.LISTENER_CONTAINER,
                    "image": ARC_IMAGE,
                    "command": ["/ghalistener"],
                    "env": [{"name": "LISTENER_CONFIG_PATH", "value": "/etc/gha-listener/config.json"}],
                    "ports": [{"containerPort": m.METRICS_PORT, "name": "metrics", "protocol": "TCP"}],
                    "securityContext": ours["securityContext"],
                    "resources": ours["resources"],
                    "volumeMounts": [{"name": "listener-config", "mountPath": "/etc/gha-listener", "readOnly": True}],
                }
            ],
            "volumes": [{"name": "listener-config", "secret": {"secretName": "gpu-listener-config"}}],
        },
    }


def runner_pod() -> dict:
    template = m.gpu_runner_pod_template(IMAGE, 1, "n1-standard-4", 240)
    pod = m.runner_pod(template, "gpu-runner", "unused")
    pod["metadata"].pop("namespace")
    # ARC adds the runner's JIT configuration from a Secret of its own.
    pod["spec"]["containers"][0]["env"] = [
        {
            "name": "ACTIONS_RUNNER_INPUT_JITCONFIG",
            "valueFrom": {"secretKeyRef": {"name": "gpu-runner", "key": "jitToken"}},
        }
    ]
    pod["spec"].pop("serviceAccountName")  # admission checks the account exists; it is not what is tested
    return pod


@pytest.mark.parametrize("make", [controller_pod, listener_pod, runner_pod], ids=["controller", "listener", "runner"])
def test_a_restricted_namespace_admits_arcs_pods_and_the_gpu_runner(kube, namespace, make):
    kube.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": RESTRICTED}})
    pod = make()

    created = kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)

    assert created["metadata"]["name"] == pod["metadata"]["name"]


def test_without_our_security_contexts_arcs_listener_would_be_refused(kube, namespace):
    """ARC's listener pod as it comes, with no template: what the listener template is for."""
    kube.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": RESTRICTED}})
    pod = listener_pod()
    pod["spec"].pop("securityContext")
    pod["spec"]["containers"][0].pop("securityContext")

    with pytest.raises(ApiError) as refused:
        kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)

    assert refused.value.status == 403 and 'violates PodSecurity "restricted:latest"' in refused.value.message
