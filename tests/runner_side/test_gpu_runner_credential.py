"""`gpu-runner credential`, kubectl's exec plugin for the CI kubeconfig, against local token services."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

import fake_token_services
from gpu_runner_harness import LAUNCHER, run

IAM_PATH = "/iam/v1/projects/-/serviceAccounts/{account}:generateAccessToken"


@pytest.fixture
def tokens():
    with fake_token_services.TokenServices() as services:
        yield services


def assert_no_secret_printed(output: str) -> None:
    for secret in fake_token_services.SECRETS:
        assert secret not in output


def test_credential_prints_an_exec_credential_with_the_service_accounts_token(tokens):
    result = run(["credential"], tokens.environment())

    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": fake_token_services.ACCESS_TOKEN, "expirationTimestamp": fake_token_services.EXPIRES},
    }
    assert result.err == ""
    oidc, sts, iam = tokens.requests
    assert (oidc["method"], oidc["path"]) == ("GET", "/oidc")
    assert oidc["query"] == {"api-version": ["2.0"], "audience": [f"//iam.googleapis.com/{tokens.provider}"]}
    assert (sts["method"], sts["path"]) == ("POST", "/sts")
    assert json.loads(sts["body"])["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert (iam["method"], iam["path"]) == ("POST", IAM_PATH.format(account=tokens.service_account))
    assert json.loads(iam["body"]) == {"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "600s"}


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"ACTIONS_ID_TOKEN_REQUEST_TOKEN": ""}, "give the job permissions: id-token: write"),
        ({"ACTIONS_ID_TOKEN_REQUEST_URL": ""}, "give the job permissions: id-token: write"),
        ({"GCP_WORKLOAD_IDENTITY_PROVIDER": "github-actions"}, "GCP_WORKLOAD_IDENTITY_PROVIDER must be the provider's"),
        ({"GCP_SERVICE_ACCOUNT": ""}, "GCP_SERVICE_ACCOUNT must be CI's service account email"),
    ],
)
def test_credential_says_what_a_job_lacks_on_stderr_only(tokens, changes, words):
    result = run(["credential"], {**tokens.environment(), **changes})

    assert result.code == 2
    assert words in result.err and result.out == ""
    assert tokens.requests == []


def test_credential_refused_by_the_providers_condition_names_the_likely_cause(tokens):
    tokens.admit = False
    result = run(["credential"], tokens.environment())

    assert result.code == 1
    assert (
        "Google's STS refused this job's OIDC token (HTTP 403: The given credential is rejected by the "
        "attribute condition.): does the provider trust this repository?" in result.err
    )
    assert result.out == ""
    assert_no_secret_printed(result.output)


def test_credential_refused_by_iam_names_the_service_account(tokens):
    environment = {**tokens.environment(), "GCP_SERVICE_ACCOUNT": "other@acme-ml.iam.gserviceaccount.com"}
    result = run(["credential"], environment)

    assert result.code == 1
    assert "IAM would not let this job act as other@acme-ml.iam.gserviceaccount.com (HTTP 404" in result.err
    assert_no_secret_printed(result.output)


def test_credential_with_token_services_down_says_which(tokens):
    environment = {**tokens.environment(), "GCP_STS_URL": "http://127.0.0.1:9/sts"}
    result = run(["credential"], environment)

    assert result.code == 1
    assert "Google's STS did not answer: POST http://127.0.0.1:9/sts" in result.err


def test_credential_as_kubectl_runs_it_writes_nothing_and_ignores_the_jobs_python_path(tmp_path, tokens):
    """The launcher runs the image's python3 isolated: a job's PYTHONPATH cannot swap the code that sees tokens."""
    planted = tmp_path / "planted" / "gpu_runner"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("raise SystemExit('the planted package ran')\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TMPDIR": str(home),
        "PYTHONPATH": str(planted.parent),
        **tokens.environment(),
    }
    done = subprocess.run(
        [str(LAUNCHER), "credential"], check=False, env=env, cwd=home, capture_output=True, text=True, timeout=30
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"]["token"] == fake_token_services.ACCESS_TOKEN
    assert_no_secret_printed(done.stderr)
    assert list(home.iterdir()) == [], "no token cache or any other file"
