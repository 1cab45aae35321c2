"""The CI kubeconfig works with the real kubectl: TLS verified, token sent, namespace set."""

import pytest

from components.documents import ci_kubeconfig
from tls_apiserver import ApiServer, kube_apiserver, kubectl_against, kubectl_binary

TOKEN = "sa-token-for-kubectl-test"
NAMESPACE = "runners-under-test"


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory) -> ApiServer:
    kubectl_binary()  # fail at once, with a clear message, when kubectl is missing
    with kube_apiserver(tmp_path_factory.mktemp("apiserver"), TOKEN) as server:
        yield server


@pytest.fixture
def requests(apiserver):
    """The requests made during this test only."""
    apiserver.requests.clear()
    return apiserver.requests


def test_kubectl_verifies_the_server_and_uses_the_token_and_namespace(apiserver, requests):
    kubeconfig = ci_kubeconfig("gpu-runners", apiserver.endpoint, apiserver.ca_b64, TOKEN, NAMESPACE)

    result = kubectl_against(kubeconfig, apiserver)

    assert result.returncode == 0, result.stderr
    assert f"No resources found in {NAMESPACE} namespace" in result.stdout + result.stderr
    pod_lists = [request for request in requests if request.path.endswith("/pods")]
    assert [request.path for request in pod_lists] == [f"/api/v1/namespaces/{NAMESPACE}/pods"]
    assert {request.authorization for request in requests} == {f"Bearer {TOKEN}"}


def test_kubectl_refuses_a_server_the_ca_did_not_sign(apiserver, requests):
    kubeconfig = ci_kubeconfig("gpu-runners", apiserver.endpoint, apiserver.other_ca_b64(), TOKEN, NAMESPACE)

    result = kubectl_against(kubeconfig, apiserver)

    assert result.returncode != 0
    assert "certificate signed by unknown authority" in result.stderr, result.stderr
    assert requests == [], "the token must not be sent to an unverified server"


def test_kubectl_fails_with_a_wrong_token(apiserver, requests):
    kubeconfig = ci_kubeconfig("gpu-runners", apiserver.endpoint, apiserver.ca_b64, "not-the-token", NAMESPACE)

    result = kubectl_against(kubeconfig, apiserver)

    assert result.returncode != 0
    # kubectl's words for a 401 (older clients print "Unauthorized" in the parentheses).
    assert "You must be logged in to the server" in result.stderr, result.stderr
    assert requests, "the request reached the server over verified TLS"
    assert all(request.authorization == "Bearer not-the-token" for request in requests)


def test_kubeconfig_the_program_writes_to_github_lets_kubectl_in(apiserver, requests):
    from conftest import run_program

    program = run_program(cluster={"endpoint": apiserver.endpoint, "ca_b64": apiserver.ca_b64, "sa_token": TOKEN})
    secret = next(s for s in program.of_type("github:index/actionsSecret:ActionsSecret")
                  if s.inputs["secretName"] == "GCP_K8S_KUBECONFIG")

    result = kubectl_against(secret.inputs["value"], apiserver)

    assert result.returncode == 0, result.stderr
    assert [r.path for r in requests if r.path.endswith("/pods")] == ["/api/v1/namespaces/github-runners/pods"]
    assert {r.authorization for r in requests} == {f"Bearer {TOKEN}"}
