"""The Kubernetes API calls the broker makes, each with its own ServiceAccount token, in the runner namespace.

Only these: TokenReviews; pods get, list, patch (merge) and delete; events list; Jobs
get, list, create and delete; ReplicaSets get.
"""

from __future__ import annotations

import json
import ssl
from urllib.parse import quote, urlencode, urlsplit

from runner_broker.config import Config
from runner_broker.errors import CredentialUnreadable, KubernetesError
from runner_broker.http import USER_AGENT, HttpAnswer, Unanswered, exchange
from runner_broker.secrets import Secret, read_file, read_token, shown_path

API_GROUPS = {"pods": "/api/v1", "events": "/api/v1", "replicasets": "/apis/apps/v1", "jobs": "/apis/batch/v1"}
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
MAX_LIST_ITEMS = 500  # a page; the runner namespace holds far fewer of any kind


class KubernetesClient:
    def __init__(self, config: Config) -> None:
        self._config = config

    def review_token(self, token: Secret, audience: str) -> dict:
        """The TokenReview status of a pod's token, for our audience alone."""
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token.reveal(), "audiences": [audience]},
        }
        body = self._call("POST", TOKEN_REVIEWS, review, what="a TokenReview", ok=(200, 201)).json()
        status = body.get("status") if isinstance(body, dict) else None
        return status if isinstance(status, dict) else {}

    def get(self, resource: str, name: str) -> dict | None:
        """A pod, ReplicaSet or Job (`resource`: pods, replicasets, jobs) of the runner namespace, or None."""
        answer = self._call("GET", self._path(resource, name), what=f"reading {resource[:-1]} {name}", tolerated=(404,))
        body = answer.json()
        return body if answer.status == 200 and isinstance(body, dict) else None

    def list(
        self,
        resource: str,
        *,
        labels: dict[str, str] | None = None,
        fields: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> list[dict] | None:
        """The pods, Jobs or events that match; None (with `missing_ok`) when the broker may no longer see the
        runner namespace."""
        query = {"limit": str(MAX_LIST_ITEMS)}
        if labels:
            query["labelSelector"] = ",".join(f"{key}={value}" for key, value in labels.items())
        if fields:
            query["fieldSelector"] = ",".join(f"{key}={value}" for key, value in fields.items())
        answer = self._call(
            "GET",
            f"{self._path(resource)}?{urlencode(query)}",
            what=f"the list of {resource}",
            tolerated=(403, 404) if missing_ok else (),
        )
        body = answer.json()
        if answer.status != 200 or not isinstance(body, dict):
            return None
        return [item for item in body.get("items") or [] if isinstance(item, dict)]

    def annotate_pod(self, name: str, uid: str, annotations: dict[str, str]) -> bool:
        """Add annotations to the pod if it is still the one with `uid`; False when it is gone or replaced.

        The UID in the merge patch is the precondition: the API server refuses to change a pod's UID (422
        Invalid, its cause on metadata.uid) when another pod of that name has taken our pod's place."""
        patch = {"metadata": {"uid": uid, "annotations": annotations}}
        what = f"annotating pod {name}"
        answer = self._call(
            "PATCH",
            self._path("pods", name),
            patch,
            what=what,
            content_type="application/merge-patch+json",
            tolerated=(404, 422),
        )
        if answer.status == 422 and not _invalid_field(answer, "metadata.uid"):
            raise KubernetesError(f"the Kubernetes API answered {what} with HTTP 422")
        return answer.status == 200

    def delete_pod(self, name: str, uid: str) -> bool:
        """Delete the pod if it is still the one with `uid`; False when it is gone or replaced."""
        answer = self._call(
            "DELETE",
            self._path("pods", name),
            {"preconditions": {"uid": uid}},
            what=f"deleting pod {name}",
            ok=(200, 202),
            tolerated=(404, 409),
        )
        return answer.status in (200, 202)

    def create_job(self, job: dict) -> dict | None:
        """Create the Job; None when one of that name exists already."""
        name = str(job.get("metadata", {}).get("name"))
        answer = self._call(
            "POST", self._path("jobs"), job, what=f"creating Job {name}", ok=(201, 200), tolerated=(409,)
        )
        body = answer.json()
        return body if answer.status != 409 and isinstance(body, dict) else None

    def delete_job(self, name: str, uid: str | None = None) -> bool:
        """Delete the Job and, in the background, its pods; False when it was gone (or replaced)."""
        options: dict = {"propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        answer = self._call(
            "DELETE",
            self._path("jobs", name),
            options,
            what=f"deleting Job {name}",
            ok=(200, 202),
            tolerated=(404, 409),
        )
        return answer.status in (200, 202)

    # ------------------------------------------------------------------ plumbing --

    def _path(self, resource: str, name: str = "") -> str:
        path = f"{API_GROUPS[resource]}/namespaces/{quote(self._config.runner_namespace, safe='')}/{resource}"
        return f"{path}/{quote(name, safe='')}" if name else path

    def _call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        what: str,
        ok: tuple[int, ...] = (200,),
        tolerated: tuple[int, ...] = (),
        content_type: str = "application/json",
    ) -> HttpAnswer:
        config = self._config
        payload = json.dumps(body).encode() if body is not None else None
        try:
            token = read_token(config.kubernetes_token_file, "KUBERNETES_TOKEN_FILE")
            headers = {
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
                "Authorization": f"Bearer {token.reveal()}",
                **({"Content-Type": content_type} if payload is not None else {}),
            }
            answer = exchange(
                method,
                config.kubernetes_api_url + path,
                headers=headers,
                body=payload,
                policy=config.kubernetes_retry,
                tls=self._tls(),
            )
        except Unanswered as error:
            raise KubernetesError(f"the Kubernetes API did not answer {what}: {error}") from None
        except CredentialUnreadable as error:
            raise KubernetesError(f"cannot ask the Kubernetes API ({what}): {error}") from None
        if answer.status in ok or answer.status in tolerated:
            return answer
        if answer.status in (401, 403):
            raise KubernetesError(
                f"the Kubernetes API refused {what} (HTTP {answer.status}): the broker's "
                "ServiceAccount token is invalid or its Role lacks the permission"
            )
        raise KubernetesError(f"the Kubernetes API answered {what} with HTTP {answer.status}")

    def _tls(self) -> ssl.SSLContext | None:
        """The API server's CA as the file holds it now (a rotated CA takes effect without a restart)."""
        if urlsplit(self._config.kubernetes_api_url).scheme != "https":
            return None
        ca_file = self._config.kubernetes_ca_file
        ca = read_file(ca_file, "KUBERNETES_CA_FILE").decode("ascii", "replace")
        try:
            return ssl.create_default_context(cadata=ca)
        except ssl.SSLError:
            raise CredentialUnreadable(f"KUBERNETES_CA_FILE ({shown_path(ca_file)}) holds no PEM certificate") from None


def _invalid_field(answer: HttpAnswer, field: str) -> bool:
    """Whether a 422 Status names `field` among its causes."""
    body = answer.json()
    details = body.get("details") if isinstance(body, dict) else None
    causes = details.get("causes") if isinstance(details, dict) else None
    return isinstance(causes, list) and any(isinstance(c, dict) and c.get("field") == field for c in causes)
