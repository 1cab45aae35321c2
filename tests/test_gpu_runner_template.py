"""The GPU runner template, rendered the way the workflow renders it: with the real envsubst."""

import os
import shutil
import subprocess

import pytest
import yaml

from program.catalog.gpus import runner_share
from program.manifests.runners import gpu_runner_job, render_template

IMAGE = "us-central1-docker.pkg.dev/acme-ml/gpu-runners-ghcr/acme/models/github-runner@sha256:" + "a" * 64
BROKER_URL = "http://runner-broker.github-runners-system.svc.cluster.local:80"
MACHINE = "n1-standard-4"
SHARE = runner_share(MACHINE)
RUNS = [("9876543210", "1"), ("9876543211", "1"), ("9876543210", "2")]  # two runs, and a re-run


def envsubst(template: str, run_id: str, attempt: str) -> dict:
    envsubst_binary = shutil.which("envsubst")
    assert envsubst_binary, "envsubst (gettext-base) is needed to render the template as CI does"
    environment = {**os.environ, "GITHUB_RUN_ID": run_id, "GITHUB_RUN_ATTEMPT": attempt}
    rendered = subprocess.run(
        [envsubst_binary, "${GITHUB_RUN_ID} ${GITHUB_RUN_ATTEMPT}"],
        input=template,
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    ).stdout
    assert "${" not in rendered
    return yaml.safe_load(rendered)


@pytest.fixture(scope="module")
def jobs() -> list[dict]:
    template = render_template(gpu_runner_job(IMAGE, "github-runners", 1, MACHINE, 240))
    return [envsubst(template, run_id, attempt) for run_id, attempt in RUNS]


def container(job):
    return job["spec"]["template"]["spec"]["containers"][0]


def runner_env(job):
    return {e["name"]: e.get("value") for e in container(job)["env"]}


def test_each_run_attempt_gets_a_distinct_job_name(jobs):
    names = [job["metadata"]["name"] for job in jobs]
    assert names == ["gpu-runner-9876543210-1", "gpu-runner-9876543211-1", "gpu-runner-9876543210-2"]


def test_each_job_carries_the_contract_labels_the_broker_names_and_labels_its_runner_from(jobs):
    for (run_id, attempt), job in zip(RUNS, jobs, strict=True):
        for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
            assert labels["app.kubernetes.io/name"] == "gpu-runner"
            assert labels["gke-gpu-runners/run-id"] == run_id
            assert labels["gke-gpu-runners/run-attempt"] == attempt
            assert labels["app.kubernetes.io/part-of"] == "gke-gpu-runners"  # what the broker's sweep lists


def test_the_pod_chooses_neither_its_runner_name_nor_its_labels_and_knows_only_its_run(jobs):
    for (run_id, _attempt), job in zip(RUNS, jobs, strict=True):
        variables = runner_env(job)
        assert set(variables) == {"RUNNER_BROKER_URL", "RUNNER_BROKER_TOKEN_FILE", "GPU_RUNNER_RUN_ID"}
        assert variables["RUNNER_BROKER_URL"] == BROKER_URL
        # What its job-started hook compares every job's run with.
        assert variables["GPU_RUNNER_RUN_ID"] == run_id


def test_numeric_ids_stay_strings_after_substitution(jobs):
    for job in jobs:
        for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
            assert all(isinstance(v, str) for v in labels.values()), labels
        assert all(isinstance(e["value"], str) for e in container(job)["env"] if "value" in e)


def test_runner_lands_on_the_gpu_pool_tolerating_its_taint_and_requesting_the_gpu(jobs):
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"gpu": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_runner_never_restarts_and_has_a_deadline(jobs):
    for job in jobs:
        assert job["spec"]["backoffLimit"] == 0
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert job["spec"]["activeDeadlineSeconds"] == 240 * 60
        assert job["spec"]["ttlSecondsAfterFinished"] > 0


def test_runner_has_a_memory_backed_dev_shm(jobs):
    pod = jobs[0]["spec"]["template"]["spec"]
    mount = next(m for m in container(jobs[0])["volumeMounts"] if m["mountPath"] == "/dev/shm")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["medium"] == "Memory"


def test_runner_has_the_base_runners_hardening_and_no_credential(jobs):
    pod = jobs[0]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "imagePullSecrets" not in pod  # the nodes pull through Artifact Registry
    assert not [v for v in pod["volumes"] if "secret" in v]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container(jobs[0])["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container(jobs[0])["securityContext"]["allowPrivilegeEscalation"] is False
    assert runner_env(jobs[0])["RUNNER_BROKER_TOKEN_FILE"] == "/run/secrets/runner-broker/token"
    assert container(jobs[0])["image"] == IMAGE


def test_runner_presents_a_short_lived_token_bound_to_the_brokers_audience(jobs):
    pod = jobs[0]["spec"]["template"]["spec"]
    mount = next(m for m in container(jobs[0])["volumeMounts"] if m["mountPath"] == "/run/secrets/runner-broker")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"] == {
        "audience": "runner-broker.gke-gpu-runners",
        "expirationSeconds": 600,
        "path": "token",
    }
    assert mount["readOnly"] is True
    assert volume["projected"]["defaultMode"] & 0o007 == 0


def test_a_bare_placeholder_is_quoted_so_a_numeric_id_stays_a_string():
    rendered = envsubst(render_template({"metadata": {"labels": {"run": "${GITHUB_RUN_ID}"}}}), "123", "1")
    assert rendered["metadata"]["labels"]["run"] == "123"


def test_template_documents_are_valid_yaml_with_one_job_each(jobs):
    assert len(jobs) == 3
    assert all(job["apiVersion"] == "batch/v1" and job["kind"] == "Job" for job in jobs)


def test_runner_takes_what_gke_leaves_of_its_node_with_guaranteed_qos(jobs):
    resources = container(jobs[0])["resources"]
    assert resources["requests"] == resources["limits"]
    assert (
        resources["requests"]["cpu"] == f"{SHARE.cpu_millis}m"
        and resources["requests"]["memory"] == f"{SHARE.memory_mib}Mi"
    )
    dshm = next(v for v in jobs[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"]["sizeLimit"] == f"{SHARE.memory_mib // 4}Mi"
