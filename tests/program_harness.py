"""Runs the whole Pulumi program under mocks and records everything it registers.

Tests import what they need from here (`from program_harness import run_program`);
tests/conftest.py turns it into the session fixtures `program`, `every_object` and
`every_scale_set_object`."""

import base64
import hashlib
import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pulumi
from google.protobuf import json_format
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs, Mocks
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
# The project, the broker's package, the shared test doubles and the benchmark's models,
# for tests in any subfolder.
for path in (ROOT, ROOT / "broker", ROOT / "tests", ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from fake_compute import shared_fake_compute  # noqa: E402 - it reads the project's components

SECRET_SIG = rpc._special_secret_sig  # "4dabf18193072939515e22adb298388d"
PROJECT = "gke-gpu-runners"

GITHUB_TOKEN = "test-github-token"
RUNNER_TOKEN = "test-runner-token"
BASE_CONFIG = {
    "gcp:project": "acme-ml",
    "gcp:zone": "us-central1-a",
    f"{PROJECT}:githubRepository": "Acme/Models",
    "github:token": GITHUB_TOKEN,
    f"{PROJECT}:runnerToken": RUNNER_TOKEN,
}
SECRET_KEYS = (
    "github:token",
    f"{PROJECT}:runnerToken",
    f"{PROJECT}:registryToken",
    f"{PROJECT}:registryPullToken",
    f"{PROJECT}:githubAppPrivateKey",
)

FAKE_ENDPOINT = "203.0.113.10"
FAKE_CA_B64 = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n").decode()
FAKE_GCP_ACCESS_TOKEN = "ya29.test-access-token"

# An existing cluster as gcp:container/getCluster answers (existingCluster), in wire names: the
# tutorial's, zonal, with what the runners need. A test overrides keys, or sets "error".
EXISTING_ENDPOINT = "198.51.100.7"
EXISTING_CLUSTER = {
    "name": "mlops-kubernetes",
    "location": "us-central1-a",
    "endpoint": EXISTING_ENDPOINT,
    "masterAuths": [{"clusterCaCertificate": FAKE_CA_B64}],
    "workloadIdentityConfigs": [{"workloadPool": "acme-ml.svc.id.goog"}],
    "datapathProvider": "ADVANCED_DATAPATH",
    "networkPolicies": [],
    "masterVersion": "1.30.3-gke.1969001",
    "enableAutopilot": False,
}


def fake_outputs(args: MockResourceArgs, cluster: dict) -> dict:
    """What the cloud would answer, per resource type, in camelCase wire names."""
    inputs = args.inputs
    if args.typ == "gcp:container/cluster:Cluster":
        if cluster["endpoint"] is None:  # a first preview: GKE has not said yet
            return {}
        return {"endpoint": cluster["endpoint"], "masterAuth": {"clusterCaCertificate": cluster["ca_b64"]}}
    if args.typ == "gcp:serviceaccount/account:Account":
        email = f"{inputs['accountId']}@{inputs['project']}.iam.gserviceaccount.com"
        return {"email": email, "name": f"projects/{inputs['project']}/serviceAccounts/{email}"}
    if args.typ == "docker:index/image:Image":
        repository = inputs["imageName"].rsplit(":", 1)[0]
        return {"repoDigest": f"{repository}@{fake_digest(inputs['imageName'])}"}
    if args.typ == "docker:index/registryImage:RegistryImage":
        # The same image pushed elsewhere keeps its digest: the one its build was given.
        return {"sha256Digest": inputs["triggers"]["digest"].rsplit("@", 1)[1]}
    if args.typ == "gcp:artifactregistry/repository:Repository":
        return {"repositoryId": inputs["repositoryId"], "name": inputs["repositoryId"]}
    if args.typ == "gcp:projects/serviceIdentity:ServiceIdentity":
        email = f"service-123456789012@gcp-sa-{inputs['service'].split('.')[0]}.iam.gserviceaccount.com"
        return {"email": email, "member": f"serviceAccount:{email}"}
    if args.typ == "gcp:iam/workloadIdentityPool:WorkloadIdentityPool":
        return {
            "name": f"projects/123456789012/locations/global/workloadIdentityPools/{inputs['workloadIdentityPoolId']}"
        }
    if args.typ == "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider":
        return {
            "name": f"projects/123456789012/locations/global/workloadIdentityPools/{inputs['workloadIdentityPoolId']}"
            f"/providers/{inputs['workloadIdentityPoolProviderId']}"
        }
    return {}


def fake_digest(image_name: str) -> str:
    return "sha256:" + hashlib.sha256(image_name.encode()).hexdigest()


@dataclass
class Registration:
    """One resource as the program registered it, with the options mocks cannot see."""

    typ: str
    name: str
    inputs: dict
    """Resolved inputs, secrets unwrapped."""
    raw_inputs: dict
    """Inputs as sent, secrets still wrapped in their signature."""
    urn: str
    parent: str
    provider: str
    dependencies: list[str]
    custom_timeouts: Any
    custom: bool
    ignore_changes: list[str]
    delete_before_replace: bool


@dataclass
class Program:
    """What one run of `__main__.py` registered and exported."""

    resources: list[Registration] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    """Stack outputs by name, resolved (None where unknown)."""
    secret_outputs: set = field(default_factory=set)
    """Names of the stack outputs that are Pulumi secrets."""
    calls: list = field(default_factory=list)
    """Invokes, as (token, args, provider reference)."""

    def of_type(self, typ: str) -> list[Registration]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name_contains: str = "") -> Registration:
        found = [r for r in self.of_type(typ) if name_contains in r.name]
        assert len(found) == 1, f"expected one {typ} named *{name_contains}*, got {[r.name for r in found]}"
        return found[0]

    def depends_on(self, resource: Registration, target: Registration) -> bool:
        """Whether `resource` waits for `target`, directly or through others or its provider."""
        seen, todo = set(), [resource.urn]
        while todo:
            urn = todo.pop()
            if urn == target.urn:
                return True
            if urn in seen:
                continue
            seen.add(urn)
            current = next((r for r in self.resources if r.urn == urn), None)
            if current is not None:
                todo.extend(current.dependencies)
                if current.provider:
                    todo.append(current.provider.rsplit("::", 1)[0])
        return False


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == SECRET_SIG


