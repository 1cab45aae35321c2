"""The CI kubeconfig works with the real kubectl: TLS verified, a short-lived token brought by
`gpu-runner credential` from GitHub's OIDC token, the runner namespace by default."""

import os
from pathlib import Path

import pytest

from program.manifests.kubeconfigs import ci_kubeconfig
from program_harness import ROOT
from fake_token_services import ACCESS_TOKEN, SECRETS, TokenServices
from tls_apiserver import ApiServer, kube_apiserver, kubectl_against, kubectl_binary

NAMESPACE = "runners-under-test"


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory) -> ApiServer:
    kubectl_binary()  # fail at once, with a clear message, when kubectl is missing
    with kube_apiserver(tmp_path_factory.mktemp("apiserver"), ACCESS_TOKEN) as server:
        yield server


@pytest.fixture
def requests(apiserver):
    """The requests made during this test only."""
    apiserver.requests.clear()
    return apiserver.requests


@pytest.fixture
def tokens():
    with TokenServices() as services:
        yield services


@pytest.fixture
def job_env(tmp_path: Path, tokens) -> dict[str, str]:
    """A CI job's environment: gpu-runner on PATH (as in the image), the OIDC request and Actions variables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gpu-runner").symlink_to(ROOT / "runner_image" / "gpu-runner")
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_RUN_ATTEMPT": "1",
        "TMPDIR": str(tmp_path),
        **tokens.environment(),
    }


def assert_no_secret_printed(result):
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr


def test_kubectl_gets_a_short_lived_token_from_the_jobs_oidc_token_and_uses_the_namespace(
    apiserver, requests, tokens, job_env
):
    kubeconfig = ci_kubeconfig("gpu-runners", apiserver.endpoint, apiserver.ca_b64, NAMESPACE)

    result = kubectl_against(kubeconfig, apiserver, env=job_env)

    assert result.returncode == 0, result.stderr
    assert f"No resources found in {NAMESPACE} namespace" in result.stdout + result.stderr
    assert [r.path for r in requests if r.path.endswith("/pods")] == [f"/api/v1/namespaces/{NAMESPACE}/pods"]
    assert {r.authorization for r in requests} == {f"Bearer {ACCESS_TOKEN}"}
    assert len(tokens.requests) % 3 == 0, "each credential is one OIDC, one STS and one IAM request"
    oidc, sts, iam = tokens.requests[:3]
    assert oidc["query"]["audience"] == [f"//iam.googleapis.com/{tokens.provider}"]
    assert sts["path"] == "/sts" and iam["path"].endswith(f"{tokens.service_account}:generateAccessToken")
    assert '"lifetime": "600s"' in iam["body"]
    assert_no_secret_printed(result)


def test_kubectl_refuses_a_server_the_ca_did_not_sign(apiserver, requests, job_env):
    kubeconfig = ci_kubeconfig("gpu-runners", apiserver.endpoint, apiserver.other_ca_b64(), NAMESPACE)

    result = kubectl_against(kubeconfig, apiserver, env=job_env)

    assert result.returncode != 0
    assert "certificate signed by unknown authority" in result.stderr, result.stderr
    assert requests == [], "the token must not be sent to an unverified server"


def test_a_repository_the_provider_does_not_trust_gets_no_token(apiserver, requests, tokens, job_env):
    tokens.admit = False
    kubeconfig = ci_kubeconfig("gpu-runners", apiserver.endpoint, apiserver.ca_b64, NAMESPACE)

    result = kubectl_against(kubeconfig, apiserver, env=job_env)

    assert result.returncode != 0
    assert "Google's STS refused this job's OIDC token" in result.stderr
    assert all(r.authorization != f"Bearer {ACCESS_TOKEN}" for r in requests)
    assert_no_secret_printed(result)


def test_a_job_without_id_token_permission_is_told_so(apiserver, requests, job_env):
    for name in ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        del job_env[name]
    kubeconfig = ci_kubeconfig("gpu-runners", apiserver.endpoint, apiserver.ca_b64, NAMESPACE)

    result = kubectl_against(kubeconfig, apiserver, env=job_env)

    assert result.returncode != 0
    assert "give the job permissions: id-token: write" in result.stderr


def test_a_bearer_token_from_the_command_line_gets_in_too(apiserver, requests, tokens):
    """The kubeconfig holds no credential of its own: whatever token a caller brings is what is sent."""
    kubeconfig = ci_kubeconfig("gpu-runners", apiserver.endpoint, apiserver.ca_b64, NAMESPACE)

    result = kubectl_against(kubeconfig, apiserver, "get", "pods", f"--token={ACCESS_TOKEN}")

    assert result.returncode == 0, result.stderr
    assert {r.authorization for r in requests} == {f"Bearer {ACCESS_TOKEN}"}
    assert tokens.requests == []  # the exec plugin never ran


def test_kubeconfig_the_program_writes_to_github_lets_kubectl_in(apiserver, requests, job_env):
    from program_harness import run_program

    program = run_program(cluster={"endpoint": apiserver.endpoint, "ca_b64": apiserver.ca_b64})
    secret = next(
        s
        for s in program.of_type("github:index/actionsSecret:ActionsSecret")
        if s.inputs["secretName"] == "GCP_K8S_KUBECONFIG"
    )

    result = kubectl_against(secret.inputs["value"], apiserver, env=job_env)

    assert result.returncode == 0, result.stderr
    assert [r.path for r in requests if r.path.endswith("/pods")] == ["/api/v1/namespaces/github-runners/pods"]
    assert {r.authorization for r in requests} == {f"Bearer {ACCESS_TOKEN}"}
