"""Every Kubernetes object the program registers, and the GPU runner Job, against the real OpenAPI schemas."""

import kubernetes_validate
import pytest
import yaml

from program_harness import kubernetes_objects

# GKE's REGULAR channel runs these minor versions as this is written; both must accept every object.
KUBERNETES_VERSIONS = ("1.34.0", "1.35.0")


# Custom resources Kubernetes' own schemas do not describe (test_scale_set checks their fields).
CUSTOM_API_GROUPS = ("monitoring.googleapis.com/",)


def manifests(program) -> list[dict]:
    documents = [d for d in kubernetes_objects(program) if not d["apiVersion"].startswith(CUSTOM_API_GROUPS)]
    if "gpuRunnerTemplate" not in program.outputs:
        return documents
    job = program.outputs["gpuRunnerTemplate"].replace("${GITHUB_RUN_ID}", "42").replace("${GITHUB_RUN_ATTEMPT}", "1")
    return [*documents, yaml.safe_load(job)]


def test_every_kind_the_program_renders_is_checked(every_object, every_scale_set_object):
    kinds = {document["kind"] for document in manifests(every_object)}
    assert kinds >= {
        "Namespace",
        "Deployment",
        "Job",
        "Secret",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "NetworkPolicy",
        "ResourceQuota",
        "Service",
        "ConfigMap",
        "DaemonSet",
        "PriorityClass",
    }
    # In scale-set mode the GPU runner is the scale set's pod template, checked as a Pod.
    assert {"Pod", "Namespace", "Secret", "ServiceAccount", "NetworkPolicy", "ResourceQuota", "DaemonSet"} <= {
        document["kind"] for document in manifests(every_scale_set_object)
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("mode", ["per-run", "scale-set"])
def test_every_object_is_valid_in_strict_mode(every_object, every_scale_set_object, mode, version):
    problems = []
    for document in manifests(every_scale_set_object if mode == "scale-set" else every_object):
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{document['kind']} {document['metadata']['name']}: {error.message} at {list(error.path)}")
    assert not problems, "\n".join(problems)


def test_strict_validation_catches_a_misspelt_field(every_object):
    """The check above can fail: a field the schema does not know is refused."""
    job = manifests(every_object)[-1]
    job["spec"]["template"]["spec"]["tolerration"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)
