"""The program's Kubernetes objects, as `pulumi up` would send them, on the real API server.

`rendered(config)` runs the whole Pulumi program under the suite's mocks once per
configuration and keeps every Kubernetes object it registered (secrets unwrapped), in
the order the program's own dependency graph allows: a resource after everything it
depends on, directly or through other resources, and a namespaced object after its
Namespace. `apply` sends them there with server-side apply, as the Kubernetes provider
does, and reports each refusal and each warning the API server gave; `remove` deletes
them in the reverse order, as `pulumi destroy` does, and waits for the namespaces to go;
`deployed` does both around a block. `gpu_runner_job` makes a GPU runner Job from the
template the program mounts for the broker, as the broker does.

Helm releases (`kubernetes:helm.sh/*`) are skipped: Helm renders their objects, not
the program.
"""

from __future__ import annotations

import copy
import functools
import http.client
import json
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from program_harness import Program, Registration, run_program
from program.manifests.broker import BROKER_TEMPLATE_CONFIGMAP, TEMPLATE_FILE
from realkube.cluster import ApiError, Kube, wait_until
from runner_contract import (
    APP_NAME_LABEL,
    GPU_RUNNER,
    PART_OF,
    PART_OF_LABEL,
    RUN_ATTEMPT_LABEL,
    RUN_ATTEMPT_PLACEHOLDER,
    RUN_ID_LABEL,
    RUN_ID_PLACEHOLDER,
    RUN_INDEX_LABEL,
    gpu_runner_job_name,
    system_namespace,
)

P = "gke-gpu-runners"
# The configurations the suite renders elsewhere: the sample, warm GPU runners, a GitHub App.
DEFAULTS: dict[str, str] = {}
# gpuMaxNodes is the default, said out loud: the fake cluster has two GPU nodes.
WARM = {f"{P}:gpuWarmRunners": "1", f"{P}:gpuMaxNodes": "2"}
APP_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEfake\n-----END RSA PRIVATE KEY-----\n"
APP = {f"{P}:githubAppId": "123456", f"{P}:githubAppInstallationId": "7890123", f"{P}:githubAppPrivateKey": APP_KEY}
APP_DROP = (f"{P}:runnerToken",)
CONFIGURATIONS = {"defaults": (DEFAULTS, ()), "warm-runners": (WARM, ()), "github-app": (APP, APP_DROP)}

FIELD_MANAGER = "pulumi-kubernetes"
APPLY_PATCH = "application/apply-patch+yaml"
HELM = "kubernetes:helm.sh/"


@dataclass
class Rendered:
    """One configuration's program run: its Kubernetes objects in apply order, and the GPU runner template."""

    program: Program
    objects: list[dict]
    gpu_runner_template: dict
    """The Job the broker makes GPU runners from (its own mounted copy), placeholders left in."""

    def one(self, kind: str, name: str) -> dict:
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
        return found[0]

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    @property
    def namespaces(self) -> list[str]:
        return [o["metadata"]["name"] for o in self.of_kind("Namespace")]


def kubernetes_objects(program: Program) -> list[Registration]:
    return [r for r in program.resources if r.custom and r.typ.startswith("kubernetes:") and not r.typ.startswith(HELM)]


def apply_order(program: Program) -> list[Registration]:
    """The program's Kubernetes resources, each after every one it waits for (stable in registration order).

    Edges: `dependencies`, followed through resources of other providers and through
    providers; and namespace before contents, whether or not the program said so.
    """
    by_urn = {r.urn: r for r in program.resources}
    wanted = kubernetes_objects(program)
    index = {r.urn: i for i, r in enumerate(wanted)}
    namespace_urns = {r.inputs["metadata"]["name"]: r.urn for r in wanted if r.inputs["kind"] == "Namespace"}

    def waits_for(resource: Registration) -> set[str]:
        found, seen = set(), set()
        todo = list(resource.dependencies) + ([resource.provider.rsplit("::", 1)[0]] if resource.provider else [])
        while todo:
            urn = todo.pop()
            if urn in seen:
                continue
            seen.add(urn)
            if urn in index:
                found.add(urn)
            elif urn in by_urn:  # another provider's resource, or a provider: look through it
                other = by_urn[urn]
                todo.extend(other.dependencies)
                if other.provider:
                    todo.append(other.provider.rsplit("::", 1)[0])
        namespace = resource.inputs["metadata"].get("namespace")
        if namespace in namespace_urns:
            found.add(namespace_urns[namespace])
        found.discard(resource.urn)
        return found

    before = {r.urn: waits_for(r) for r in wanted}
    ordered: list[Registration] = []
    done: set[str] = set()
    while len(ordered) < len(wanted):
        ready = [r for r in wanted if r.urn not in done and before[r.urn] <= done]
        assert ready, f"a dependency cycle among {sorted(set(index) - done)}"
        ordered.append(ready[0])
        done.add(ready[0].urn)
    return ordered


@functools.cache
def _rendered(config: tuple[tuple[str, str], ...], drop: tuple[str, ...]) -> Rendered:
    program = run_program(dict(config), drop=drop)
    ordered = apply_order(program)
    objects = [copy.deepcopy(r.inputs) for r in ordered]  # `inputs` has its secrets unwrapped
    found = Rendered(program, objects, {})
    found.gpu_runner_template = json.loads(found.one("ConfigMap", BROKER_TEMPLATE_CONFIGMAP)["data"][TEMPLATE_FILE])
    return found


