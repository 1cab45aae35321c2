"""The program's rendered objects, fed to the broker's own code: what `pulumi up` puts in the
cluster is what the broker accepts, with the names and labels the contract promises.

No double stands in here: the template is the JSON the program mounts into the broker,
rendered by the broker's template module; the pods are shaped as the ReplicaSet and Job
controllers make them from the program's Deployment and the broker's Job (the real
controllers do that in tests/realkube); the decision is the broker's pure function.
"""

import json
from pathlib import Path

import pytest

from runner_broker.decisions import Rules, decide_runner
from runner_broker.model import PodIdentity
from runner_broker.template import Template, pod_template_images, render
from runner_contract import BROKER_AUDIENCE, gpu_runner_label

NAMESPACE = "github-runners"


def env(program, deployment: str) -> dict:
    container = program.one("kubernetes:apps/v1:Deployment", deployment).inputs["spec"]["template"]["spec"]
    return {e["name"]: e.get("value") for e in container["containers"][0]["env"]}


@pytest.fixture(scope="module")
def template(program) -> Template:
    (configmap,) = [
        c for c in program.of_type("kubernetes:core/v1:ConfigMap") if c.inputs["metadata"]["name"] == "gpu-runner-job"
    ]
    document = json.loads(configmap.inputs["data"]["gpu-runner-job.json"])
    return Template(document, pod_template_images(document))


@pytest.fixture(scope="module")
def rules(program, template) -> Rules:
    broker = env(program, "broker")
    assert broker["BROKER_AUDIENCE"] == BROKER_AUDIENCE
    return Rules(
        runner_namespace=broker["BROKER_RUNNER_NAMESPACE"],
        runner_service_account=broker["BROKER_RUNNER_SERVICE_ACCOUNT"],
        base_runner_deployment=broker["BROKER_BASE_RUNNER_DEPLOYMENT"],
        template_images=template.images,
    )


def owned_pod(owner: dict, name: str, uid: str) -> dict:
    """A pod as its controller makes it: the template's spec, a controller reference to the owner."""
    template = owner["spec"]["template"]
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid,
            "labels": template["metadata"]["labels"],
            "ownerReferences": [
                {
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
        "status": {"phase": "Pending"},
    }


def test_the_broker_accepts_the_programs_template_and_names_and_labels_each_gpu_runner_as_the_contract_says(
    program, template, rules
):
    broker = env(program, "broker")
    assert int(broker["BROKER_MAX_GPU_RUNNERS_PER_RUN"]) == 2
    assert Path(broker["BROKER_GPU_RUNNER_TEMPLATE_FILE"]).name == "gpu-runner-job.json"
    for index, expected in enumerate(["gpu-runner-987654-2", "gpu-runner-987654-2-1"]):
        job = {**render(template, "987654", "2", index, NAMESPACE), "kind": "Job"}
        job["metadata"]["uid"] = f"job-uid-{index}"
        pod_spec = job["spec"]["template"]["spec"]
        assert pod_spec["serviceAccountName"] == rules.runner_service_account
        # The runner's job-started hook compares each job's run with this one.
        assert {"name": "GPU_RUNNER_RUN_ID", "value": "987654"} in pod_spec["containers"][0]["env"]
        pod = owned_pod(job, f"{expected}-x7k2p", f"pod-uid-{index}")
        identity = PodIdentity(NAMESPACE, rules.runner_service_account, pod["metadata"]["name"], f"pod-uid-{index}")
        grant = decide_runner(identity, pod, job, rules)
        assert (grant.name, grant.labels, grant.kind) == (expected, (gpu_runner_label("987654"),), "gpu")


def test_the_broker_accepts_the_programs_base_runners_as_base_runners(program, rules):
    deployment = dict(program.one("kubernetes:apps/v1:Deployment", "base-runner").inputs)
    replicaset = {
        "kind": "ReplicaSet",
        "metadata": {
            "name": "base-runner-5d8f7c9b4",
            "uid": "rs-uid",
            "ownerReferences": [{"kind": "Deployment", "name": deployment["metadata"]["name"], "controller": True}],
        },
        "spec": deployment["spec"],
    }
    pod = owned_pod(replicaset, "base-runner-5d8f7c9b4-q2w9z", "pod-uid")
    identity = PodIdentity(NAMESPACE, rules.runner_service_account, pod["metadata"]["name"], "pod-uid")
    grant = decide_runner(identity, pod, replicaset, rules)
    assert (grant.name, grant.labels, grant.kind) == ("base-runner-5d8f7c9b4-q2w9z", ("base-runner",), "base")
    # The pods present the token the broker reviews, for the broker's audience alone.
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (token,) = [v["projected"]["sources"][0]["serviceAccountToken"] for v in volumes if "projected" in v]
    assert token["audience"] == BROKER_AUDIENCE
