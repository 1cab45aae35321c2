"""A scriptable stand-in for the Kubernetes API paths the runner broker uses.

It listens on 127.0.0.1 on a free port and keeps pods, ReplicaSets, Jobs and events as
plain dicts in the real API's shape (the builders below make them). It answers:

    POST   /apis/authentication.k8s.io/v1/tokenreviews
    GET    /api/v1/namespaces/{ns}/pods/{name}        DELETE the same (uid precondition: 409 on mismatch)
    PATCH  /api/v1/namespaces/{ns}/pods/{name}        a JSON merge patch; another metadata.uid: 422
    GET    /api/v1/namespaces/{ns}/pods?labelSelector=k=v,...
    GET    /api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name=x,...
    GET    /apis/apps/v1/namespaces/{ns}/replicasets/{name}
    GET    /apis/batch/v1/namespaces/{ns}/jobs[/{name}]   POST (409 AlreadyExists), DELETE (propagationPolicy)

Lists take `labelSelector` (k=v, k==v, comma-joined) and `fieldSelector` (dotted paths,
k=v). A Job made by POST gets a uid, a creationTimestamp and an empty status; the
callables in `on_job_created` see it (a test's stand-in for the Job controller). Deleting
a Job with propagationPolicy Background or Foreground deletes the pods it controls.

A TokenReview authenticates the tokens given to `add_token` when one of the requested
audiences is among the token's, and, as the API server does for pod-bound tokens, only
while the pod it was issued to still exists with the same UID (`validate_bindings`).
A deleted pod is gone at once: no grace period is simulated.

`fail()` and `hang()` put faults in front of a path; every request is recorded.

    with FakeKubernetes(api_token="broker-token") as kube:
        kube.put(pod("base-runner-abc", NAMESPACE, "uid-1", owner=("ReplicaSet", "base-runner-abc", "uid-rs")))
        kube.add_token("t", namespace=NAMESPACE, service_account="runner", pod_name="base-runner-abc",
                       pod_uid="uid-1", audiences=["aud"])
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote

from local_server import LocalServer, QuietHandler, send_json

KINDS = {"pods": "Pod", "replicasets": "ReplicaSet", "jobs": "Job", "events": "Event"}
API_VERSIONS = {"Pod": "v1", "ReplicaSet": "apps/v1", "Job": "batch/v1", "Event": "v1"}
GROUPS = {"pods": "api/v1", "events": "api/v1", "replicasets": "apis/apps/v1", "jobs": "apis/batch/v1"}
OBJECT_PATH = re.compile(
    r"^/(api/v1|apis/apps/v1|apis/batch/v1)/namespaces/([^/]+)/(pods|replicasets|jobs|events)"
    r"(?:/([^/]+))?$"
)
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


# --------------------------------------------------------------------------- builders --


def pod(
    name: str,
    namespace: str,
    uid: str,
    *,
    owner: tuple[str, str, str] | None = None,
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    terminating: bool = False,
    restarts: int = 0,
    image: str = "runner:test",
    annotations: dict[str, str] | None = None,
) -> dict:
    """A Pod; `owner` is its controller as (kind, name, uid); `restarts` its container's restartCount."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "labels": dict(labels or {}),
        "creationTimestamp": now_rfc3339(),
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    if owner is not None:
        kind, owner_name, owner_uid = owner
        metadata["ownerReferences"] = [
            {
                "apiVersion": API_VERSIONS.get(kind, "v1"),
                "kind": kind,
                "name": owner_name,
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    if terminating:
        metadata["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    state = {"running": {"startedAt": "2030-01-01T00:00:00Z"}} if phase == "Running" else {"terminated": {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "runner", "image": image}]},
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "runner", "restartCount": restarts, "ready": phase == "Running", "state": state}
            ],
        },
    }


def replicaset(
    name: str, namespace: str, uid: str, *, deployment: str | None, deployment_uid: str = "uid-deploy"
) -> dict:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid, "labels": {}}
    if deployment is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment,
                "uid": deployment_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": metadata, "spec": {"replicas": 1}}


