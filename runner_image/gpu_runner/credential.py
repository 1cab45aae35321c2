"""`gpu-runner credential`: kubectl's exec plugin for the CI kubeconfig (GCP_K8S_KUBECONFIG).

Trades this job's GitHub OIDC token for a short-lived token of CI's Google service
account, in three requests:

1. GitHub's OIDC endpoint (ACTIONS_ID_TOKEN_REQUEST_URL, with the job's request token):
   a JWT whose audience is the Workload Identity provider;
2. Google's STS (GCP_STS_URL): a federated token, if the provider's condition admits the
   job's claims (this repository);
3. IAM Credentials' generateAccessToken (GCP_IAM_CREDENTIALS_URL) for GCP_SERVICE_ACCOUNT:
   an access token of LIFETIME, printed as a client.authentication.k8s.io/v1
   ExecCredential on stdout, which is kubectl's; every message goes to stderr.

The tokens stay in this process's memory: never on a command line, in a file or a log
line. kubectl keeps the credential until its expirationTimestamp and runs this again.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from gpu_runner import transport
from gpu_runner.actions import Log

STS_URL = "https://sts.googleapis.com/v1/token"
IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
LIFETIME = "600s"
"""Ten minutes. generateAccessToken documents only a maximum (3600s, more by Organization
Policy) and a one-hour default; ten minutes covers a kubectl session while a leaked
token soon dies."""
PROVIDER = re.compile(r"projects/[0-9]+/locations/global/workloadIdentityPools/[^/\s]+/providers/[^/\s]+")
SERVICE_ACCOUNT = re.compile(r"[^@/\s]+@[^@/\s]+")


class CredentialError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def credential(
    env: Mapping[str, str], out: TextIO, err: TextIO, request: Callable[..., transport.Answer] = transport.request
) -> int:
    log = Log(err)
    try:
        exec_credential = exchange(env, request)
    except CredentialError as error:
        log.error(str(error))
        return error.code
    out.write(json.dumps(exec_credential) + "\n")
    return 0


def exchange(env: Mapping[str, str], request: Callable[..., transport.Answer]) -> dict[str, Any]:
    """The ExecCredential for this job, or CredentialError saying what is missing or who refused."""
    oidc_url = env.get("ACTIONS_ID_TOKEN_REQUEST_URL", "")
    oidc_request_token = env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "")
    provider = env.get("GCP_WORKLOAD_IDENTITY_PROVIDER", "")
    service_account = env.get("GCP_SERVICE_ACCOUNT", "")
    if not oidc_url or not oidc_request_token:
        raise CredentialError("no GitHub OIDC token to trade: give the job permissions: id-token: write", 2)
    if not PROVIDER.fullmatch(provider):
        raise CredentialError(
            "GCP_WORKLOAD_IDENTITY_PROVIDER must be the provider's full name (vars.GCP_WORKLOAD_IDENTITY_PROVIDER)", 2
        )
    if not SERVICE_ACCOUNT.fullmatch(service_account):
        raise CredentialError("GCP_SERVICE_ACCOUNT must be CI's service account email (vars.GCP_SERVICE_ACCOUNT)", 2)
    audience = f"//iam.googleapis.com/{provider}"

    def ask(method: str, url: str, what: str, **kwargs: Any) -> transport.Answer:
        try:
            return request(method, url, timeout=30.0, **kwargs)
        except transport.Unreachable as error:
            raise CredentialError(f"{what} did not answer: {error}") from None

    # 1. This job's OIDC token, for the provider's audience.
    separator = "&" if "?" in oidc_url else "?"
    answer = ask(
        "GET",
        f"{oidc_url}{separator}{urllib.parse.urlencode({'audience': audience})}",
        "GitHub",
        authorization=f"bearer {oidc_request_token}",
    )
    oidc = answer.body.get("value") if answer.status == 200 and isinstance(answer.body, dict) else None
    if not isinstance(oidc, str) or not oidc:
        raise CredentialError(f"GitHub gave this job no OIDC token (HTTP {answer.status})")

    # 2. A federated token from Google's STS, if the provider's condition admits the job's claims.
    answer = ask(
        "POST",
        env.get("GCP_STS_URL") or STS_URL,
        "Google's STS",
        body={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "audience": audience,
            "scope": SCOPE,
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "subject_token": oidc,
        },
    )
    federated = answer.body.get("access_token") if answer.status == 200 and isinstance(answer.body, dict) else None
    if not isinstance(federated, str) or not federated:
        raise CredentialError(
            f"Google's STS refused this job's OIDC token (HTTP {answer.status}: {answer.reason()}): "
            "does the provider trust this repository?"
        )

    # 3. A short-lived token of CI's service account.
    iam = env.get("GCP_IAM_CREDENTIALS_URL") or IAM_CREDENTIALS_URL
    answer = ask(
        "POST",
        f"{iam}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken",
        "IAM Credentials",
        authorization=f"Bearer {federated}",
        body={"scope": [SCOPE], "lifetime": LIFETIME},
    )
    if answer.status != 200:
        raise CredentialError(
            f"IAM would not let this job act as {service_account} (HTTP {answer.status}: {answer.reason()})"
        )
    token = answer.body.get("accessToken") if isinstance(answer.body, dict) else None
    expires = answer.body.get("expireTime") if isinstance(answer.body, dict) else None
    if not isinstance(token, str) or not token or not isinstance(expires, str) or not expires:
        raise CredentialError("IAM answered without a token")
    return {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": token, "expirationTimestamp": expires},
    }
