"""The runner broker as `pulumi up` puts it in a cluster, against the real API server of
`scripts/kube-env`: what tests/realkube/test_realkube_broker.py runs its scenarios in.

`BrokerWorld.build` takes the program's own objects (a `run_program()` of this project,
with a namespace of its own) and creates, as the admin, what the broker needs and
nothing else: the runner namespace and `<namespace>-system` labelled as the program
labels them, the runner and broker ServiceAccounts, exactly the RBAC that binds the
broker (its ClusterRole and ClusterRoleBinding for TokenReviews, its Role and
RoleBinding in the runner namespace), the GPU quota, the NetworkPolicy and the
base-runner Deployment. The GPU runner template is the `gpu-runner-job` ConfigMap's
JSON, written to the file the broker reads.

The broker then runs as a real process (`python3 -m runner_broker`), with its own
ServiceAccount's token from the TokenRequest API (the API server's default audience)
and the control plane's CA, and the program's own settings for it (its Deployment's
environment), save where to listen, where its files are and how often it sweeps.
GitHub stays a local double (tests/fake_github.py with github_runners.py). Runner pods'
tokens come from the TokenRequest API too, bound to the pod, for the broker's audience,
as the kubelet would project them. No kubelet runs: `mark_running` plays its part.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from broker_harness import BrokerProcess, RunnerPod, broker_environment
from fake_github import FakeGitHub
from github_runners import GitHubRunners, GitHubRuns, runners_api
from program.manifests.broker import BROKER_TEMPLATE_CONFIGMAP, TEMPLATE_FILE
from realkube.cluster import ApiError, Kube, wait_until
from runner_contract import (
    BASE_RUNNER,
    BROKER,
    BROKER_AUDIENCE,
    PART_OF,
    PART_OF_LABEL,
    RUNNER_ACCOUNT,
    RUNNER_ANNOTATION,
    system_namespace,
)

PROJECT = "gke-gpu-runners"
# A namespace of this module's own, so that other tests' copies of the program's objects stay apart.
RUNNER_NAMESPACE = "rk-broker-runners"
SYSTEM_NAMESPACE = system_namespace(RUNNER_NAMESPACE)
BASE_REPLICAS = 5
"""Enough base runners for the scenarios that hold some (granted, not finished) while others ask."""
PROGRAM_CONFIG = {f"{PROJECT}:namespace": RUNNER_NAMESPACE, f"{PROJECT}:baseRunnerReplicas": str(BASE_REPLICAS)}
# Fake values, hyphenated so no secret scanner takes them for real ones.
PAT = "ghp_FAKE-realkube-broker-pat-0001"
POD_TOKEN_SECONDS = 600  # what the program projects; the shortest Kubernetes allows
BROKER_TOKEN_SECONDS = 3600
NAMESPACE_GONE_SECONDS = 90
# The kinds of the program's objects the broker's world needs, in the order they are created, and their resources.
KINDS = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ResourceQuota": "resourcequotas",
    "NetworkPolicy": "networkpolicies",
    "Deployment": "deployments",
}


def collection(obj: dict) -> str:
    """The API path of the collection `obj` belongs in."""
    group_version, plural = obj["apiVersion"], KINDS[obj["kind"]]
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    namespace = obj["metadata"].get("namespace")
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


def path_of(obj: dict) -> str:
    return f"{collection(obj)}/{obj['metadata']['name']}"


def binds_broker(obj: dict) -> bool:
    return any(
        s.get("kind") == "ServiceAccount" and s.get("name") == BROKER and s.get("namespace") == SYSTEM_NAMESPACE
        for s in obj.get("subjects") or []
    )


def broker_objects(program) -> tuple[list[dict], dict, dict]:
    """The program's objects the broker's world is made of, in creation order; the broker's own Deployment (for
    its settings); and the GPU runner template the program mounts for the broker."""
    objects = [r.inputs for r in program.resources if r.typ.startswith("kubernetes:")]
    ours = {RUNNER_NAMESPACE, SYSTEM_NAMESPACE}
    bindings = [o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding") and binds_broker(o)]
    bound_roles = {(b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace")) for b in bindings}

    def wanted(obj: dict) -> bool:
        kind, metadata = obj["kind"], obj["metadata"]
        if kind == "Namespace":
            return metadata["name"] in ours
        if kind in ("ClusterRoleBinding", "RoleBinding"):
            return obj in bindings
        if kind in ("ClusterRole", "Role"):
            return (kind, metadata["name"], metadata.get("namespace")) in bound_roles
        if kind == "Deployment":
            return metadata["name"] == BASE_RUNNER and metadata["namespace"] == RUNNER_NAMESPACE
        return kind in KINDS and metadata.get("namespace") in ours

    chosen = sorted((o for o in objects if wanted(o)), key=lambda o: list(KINDS).index(o["kind"]))
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == BROKER]
    (configmap,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == BROKER_TEMPLATE_CONFIGMAP
    ]
    template = json.loads(configmap["data"][TEMPLATE_FILE])
    return chosen, deployment, template


def program_broker_env(deployment: dict) -> dict[str, str]:
    """The broker's settings as the program gives them in its Deployment (its own values only)."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@dataclass