def job(
    name: str, namespace: str, uid: str, *, labels: dict[str, str] | None = None, image: str = "runner:test"
) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "labels": dict(labels or {}),
            "creationTimestamp": now_rfc3339(),
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": dict(labels or {})},
                "spec": {"containers": [{"name": "runner", "image": image}]},
            },
        },
        "status": {},
    }


def event(
    involved: dict,
    reason: str,
    message: str,
    *,
    type: str = "Normal",
    count: int = 1,  # noqa: A002
    at: str | None = None,
) -> dict:
    """An Event about `involved` (a pod or Job as stored), as the scheduler, the autoscaler or a controller writes."""
    metadata = involved["metadata"]
    stamp = at or now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{metadata['name']}.{next(_event_numbers):x}",
            "namespace": metadata["namespace"],
            "uid": f"uid-event-{next(_event_numbers)}",
            "creationTimestamp": stamp,
        },
        "involvedObject": {
            "kind": involved["kind"],
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "apiVersion": involved["apiVersion"],
        },
        "reason": reason,
        "message": message,
        "type": type,
        "count": count,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": "fake"},
    }


_event_numbers = itertools.count(1)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selector_terms(selector: str) -> dict[str, str]:
    return dict(term.replace("==", "=").split("=", 1) for term in selector.split(",") if term)