def rendered(name: str) -> Rendered:
    """The program run once per session with the configuration called `name` in CONFIGURATIONS."""
    config, drop = CONFIGURATIONS[name]
    return _rendered(tuple(sorted(config.items())), drop)


def gpu_runner_job(template: dict, namespace: str, run_id: str, attempt: str = "1", index: int = 0) -> dict:
    """A GPU runner Job as the broker makes one from its template: digits in, named and labelled per run."""
    text = json.dumps(template).replace(RUN_ID_PLACEHOLDER, run_id).replace(RUN_ATTEMPT_PLACEHOLDER, attempt)
    job = json.loads(text)
    labels = {
        APP_NAME_LABEL: GPU_RUNNER,
        PART_OF_LABEL: PART_OF,
        RUN_ID_LABEL: run_id,
        RUN_ATTEMPT_LABEL: attempt,
        RUN_INDEX_LABEL: str(index),
    }
    job["metadata"] = {
        **job["metadata"],
        "name": gpu_runner_job_name(run_id, attempt, index),
        "namespace": namespace,
        "labels": {**job["metadata"].get("labels", {}), **labels},
    }
    pod = job["spec"]["template"].setdefault("metadata", {})
    pod["labels"] = {**pod.get("labels", {}), **labels}
    return job


@dataclass
class Outcome:
    """What the API server said to one object's apply."""

    kind: str
    name: str
    namespace: str | None
    status: int
    warnings: list[str] = field(default_factory=list)
    message: str = ""

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}: {self.status} {self.message} {self.warnings or ''}".rstrip()


class Discovery:
    """Where each kind lives on this API server: its resource name and whether it is namespaced."""

    def __init__(self, kube: Kube):
        self.kube = kube
        self._kinds: dict[str, dict[str, tuple[str, bool]]] = {}

    def path(self, manifest: dict, named: bool = True) -> str:
        api_version, kind = manifest["apiVersion"], manifest["kind"]
        if api_version not in self._kinds:
            root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            self._kinds[api_version] = {
                r["kind"]: (r["name"], r["namespaced"])
                for r in self.kube.get(root)["resources"]
                if "/" not in r["name"]
            }
        resource, namespaced = self._kinds[api_version][kind]
        root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        scope = f"/namespaces/{manifest['metadata']['namespace']}" if namespaced else ""
        name = f"/{manifest['metadata']['name']}" if named else ""
        return f"{root}{scope}/{resource}{name}"


def server_side_apply(kube: Kube, path: str, manifest: dict) -> tuple[int, dict, list[str]]:
    """`PATCH` with an apply patch, as the Kubernetes provider sends it; the status, body and `Warning` headers."""
    query = urllib.parse.urlencode({"fieldManager": FIELD_MANAGER, "force": "true"})
    data = json.dumps(manifest).encode()  # JSON is YAML
    connection = http.client.HTTPSConnection(kube.host, kube.port, context=kube.context, timeout=30)
    try:
        connection.request(
            "PATCH",
            f"{path}?{query}",
            body=data,
            headers={"Content-Type": APPLY_PATCH, "Accept": "application/json", **kube.headers},
        )
        response = connection.getresponse()
        body = json.loads(response.read() or b"{}")
        warnings = response.headers.get_all("Warning") or []
    finally:
        connection.close()
    return response.status, body, warnings


def apply(kube: Kube, objects: list[dict]) -> list[Outcome]:
    """Apply every object in order; one outcome each (a refusal does not stop the rest)."""
    discovery = Discovery(kube)
    outcomes = []
    for manifest in objects:
        status, body, warnings = server_side_apply(kube, discovery.path(manifest), manifest)
        meta = manifest["metadata"]
        outcomes.append(
            Outcome(
                manifest["kind"],
                meta["name"],
                meta.get("namespace"),
                status,
                warnings,
                body.get("message", "") if status >= 400 else "",
            )
        )
    return outcomes


def remove(kube: Kube, objects: list[dict], timeout_seconds: float = 90) -> None:
    """Delete the objects in reverse apply order, then wait until their namespaces are gone."""
    discovery = Discovery(kube)
    for manifest in reversed(objects):
        try:
            kube.delete(discovery.path(manifest))
        except ApiError as error:
            if error.status not in (404, 409):  # gone already, or its namespace is terminating
                raise
    namespaces = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    wait_until(
        lambda: not any(kube.exists(f"/api/v1/namespaces/{n}") for n in namespaces),
        f"namespaces {namespaces} to be deleted",
        timeout_seconds=timeout_seconds,
        interval_seconds=0.5,
    )


@dataclass
class Deployment:
    """One configuration on the real API server: what was applied and what the server said."""

    rendered: Rendered
    outcomes: list[Outcome]

    @property
    def runner_namespace(self) -> str:
        return self.rendered.program.outputs["namespace"]

    @property
    def system_namespace(self) -> str:
        return system_namespace(self.runner_namespace)


@contextmanager
def deployed(kube: Kube, name: str) -> Iterator[Deployment]:
    """The configuration `name` applied for the duration of the block, removed after it."""
    objects = rendered(name).objects
    remove(kube, objects)  # what an interrupted session left on a reused control plane
    try:
        yield Deployment(rendered(name), apply(kube, objects))
    finally:
        remove(kube, objects)