class BrokerWorld:
    kube: Kube
    tmp: Path
    objects: list[dict]
    program_env: dict[str, str]
    template: dict
    github: FakeGitHub = field(init=False)
    runners: GitHubRunners = field(init=False)
    runs: GitHubRuns = field(init=False)
    broker: BrokerProcess | None = field(init=False, default=None)
    brokers: list[BrokerProcess] = field(init=False, default_factory=list)
    handed_out: set[str] = field(init=False, default_factory=set)
    """UIDs of the pods a scenario has been given (`fresh_base_pod`)."""
    tokens: list[str] = field(init=False, default_factory=list)
    """Every token the TokenRequest API gave: none may reach the broker's output."""

    # ------------------------------------------------------------------ set up --

    @classmethod
    def build(cls, kube: Kube, tmp: Path, program) -> BrokerWorld:
        objects, deployment, template = broker_objects(program)
        world = cls(kube, tmp, objects, program_broker_env(deployment), template)
        world._create()
        return world

    def _create(self) -> None:
        for name in (RUNNER_NAMESPACE, SYSTEM_NAMESPACE):  # a reused control plane: an earlier session's
            if self.kube.exists(f"/api/v1/namespaces/{name}"):
                self.kube.delete(f"/api/v1/namespaces/{name}")
            self.wait_namespace_gone(name)
        for obj in self.objects:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding") and self.kube.exists(path_of(obj)):
                self.kube.delete(path_of(obj))
            self.kube.create(collection(obj), obj)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.template_file = self.tmp / TEMPLATE_FILE
        self.template_file.write_text(json.dumps(self.template))
        self.pat_file = self.tmp / "pat"
        self.pat_file.write_text(PAT + "\n")
        self.token_file = self.tmp / "kube-token"
        self.ca_file = Path(
            yaml.safe_load(self.kube.kubeconfig.read_text())["clusters"][0]["cluster"]["certificate-authority"]
        )
        self.github = FakeGitHub().start()
        self.runners = GitHubRunners(self.github, self.program_env["BROKER_REPOSITORY"], tokens={PAT})
        self.runs = GitHubRuns(self.runners)
        self.runners.add("tutorial-runner", ["self-hosted"])  # not the broker's: it must stay

    def broker_token(self) -> str:
        """A token for the broker's own ServiceAccount, for the API server's default audience."""
        token = self.kube.create(
            f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/serviceaccounts/{BROKER}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": BROKER_TOKEN_SECONDS},
            },
        )["status"]["token"]
        self.tokens.append(token)
        return token

    def api_server_audiences(self) -> list[str]:
        """The audiences the API server gives a token by default (its own), as the broker's token carries them."""
        payload = self.token_file.read_text().strip().split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["aud"]

    # ----------------------------------------------------------------- the broker --

    def broker_env(self, **changes: str) -> dict[str, str]:
        return broker_environment(
            {
                **self.program_env,
                "BROKER_LISTEN": "127.0.0.1:0",
                "BROKER_HEALTH_LISTEN": "127.0.0.1:0",
                "BROKER_GPU_RUNNER_TEMPLATE_FILE": str(self.template_file),
                "GITHUB_TOKEN_FILE": str(self.pat_file),
                "GITHUB_API_URL": self.github.url,
                "KUBERNETES_API_URL": f"https://{self.kube.host}:{self.kube.port}",
                "KUBERNETES_TOKEN_FILE": str(self.token_file),
                "KUBERNETES_CA_FILE": str(self.ca_file),
                # Only the sweep scenario sweeps between requests; the final sweep gets the time the program gives it.
                "BROKER_SWEEP_SECONDS": "3600",
                # A GitHub reply a scenario scripts to fail is retried once, at once.
                "BROKER_GITHUB_RETRIES": "1",
                "BROKER_GITHUB_BACKOFF_SECONDS": "0.05",
                **changes,
            }
        )

    def start_broker(self, **changes: str) -> BrokerProcess:
        """A broker process (the one running is stopped first, as a restart would)."""
        self.stop_broker()
        self.token_file.write_text(self.broker_token() + "\n")
        self.broker = BrokerProcess(self.broker_env(**changes)).wait_listening()
        self.brokers.append(self.broker)
        return self.broker

    def stop_broker(self, timeout: float = 60) -> int | None:
        """SIGTERM, and its exit status once it has run its final sweep."""
        if self.broker is None:
            return None
        broker, self.broker = self.broker, None
        return broker.stop(timeout=timeout)

    # ------------------------------------------------------------------- pods --

    def pods(self, namespace: str = RUNNER_NAMESPACE, **labels: str) -> list[dict]:
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        return self.kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"]

    def pod(self, runner: RunnerPod) -> dict | None:
        try:
            return self.kube.get(f"/api/v1/namespaces/{runner.namespace}/pods/{runner.name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def annotations(self, runner: RunnerPod) -> dict[str, str]:
        return dict(((self.pod(runner) or {}).get("metadata") or {}).get("annotations") or {})

    def pod_token(self, namespace: str, name: str, uid: str, audience: str = BROKER_AUDIENCE) -> str:
        """What the kubelet projects into the pod: a token of its ServiceAccount bound to the pod."""
        token = self.kube.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{RUNNER_ACCOUNT}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [audience],
                    "expirationSeconds": POD_TOKEN_SECONDS,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid},
                },
            },
        )["status"]["token"]
        self.tokens.append(token)
        return token

    def runner_pod(self, pod: dict) -> RunnerPod:
        """The pod as its container would call the broker: its name, UID and projected token."""
        metadata = pod["metadata"]
        token = self.pod_token(metadata["namespace"], metadata["name"], metadata["uid"])
        return RunnerPod(metadata["name"], metadata["uid"], token, metadata["namespace"])

    def mark_running(self, pod: dict) -> dict:
        """The kubelet's part, once the scheduler has bound the pod: its container runs."""
        metadata = pod["metadata"]
        return self.kube.patch(
            f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}/status",
            {"status": {"phase": "Running"}},
        )

    def fresh_base_pod(self, timeout: float = 60) -> RunnerPod:
        """A pod the base-runner Deployment's ReplicaSet made, bound to a node, not yet handed to a scenario,
        running; with its token."""

        def candidate() -> dict | None:
            for pod in self.live_base_pods():
                metadata = pod["metadata"]
                if (
                    metadata["uid"] not in self.handed_out
                    and pod["spec"].get("nodeName")
                    and RUNNER_ANNOTATION not in (metadata.get("annotations") or {})
                ):
                    return pod
            return None

        pod = wait_until(candidate, "a fresh base-runner pod, scheduled", timeout_seconds=timeout)
        self.handed_out.add(pod["metadata"]["uid"])
        return self.runner_pod(self.mark_running(pod))

    def gone(self, runner: RunnerPod) -> bool:
        current = self.pod(runner)
        return current is None or current["metadata"]["uid"] != runner.uid

    def runners_path(self, tail: str) -> str:
        """The GitHub API path of the repository's runners, `tail` after it: to script a reply on the double."""
        return runners_api(self.program_env["BROKER_REPOSITORY"], f"/{tail}")

    def runner_names(self) -> set[str]:
        """The runners the GitHub double lists that the broker registered (not the tutorial's)."""
        return {name for name in self.runners.names() if name != "tutorial-runner"}

    def live_base_pods(self) -> list[dict]:
        return [
            p
            for p in self.pods(**{"app.kubernetes.io/name": BASE_RUNNER, PART_OF_LABEL: PART_OF})
            if not p["metadata"].get("deletionTimestamp")
        ]

    def check_no_leaks(self) -> None:
        """No credential (the PAT, the broker's token, a pod's token) in any broker's output, and a JIT config
        only in the 201 that handed it out; every line a log line, no traceback."""
        configs = set(self.runners.jit_configs)
        for broker in self.brokers:
            for line in broker.output.splitlines():
                assert re.match(r"[0-9-]+T[0-9:.]+Z \S", line), line
            for secret in [PAT, *self.tokens, *configs]:
                assert secret not in broker.output, f"a secret ({secret[:12]}...) reached the broker's output"
            for answer in broker.answers:
                handed = (answer.body or {}).get("encodedJitConfig") if isinstance(answer.body, dict) else None
                for secret in [PAT, *self.tokens, *(configs - {handed})]:
                    assert secret not in answer.raw, answer.raw

    # ----------------------------------------------------------------- tear down --

    def namespace_exists(self, name: str) -> bool:
        return self.kube.exists(f"/api/v1/namespaces/{name}")

    def wait_namespace_gone(self, name: str) -> None:
        wait_until(
            lambda: not self.namespace_exists(name),
            f"namespace {name} to be gone (finalized)",
            timeout_seconds=NAMESPACE_GONE_SECONDS,
            interval_seconds=0.5,
        )

    def delete(self, obj: dict) -> None:
        try:
            self.kube.delete(path_of(obj))
        except ApiError as error:
            if error.status != 404:
                raise

    def close(self) -> None:
        """Whatever a scenario left: the broker stopped, the program's objects deleted (the namespaces gone while
        the nodes' kubelet stand-in still finishes their pods), the double stopped."""
        try:
            self.stop_broker()
        finally:
            try:
                for obj in reversed(self.objects):
                    if obj["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
                        self.delete(obj)
                for name in (RUNNER_NAMESPACE, SYSTEM_NAMESPACE):
                    self.wait_namespace_gone(name)
            finally:
                self.github.stop()