def field_value(obj: dict, path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


# ------------------------------------------------------------------------------ fake --


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: bytes
    wall: float = 0.0
    """time.time() when the request arrived, to order it against the other fake's."""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class TokenInfo:
    namespace: str
    service_account: str
    pod_name: str | None
    pod_uid: str | None
    audiences: tuple[str, ...]


@dataclass
class Fault:
    path_prefix: str
    method: str | None
    status: int | None
    delay: float
    remaining: int


@dataclass
class _Store:
    objects: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    """By (kind, namespace, name)."""
    tokens: dict[str, TokenInfo] = field(default_factory=dict)


class FakeKubernetes(LocalServer):
    thread_name = "fake-kubernetes"

    def __init__(self, *, api_token: str | None = None) -> None:
        self.api_token = api_token
        """When set, requests without `Authorization: Bearer <api_token>` get 401."""
        self.validate_bindings = True
        """Refuse a pod-bound token whose pod is gone or has another UID, as the API server does."""
        self._lock = threading.Lock()
        self._store = _Store()
        self._faults: list[Fault] = []
        self._requests: list[Request] = []
        self._uids = itertools.count(1)
        self.on_job_created: list[Callable[[dict], None]] = []
        """Called (outside the lock) with each Job made by POST, as the Job controller would see it."""

    # ------------------------------------------------------------- scripting --

    def put(self, obj: dict) -> dict:
        metadata = obj["metadata"]
        with self._lock:
            self._store.objects[(obj["kind"], metadata["namespace"], metadata["name"])] = obj
        return obj

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            return self._store.objects.get((kind, namespace, name))

    def remove(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._store.objects.pop((kind, namespace, name), None)

    def objects(self, kind: str, namespace: str | None = None) -> list[dict]:
        with self._lock:
            return [obj for (k, ns, _), obj in self._store.objects.items() if k == kind and namespace in (None, ns)]

    def update(self, kind: str, namespace: str, name: str, change: Callable[[dict], None]) -> dict:
        """Change a stored object in place, under the fake's lock (as a controller writes status)."""
        with self._lock:
            obj = self._store.objects[(kind, namespace, name)]
            change(obj)
            return obj

    def add_token(
        self,
        token: str,
        *,
        namespace: str,
        service_account: str,
        pod_name: str | None,
        pod_uid: str | None,
        audiences: list[str],
    ) -> None:
        """A projected token; pod_name/pod_uid None make it a plain (not pod-bound) ServiceAccount token."""
        with self._lock:
            self._store.tokens[token] = TokenInfo(namespace, service_account, pod_name, pod_uid, tuple(audiences))

    def fail(self, path_prefix: str = "/", *, status: int = 500, times: int = 1, method: str | None = None) -> None:
        """The next `times` matching requests get `status`."""
        with self._lock:
            self._faults.append(Fault(path_prefix, method, status, 0.0, times))

    def hang(self, path_prefix: str = "/", *, seconds: float, times: int = 1, method: str | None = None) -> None:
        """The next `times` matching requests are answered only after `seconds`."""
        with self._lock:
            self._faults.append(Fault(path_prefix, method, None, seconds, times))

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, method: str | None = None, path_prefix: str = "") -> list[Request]:
        return [r for r in self.requests if (method is None or r.method == method) and r.path.startswith(path_prefix)]

    # ------------------------------------------------------------- answering --

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                path, _, query = self.path.partition("?")
                request = Request(self.command, path, query, self.lowered_headers(), self.read_body(), time.time())
                status, payload = fake._handle(request)
                if status == 0:
                    return  # stopped while hanging
                send_json(self, status, payload)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _answer

        return Handler

    def _handle(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            self._requests.append(request)
            fault = self._take_fault(request)
        if fault is not None:
            if fault.delay and self._stopping.wait(fault.delay):
                return 0, None
            if fault.status is not None:
                return fault.status, status_object(fault.status, "InternalError", "injected fault")
        if self.api_token is not None and request.headers.get("authorization") != f"Bearer {self.api_token}":
            return 401, status_object(401, "Unauthorized", "Unauthorized")
        if request.path == TOKEN_REVIEWS and request.method == "POST":
            return 201, self._review(request.json() or {})
        match = OBJECT_PATH.match(request.path)
        if match is None or GROUPS[match.group(3)] != match.group(1):
            return 404, status_object(
                404, "NotFound", f"the server could not find the requested resource {request.path}"
            )
        namespace, resource, name = match.group(2), match.group(3), match.group(4)
        name = unquote(name) if name is not None else None
        kind = KINDS[resource]
        if name is None and request.method == "GET":
            return 200, self._list(kind, namespace, request.query)
        if name is None and request.method == "POST" and kind == "Job":
            return self._create_job(namespace, request.json() or {})
        if name is not None and request.method == "GET":
            with self._lock:
                obj = copy.deepcopy(self._store.objects.get((kind, namespace, name)))
            return (200, obj) if obj else (404, not_found(resource, name))
        if name is not None and request.method == "DELETE" and kind in ("Pod", "Job"):
            return self._delete(kind, resource, namespace, name, request.json() or {})
        if name is not None and request.method == "PATCH" and kind == "Pod":
            return self._patch(kind, resource, namespace, name, request)
        return 405, status_object(405, "MethodNotAllowed", f"{request.method} is not supported here")

    def _take_fault(self, request: Request) -> Fault | None:
        for fault in self._faults:
            matches = request.path.startswith(fault.path_prefix) and fault.method in (None, request.method)
            if fault.remaining and matches:
                fault.remaining -= 1
                return fault
        return None

    def _review(self, review: dict) -> dict:
        spec = review.get("spec") or {}
        wanted = list(spec.get("audiences") or [])
        with self._lock:
            info = self._store.tokens.get(spec.get("token", ""))
        status: dict[str, Any] = {"authenticated": False, "user": {}}
        if info is None:
            status["error"] = "[invalid bearer token, square/go-jose: error in cryptographic primitive]"
        elif wanted and not set(wanted) & set(info.audiences):
            status["error"] = f"token audiences {list(info.audiences)} is invalid for the target audiences {wanted}"
        elif self.validate_bindings and info.pod_name and not self._pod_alive(info):
            status["error"] = f"pod {info.pod_name} has been deleted or its UID differs"
        else:
            extra = {}
            if info.pod_name:
                extra = {
                    "authentication.kubernetes.io/pod-name": [info.pod_name],
                    "authentication.kubernetes.io/pod-uid": [info.pod_uid],
                    "authentication.kubernetes.io/credential-id": ["JTI=fake"],
                }
            status = {
                "authenticated": True,
                "user": {
                    "username": f"system:serviceaccount:{info.namespace}:{info.service_account}",
                    "uid": f"uid-sa-{info.service_account}",
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{info.namespace}",
                        "system:authenticated",
                    ],
                    "extra": extra,
                },
                "audiences": [a for a in wanted if a in info.audiences] if wanted else list(info.audiences),
            }
        # As the real API does, the answer echoes the spec, token included: the broker must not log it.
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": spec,
            "status": status,
        }

    def _pod_alive(self, info: TokenInfo) -> bool:
        current = self.get("Pod", info.namespace, info.pod_name or "")
        return current is not None and current["metadata"]["uid"] == info.pod_uid

    def _list(self, kind: str, namespace: str, query: str) -> dict:
        parsed = parse_qs(query)
        labels = selector_terms(parsed.get("labelSelector", [""])[0])
        fields = selector_terms(parsed.get("fieldSelector", [""])[0])
        with self._lock:
            found = [
                copy.deepcopy(obj) for (k, ns, _), obj in self._store.objects.items() if k == kind and ns == namespace
            ]
        items = [
            obj
            for obj in found
            if all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
            and all(str(field_value(obj, k)) == v for k, v in fields.items())
        ]
        return {
            "apiVersion": API_VERSIONS[kind],
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }

    def _create_job(self, namespace: str, body: dict) -> tuple[int, Any]:
        metadata = body.get("metadata") or {}
        name = metadata.get("name")
        if body.get("kind") != "Job" or not name or metadata.get("namespace", namespace) != namespace:
            return 422, status_object(422, "Invalid", "a Job needs kind Job, a name and this namespace")
        created = copy.deepcopy(body)
        created["metadata"] = {
            **metadata,
            "namespace": namespace,
            "uid": f"uid-job-made-{next(self._uids):04d}",
            "creationTimestamp": now_rfc3339(),
            "resourceVersion": "1",
        }
        created.setdefault("status", {})
        with self._lock:
            if ("Job", namespace, name) in self._store.objects:
                return 409, status_object(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            self._store.objects[("Job", namespace, name)] = created
        for controller in list(self.on_job_created):
            controller(created)
        return 201, created

    def _delete(self, kind: str, resource: str, namespace: str, name: str, options: dict) -> tuple[int, Any]:
        wanted_uid = (options.get("preconditions") or {}).get("uid")
        with self._lock:
            current = self._store.objects.get((kind, namespace, name))
            if current is None:
                return 404, not_found(resource, name)
            if wanted_uid is not None and current["metadata"]["uid"] != wanted_uid:
                return 409, status_object(
                    409,
                    "Conflict",
                    f"Precondition failed: UID in precondition: {wanted_uid}, "
                    f"UID in object meta: {current['metadata']['uid']}",
                )
            del self._store.objects[(kind, namespace, name)]
            if kind == "Job" and options.get("propagationPolicy") in ("Background", "Foreground"):
                uid = current["metadata"]["uid"]
                for key, obj in list(self._store.objects.items()):
                    references = obj["metadata"].get("ownerReferences") or []
                    if key[0] == "Pod" and key[1] == namespace and any(r.get("uid") == uid for r in references):
                        del self._store.objects[key]
        return 200, current

    def _patch(self, kind: str, resource: str, namespace: str, name: str, request: Request) -> tuple[int, Any]:
        if request.headers.get("content-type") != "application/merge-patch+json":
            return 415, status_object(415, "UnsupportedMediaType", "the fake takes JSON merge patches only")
        patch = request.json() or {}
        with self._lock:
            current = self._store.objects.get((kind, namespace, name))
            if current is None:
                return 404, not_found(resource, name)
            wanted_uid = (patch.get("metadata") or {}).get("uid")
            if wanted_uid is not None and wanted_uid != current["metadata"]["uid"]:
                # As the real API server answers (tests/realkube): a UID is immutable, not a precondition.
                refused = status_object(
                    422,
                    "Invalid",
                    f'Pod "{name}" is invalid: metadata.uid: Invalid value: "{wanted_uid}": field is immutable',
                )
                refused["details"] = {
                    "name": name,
                    "kind": kind,
                    "causes": [
                        {
                            "reason": "FieldValueInvalid",
                            "message": f'Invalid value: "{wanted_uid}": field is immutable',
                            "field": "metadata.uid",
                        }
                    ],
                }
                return 422, refused
            patched = merge_patch(current, patch)
            current.clear()
            current.update(patched)
            return 200, copy.deepcopy(current)


def status_object(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def not_found(resource: str, name: str) -> dict:
    return status_object(404, "NotFound", f'{resource} "{name}" not found')