def unwrap_secrets(value: Any) -> Any:
    if is_secret(value):
        return unwrap_secrets(value["value"])
    if isinstance(value, dict):
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def _whole_numbers(value: Any) -> Any:
    """The wire carries every number as a double; give whole ones back as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def wrapped(value: Any) -> Any:
    """Deserialize wire properties keeping secrets in their signature wrapper."""
    return _whole_numbers(json_format.MessageToDict(value)) if value is not None else {}


class RecordingMocks(Mocks):
    def __init__(
        self, cluster: dict, repository: dict, program: "Program", existing_cluster: dict | None = None
    ) -> None:
        self.cluster = cluster
        self.repository = repository
        self.program = program
        self.existing_cluster = {**EXISTING_CLUSTER, **(existing_cluster or {})}

    def new_resource(self, args: MockResourceArgs):
        outputs = {**args.inputs, **fake_outputs(args, self.cluster)}
        return outputs.get("id", f"{args.name}-id"), outputs

    def call(self, args):
        self.program.calls.append((args.token, dict(args.args), args.provider))
        if args.token == "github:index/getRepository:getRepository":
            return {"fullName": args.args.get("fullName"), **self.repository}
        if args.token == "github:index/getUser:getUser":
            return {"id": "9919", "login": args.args.get("username"), "username": args.args.get("username")}
        if args.token == "github:index/getActionsSecrets:getActionsSecrets":
            return {"fullName": args.args.get("fullName"), "secrets": self.repository.get("secrets", [])}
        if args.token == "github:index/getActionsVariables:getActionsVariables":
            return {"fullName": args.args.get("fullName"), "variables": self.repository.get("variables", [])}
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": FAKE_GCP_ACCESS_TOKEN, "project": "acme-ml", "zone": "us-central1-a"}
        if args.token == "gcp:container/getCluster:getCluster":
            if "error" in self.existing_cluster:
                return {}, [("name", self.existing_cluster["error"])]
            return {**self.existing_cluster, "project": args.args.get("project")}
        return {}


class RecordingMonitor(MockMonitor):
    """A MockMonitor that also records what `MockResourceArgs` leaves out."""

    def __init__(self, mocks: Mocks, program: Program) -> None:
        super().__init__(mocks)
        self.program = program

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = wrapped(request.object)
            self.program.resources.append(
                Registration(
                    typ=request.type,
                    name=request.name,
                    inputs=unwrap_secrets(raw),
                    raw_inputs=raw,
                    urn=response.urn,
                    parent=request.parent,
                    provider=request.provider,
                    dependencies=list(request.dependencies),
                    custom_timeouts=request.customTimeouts,
                    custom=request.custom,
                    ignore_changes=list(request.ignoreChanges),
                    delete_before_replace=request.deleteBeforeReplace,
                )
            )
        return response


def run_program(
    config: dict[str, str] | None = None,
    *,
    preview: bool = False,
    cluster: dict | None = None,
    drop: tuple[str, ...] = (),
    on_run: Callable[[Program], None] | None = None,
    plain_text: bool = False,
    repository: dict | None = None,
    existing_cluster: dict | None = None,
) -> Program:
    """Run `__main__.py` once with BASE_CONFIG updated by `config`, minus the `drop` keys.

    The preflight asks a local stand-in of the Compute Engine API (fake_compute), never the real one.
    `existing_cluster` changes what getCluster answers for existingCluster (EXISTING_CLUSTER).
    """
    os.environ["GCP_COMPUTE_API_URL"] = shared_fake_compute().url
    values = {**BASE_CONFIG, **(config or {})}
    for key in drop:
        values.pop(key, None)
    values = {k: v for k, v in values.items() if v is not None}
    pulumi.runtime.set_all_config(values, [] if plain_text else [k for k in SECRET_KEYS if k in values])
    program = Program()
    if on_run:
        on_run(program)
    fake_cluster = {"endpoint": FAKE_ENDPOINT, "ca_b64": FAKE_CA_B64, **(cluster or {})}
    fake_repository = {
        "visibility": "private",
        "private": True,
        "repoId": 424242,
        "defaultBranch": "main",
        **(repository or {}),
    }
    mocks = RecordingMocks(fake_cluster, fake_repository, program, existing_cluster)
    settings.set_root_resource(None)
    pulumi.runtime.set_mocks(
        mocks,
        project=PROJECT,
        stack="test",
        preview=preview,
        organization="acme",
        monitor=RecordingMonitor(mocks, program),
    )
    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(ROOT / "__main__.py"))))
    for name, value in settings.get_root_resource().outputs.items():
        output = pulumi.Output.from_input(value)
        program.outputs[name] = _sync_await(output.future())
        if _sync_await(output.is_secret()):
            program.secret_outputs.add(name)
    return program


SCALE_SET = {f"{PROJECT}:runnerMode": "scale-set"}
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


def kubernetes_objects(program: Program) -> list[dict]:
    """The Kubernetes objects a run registers, secrets unwrapped, for whole-manifest checks; a Helm
    release is none itself, but a scale set's runner pod template goes in as the Pod ARC makes of it."""
    from program.manifests.scale_set import runner_pod

    objects = []
    for resource in program.resources:
        if resource.typ == HELM_RELEASE:
            template = resource.inputs["values"].get("template")
            if template:
                objects.append(runner_pod(template, f"{resource.inputs['name']}-runner", resource.inputs["namespace"]))
        elif resource.typ.startswith("kubernetes:"):
            objects.append(unwrap_secrets(resource.inputs))
    return objects
