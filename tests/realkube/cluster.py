"""A thin client for the real API server `scripts/kube-env` starts, and nodes for it.

No kubelet runs there. `FakeNodes` stands in for the kubelets the tests need: it
registers Node objects (a CPU node, GPU nodes with the pool's label, taint and
`nvidia.com/gpu` capacity), renews their Leases so the node lifecycle controller keeps
them Ready, and finishes the deletion of pods bound to them the way a kubelet would, so
preemption and namespace teardown complete. Pods the scheduler binds stay Pending; a
test that needs "Running" sets the phase through the status subresource.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from runner_contract import CPU_POOL_LABELS, GPU_POOL_LABELS, GPU_RESOURCE, GPU_TAINT, RUNNER_UID

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
LEASE_NAMESPACE = "kube-node-lease"
# The nodes the tests' session registers.
CPU_NODE = "cpu-node-0"
GPU_NODES = ("gpu-node-0", "gpu-node-1")
GPUS_PER_NODE = 1


class ApiError(Exception):
    """The API server answered with an error status; `body` is its Status object."""

    def __init__(self, method: str, path: str, status: int, body: dict):
        self.status = status
        self.body = body
        self.reason = body.get("reason", "")
        self.message = body.get("message", "")
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


class Kube:
    """Requests to the API server as the kubeconfig's admin, or as whom `as_user`/`with_token` say."""

    def __init__(
        self,
        kubeconfig: str | Path,
        *,
        headers: dict[str, str] | None = None,
        groups: tuple[str, ...] = (),
        client_cert: bool = True,
    ):
        self.kubeconfig = Path(kubeconfig)
        config = yaml.safe_load(self.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        url = urllib.parse.urlsplit(cluster["server"])
        self.host, self.port = url.hostname, url.port
        self.context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        if client_cert:
            self.context.load_cert_chain(user["client-certificate"], user["client-key"])
        self.headers = dict(headers or {})
        self.groups = groups  # Impersonate-Group, a header that may repeat

    def as_user(self, user: str, groups: tuple[str, ...] = ()) -> Kube:
        """The admin impersonating `user` (authenticated, plus `groups`): what RBAC lets them do."""
        return Kube(self.kubeconfig, headers={"Impersonate-User": user}, groups=("system:authenticated", *groups))

    def with_token(self, token: str) -> Kube:
        """Requests authenticated by a bearer token alone, as a pod would make them."""
        return Kube(self.kubeconfig, headers={"Authorization": f"Bearer {token}"}, client_cert=False)

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = JSON, query: dict[str, str] | None = None
    ) -> dict:
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        headers = {"Accept": JSON, **self.headers}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
        try:
            connection.putrequest(method, path)
            for name, value in headers.items():
                connection.putheader(name, value)
            for group in self.groups:
                connection.putheader("Impersonate-Group", group)
            if data is not None:
                connection.putheader("Content-Length", str(len(data)))
            connection.endheaders(data)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        answer = json.loads(raw) if raw else {}
        if response.status >= 400:
            raise ApiError(method, path, response.status, answer if isinstance(answer, dict) else {})
        return answer

    def get(self, path: str, **query: str) -> dict:
        return self.request("GET", path, query=query or None)

    def create(self, path: str, body: dict) -> dict:
        return self.request("POST", path, body)

    def patch(self, path: str, body: dict, content_type: str = MERGE_PATCH) -> dict:
        return self.request("PATCH", path, body, content_type)

    def delete(self, path: str, grace_period_seconds: int | None = None) -> dict:
        body = None if grace_period_seconds is None else {"gracePeriodSeconds": grace_period_seconds}
        return self.request("DELETE", path, body)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True


def wait_until(check: Callable[[], Any], what: str, timeout_seconds: float = 30, interval_seconds: float = 0.2):
    """Poll `check` until it returns something truthy, and return that; fail after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_seconds)
    raise AssertionError(f"timed out after {timeout_seconds}s waiting for {what}; last saw {last!r}")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: no kubelet runs
RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": RUNNER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod_spec(gpus: int = 0, **spec: Any) -> dict:
    """A pod spec the `restricted` Pod Security level admits; `gpus` makes it a GPU pod
    that tolerates the GPU pool's taint."""
    container: dict[str, Any] = {
        "name": "main",
        "image": PAUSE_IMAGE,
        "securityContext": dict(RESTRICTED_CONTAINER_SECURITY),
    }
    if gpus:
        container["resources"] = {"limits": {GPU_RESOURCE: str(gpus)}}
        spec.setdefault("tolerations", [{**GPU_TAINT, "operator": "Equal"}])
    return {"containers": [container], **spec}


def pod_manifest(name: str, gpus: int = 0, labels: dict | None = None, **spec: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": pod_spec(gpus, **spec),
    }


def node_manifest(name: str, gpus: int = 0) -> dict:
    """A Node as a GKE node of the CPU pool (`gpus == 0`) or the GPU pool would register."""
    capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    spec: dict[str, Any] = {}
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
        labels.update(GPU_POOL_LABELS)
        spec["taints"] = [dict(GPU_TAINT)]
    else:
        labels.update(CPU_POOL_LABELS)
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet stand-in",
        "lastHeartbeatTime": now(),
        "lastTransitionTime": now(),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [ready],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        },
    }


class FakeNodes:
    """Nodes with a kubelet stand-in: Leases renewed, pods deleted on them finish deleting."""

    LEASE_SECONDS = 40
    RENEW_EVERY_SECONDS = 10
    POLL_SECONDS = 0.5

    def __init__(self, kube: Kube):
        self.kube = kube
        self.names: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet-stand-in", daemon=True)
        self.errors: list[str] = []

    def add(self, name: str, gpus: int = 0) -> dict:
        # Like a kubelet's registration, the create keeps the status it is given.
        node = self.kube.create("/api/v1/nodes", node_manifest(name, gpus))
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        if self.kube.exists(f"{leases}/{name}"):  # a node of that name was here before
            self.kube.delete(f"{leases}/{name}")
        self.kube.create(
            leases,
            {
                "metadata": {
                    "name": name,
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
                    ],
                },
                "spec": {"holderIdentity": name, "leaseDurationSeconds": self.LEASE_SECONDS, "renewTime": micro_now()},
            },
        )
        self.names.append(name)
        return node

    def start(self) -> FakeNodes:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self.POLL_SECONDS):
            try:
                if time.monotonic() - renewed >= self.RENEW_EVERY_SECONDS:
                    self.renew()
                    renewed = time.monotonic()
                self.finish_deletions()
            except (ApiError, OSError) as error:  # keep standing in; a test will see the log
                self.errors.append(str(error))

    def renew(self) -> None:
        for name in self.names:
            self.kube.patch(
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}",
                {"spec": {"renewTime": micro_now()}},
            )

    def finish_deletions(self) -> None:
        """What a kubelet does once it stopped a deleted pod's containers: remove the pod."""
        pods = self.kube.get("/api/v1/pods")["items"]
        for pod in pods:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") and pod["spec"].get("nodeName") in self.names:
                try:
                    self.kube.delete(
                        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", grace_period_seconds=0
                    )
                except ApiError as error:
                    if error.status != 404:
                        raise

    def delete_all(self) -> None:
        for name in self.names:
            try:
                self.kube.delete(f"/api/v1/nodes/{name}")
            except ApiError as error:
                if error.status != 404:
                    raise
        self.names.clear()
