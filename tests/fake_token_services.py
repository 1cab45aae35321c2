"""Local stand-ins for the three token endpoints a keyless CI job uses, on 127.0.0.1.

- GitHub's OIDC token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL): GET with the job's request
  token, gives a JWT for the asked audience;
- Google's STS: trades that JWT, for the right audience, for a federated token;
- IAM credentials: trades the federated token for a short-lived service account token.

Each checks what the real one checks that matters here, and records every request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from local_server import LocalServer, QuietHandler, send_json

REQUEST_TOKEN = "gh-oidc-request-token-do-not-log"
JWT = "eyJhbGciOiJSUzI1NiJ9.github-oidc-jwt-do-not-log.sig"
FEDERATED = "federated-token-do-not-log"
ACCESS_TOKEN = "ya29.ci-service-account-token-do-not-log"
EXPIRES = "2099-01-01T00:00:00Z"
SECRETS = (REQUEST_TOKEN, JWT, FEDERATED, ACCESS_TOKEN)


@dataclass
class TokenServices(LocalServer):
    thread_name = "fake-token-services"

    provider: str = (
        "projects/123456789012/locations/global/workloadIdentityPools/gpu-runners-github/providers/github-actions"
    )
    service_account: str = "gpu-runners-ci@acme-ml.iam.gserviceaccount.com"
    admit: bool = True
    """Whether the provider's attribute condition admits the job's claims."""
    requests: list[dict] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        """What a job with `permissions: id-token: write` and the Actions variables has."""
        return {
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"{self.url}/oidc?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN,
            "GCP_WORKLOAD_IDENTITY_PROVIDER": self.provider,
            "GCP_SERVICE_ACCOUNT": self.service_account,
            "GCP_STS_URL": f"{self.url}/sts",
            "GCP_IAM_CREDENTIALS_URL": f"{self.url}/iam",
        }

    def answer(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
        url = urlsplit(path)
        self.requests.append(
            {
                "method": method,
                "path": url.path,
                "query": parse_qs(url.query),
                "authorization": headers.get("authorization", ""),
                "body": body.decode(),
            }
        )
        if method == "GET" and url.path == "/oidc":
            if headers.get("authorization") != f"bearer {REQUEST_TOKEN}":
                return 401, {"message": "bad request token"}
            return 200, {"value": JWT, "count": 1}
        if method == "POST" and url.path == "/sts":
            request = json.loads(body or b"{}")
            if (
                request.get("subject_token") != JWT
                or request.get("audience") != f"//iam.googleapis.com/{self.provider}"
            ):
                return 400, {"error": "invalid_grant", "error_description": "invalid subject token or audience"}
            if not self.admit:
                return 403, {
                    "error": "unauthorized_client",
                    "error_description": "The given credential is rejected by the attribute condition.",
                }
            return 200, {"access_token": FEDERATED, "token_type": "Bearer", "expires_in": 3600}
        if (
            method == "POST"
            and url.path == f"/iam/v1/projects/-/serviceAccounts/{self.service_account}:generateAccessToken"
        ):
            if headers.get("authorization") != f"Bearer {FEDERATED}":
                return 401, {"error": {"code": 401, "message": "bad federated token"}}
            return 200, {"accessToken": ACCESS_TOKEN, "expireTime": EXPIRES}
        return 404, {"error": f"no route {method} {url.path}"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        services = self

        class Handler(QuietHandler):
            def _handle(self) -> None:
                status, answer = services.answer(self.command, self.path, self.lowered_headers(), self.read_body())
                send_json(self, status, answer)

            do_GET = do_POST = _handle  # noqa: N815 - stdlib names

        return Handler
