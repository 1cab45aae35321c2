"""The runner broker (broker/runner_broker) against local doubles of Kubernetes and GitHub, in this process
or as a real one.

    with BrokerSetup(tmp_path) as setup:
        broker = setup.start_in_process()        # or setup.start(): `python3 -m runner_broker`
        pod = setup.cluster.base_runner_pod()
        assert broker.jitconfig(pod).status == 201
        setup.check_no_leaks()

Both kinds of broker answer on 127.0.0.1 and keep their log lines (`log_lines`,
`wait_for_log`). `BrokerSetup.check_no_leaks` proves that no credential (PAT, App key,
JWT, installation token, the broker's own token, a pod's token) reached the broker's
output, argv or environment or any answer, that JIT configs appear only in 201 answers,
and that every line the broker wrote is a log line (no traceback). For a running process
as others see it, `BrokerProcess.visible_to_other_processes` reads /proc.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_github import FakeGitHub
from fake_kubernetes import FakeKubernetes, pod, replicaset
from github_runners import GitHubRunners, GitHubRuns, access_tokens_path

ROOT = Path(__file__).resolve().parent.parent
BROKER_PACKAGE = ROOT / "broker"
for path in (ROOT, BROKER_PACKAGE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from runner_contract import (  # noqa: E402
    APP_NAME_LABEL,
    BASE_RUNNER,
    BROKER_AUDIENCE,
    GPU_RUNNER,
    JOB_NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    RUN_ATTEMPT_LABEL,
    RUN_ATTEMPT_PLACEHOLDER,
    RUN_ID_LABEL,
    RUN_ID_PLACEHOLDER,
    RUNNER_ACCOUNT,
)

REPOSITORY = "acme-ml/models"
NAMESPACE = "github-runners"
AUDIENCE = BROKER_AUDIENCE
BASE_DEPLOYMENT = BASE_RUNNER
RUNNER_IMAGE = "europe-docker.pkg.dev/acme/runners/runner@sha256:" + "ab" * 32
# Fake values, with hyphens so no secret scanner takes them for real ones.
PAT = "ghp_FAKE-broker-pat-0001"
ROTATED_PAT = "ghp_FAKE-broker-pat-0002"
BROKER_API_TOKEN = "FAKE-broker-serviceaccount-token-0001"
APP_ID = "424242"
INSTALLATION_ID = "31337"

# Short waits so that failure paths take fractions of a second.
QUICK = {
    "BROKER_GITHUB_RETRIES": "2",
    "BROKER_GITHUB_TIMEOUT_SECONDS": "2",
    "BROKER_GITHUB_BACKOFF_SECONDS": "0.01",
    "BROKER_GITHUB_BACKOFF_MAX_SECONDS": "0.05",
    "BROKER_KUBERNETES_TIMEOUT_SECONDS": "2",
    "BROKER_SWEEP_SECONDS": "3600",
    "BROKER_FINAL_SWEEP_SECONDS": "0",
}


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll `condition` (bounded) until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


def gpu_runner_template(image: str = RUNNER_IMAGE) -> dict:
    """A GPU runner Job template in the shape the program writes for the broker (JSON, placeholders)."""
    labels = {
        APP_NAME_LABEL: GPU_RUNNER,
        PART_OF_LABEL: PART_OF,
        RUN_ID_LABEL: RUN_ID_PLACEHOLDER,
        RUN_ATTEMPT_LABEL: RUN_ATTEMPT_PLACEHOLDER,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{GPU_RUNNER}-{RUN_ID_PLACEHOLDER}-{RUN_ATTEMPT_PLACEHOLDER}",
            "namespace": NAMESPACE,
            "labels": labels,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 14400,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": RUNNER_ACCOUNT,
                    "automountServiceAccountToken": False,
                    "restartPolicy": "Never",
                    "nodeSelector": {"gpu": "true"},
                    "containers": [
                        {
                            "name": "runner",
                            "image": image,
                            "env": [{"name": "GPU_RUN", "value": f"{RUN_ID_PLACEHOLDER}-{RUN_ATTEMPT_PLACEHOLDER}"}],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }


# ------------------------------------------------------------------------ the cluster --


@dataclass(frozen=True)
class RunnerPod:
    name: str
    uid: str
    token: str
    namespace: str = NAMESPACE


class Cluster:
    """Pods as the project's manifests and controllers make them, in a FakeKubernetes, each with its own
    projected token."""

    def __init__(self, kube: FakeKubernetes) -> None:
        self.kube = kube
        self.tokens: list[str] = []
        self._numbers = itertools.count(1)
        self.replicaset = kube.put(
            replicaset(f"{BASE_DEPLOYMENT}-5d8f7c9b4", NAMESPACE, "uid-rs-base", deployment=BASE_DEPLOYMENT)
        )
        self.job_pods: dict[str, RunnerPod] = {}
        """The pod the Job controller stand-in made for each Job, by Job name."""
        self.start_job_pods = False
        """When true, every Job the broker makes gets its pod at once (the Job controller's part)."""
        kube.on_job_created.append(lambda job: self.pod_for_job(job) if self.start_job_pods else None)

    def base_runner_pod(self, **options: Any) -> RunnerPod:
        rs = self.replicaset["metadata"]
        return self.pod_owned_by(("ReplicaSet", rs["name"], rs["uid"]), name_prefix=rs["name"], **options)

    def gpu_job(
        self,
        run_id: str = "4242",
        attempt: int = 1,
        index: int = 0,
        *,
        image: str = RUNNER_IMAGE,
        labels: dict[str, str] | None = None,
        name: str | None = None,
    ) -> dict:
        """A GPU runner Job as the broker makes it from the template (or, with other labels or image, as someone
        else might), stored as an admin would."""
        from runner_broker.template import Template, render

        job = render(Template(gpu_runner_template(image), (image,)), str(run_id), str(attempt), index, NAMESPACE)
        job["metadata"]["uid"] = f"uid-job-{next(self._numbers):04d}"
        job["metadata"]["creationTimestamp"] = "2030-01-01T00:00:00Z"
        job["status"] = {}
        if labels is not None:
            job["metadata"]["labels"] = labels
            job["spec"]["template"]["metadata"]["labels"] = labels
        if name is not None:
            job["metadata"]["name"] = name
        return self.kube.put(job)

    def gpu_runner_pod(self, run_id: str = "4242", attempt: int = 1, **job_options: Any) -> RunnerPod:
        """A GPU runner Job and its pod."""
        pod_options = {key: job_options.pop(key) for key in ("phase", "restarts", "terminating") if key in job_options}
        return self.pod_for_job(self.gpu_job(run_id, attempt, **job_options), **pod_options)

    def pod_for_job(self, job: dict, **options: Any) -> RunnerPod:
        """The Job controller's part: the Job's pod, with the labels of its pod template."""
        metadata = job["metadata"]
        labels = {
            **(job["spec"]["template"]["metadata"].get("labels") or {}),
            JOB_NAME_LABEL: metadata["name"],
            "controller-uid": metadata["uid"],
        }
        image = job["spec"]["template"]["spec"]["containers"][0]["image"]
        runner = self.pod_owned_by(
            ("Job", metadata["name"], metadata["uid"]),
            name_prefix=metadata["name"],
            labels=labels,
            image=image,
            **options,
        )
        self.job_pods[metadata["name"]] = runner
        return runner

    def pod_owned_by(
        self,
        owner: tuple[str, str, str] | None,
        *,
        name_prefix: str = "runner",
        namespace: str = NAMESPACE,
        terminating: bool = False,
        phase: str = "Running",
        restarts: int = 0,
        audiences: tuple[str, ...] = (AUDIENCE,),
        pod_bound: bool = True,
        service_account: str = RUNNER_ACCOUNT,
        labels: dict[str, str] | None = None,
        image: str = RUNNER_IMAGE,
    ) -> RunnerPod:
        number = next(self._numbers)
        name, uid, token = f"{name_prefix}-p{number:04d}", f"uid-pod-{number:04d}", f"FAKE-pod-token-{number:04d}"
        labels = {APP_NAME_LABEL: "runner", PART_OF_LABEL: PART_OF} if labels is None else labels
        self.kube.put(
            pod(
                name,
                namespace,
                uid,
                owner=owner,
                labels=labels,
                phase=phase,
                terminating=terminating,
                restarts=restarts,
                image=image,
            )
        )
        self.kube.add_token(
            token,
            namespace=namespace,
            service_account=service_account,
            audiences=list(audiences),
            pod_name=name if pod_bound else None,
            pod_uid=uid if pod_bound else None,
        )
        self.tokens.append(token)
        return RunnerPod(name, uid, token, namespace)

    def stored(self, runner: RunnerPod) -> dict | None:
        return self.kube.get("Pod", runner.namespace, runner.name)

    def annotations(self, runner: RunnerPod) -> dict[str, str]:
        current = self.stored(runner)
        return dict((current or {}).get("metadata", {}).get("annotations") or {})

    def replace_pod(self, runner: RunnerPod, new_uid: str) -> None:
        """Another pod of the same name, as a StatefulSet or a hand-made pod could bring back."""
        current = self.kube.get("Pod", runner.namespace, runner.name)
        assert current is not None
        current = json.loads(json.dumps(current))
        current["metadata"]["uid"] = new_uid
        self.kube.put(current)

    def delete(self, runner: RunnerPod) -> None:
        self.kube.remove("Pod", runner.namespace, runner.name)


# ------------------------------------------------------------------------- the broker --


@dataclass
class Answer:
    status: int
    body: Any
    raw: str
    headers: dict[str, str] = field(default_factory=dict)


class BrokerClient:
    """HTTP to a broker on 127.0.0.1, and its log lines; shared by the in-process and the real broker."""

    port = 0
    health_port = 0
    stderr: list[str]
    answers: list[Answer]

    def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: bytes | None = b"{}",
        timeout: float = 30,
        port: int | None = None,
        source: str | None = None,
    ) -> Answer:
        connection = http.client.HTTPConnection(
            "127.0.0.1", port or self.port, timeout=timeout, source_address=(source, 0) if source else None
        )
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read().decode()
            answer_headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        answer = Answer(response.status, parsed, raw, answer_headers)
        self.answers.append(answer)
        return answer

    def health(self, timeout: float = 5) -> Answer:
        return self.request("GET", "/healthz", port=self.health_port, timeout=timeout)

    def post(self, path: str, token: str | None = None, body: Any = None, **options: Any) -> Answer:
        return self.request("POST", path, token, json.dumps(body if body is not None else {}).encode(), **options)

    def jitconfig(self, runner: RunnerPod, body: Any = None, **options: Any) -> Answer:
        return self.post("/v1/jitconfig", runner.token, body, **options)

    def finished(self, runner: RunnerPod) -> Answer:
        return self.post("/v1/finished", runner.token)

    def gpu_runners(self, runner: RunnerPod, run_id: Any = "4242", attempt: Any = "1", count: Any = None) -> Answer:
        body = {"runId": run_id, "runAttempt": attempt, **({"count": count} if count is not None else {})}
        return self.post("/v1/gpu-runners", runner.token, body)

    def gpu_runner_state(self, runner: RunnerPod, run_id: str = "4242", attempt: str = "1") -> Answer:
        return self.request("GET", f"/v1/gpu-runners/{run_id}/{attempt}", runner.token, body=None)

    def stop_gpu_runners(self, runner: RunnerPod, run_id: str = "4242", attempt: str = "1") -> Answer:
        return self.request("DELETE", f"/v1/gpu-runners/{run_id}/{attempt}", runner.token, body=None)

    def log_lines(self, *fragments: str) -> list[str]:
        """Log lines holding every fragment."""
        return [line for line in list(self.stderr) if all(f in line for f in fragments)]

    def wait_for_log(self, *fragments: str, timeout: float = 10) -> str:
        return wait_until(lambda: self.log_lines(*fragments), f"a log line with {fragments}", timeout)[0]

    @property
    def output(self) -> str:
        return "\n".join(self.stderr)


class InProcessBroker(BrokerClient):
    """The broker's Service in this process, its log lines collected."""

    def __init__(self, env: dict[str, str]) -> None:
        from runner_broker import logs
        from runner_broker.config import load_config
        from runner_broker.service import Service

        self.env = env
        self.argv: list[str] = []
        self.stderr = []
        self.answers = []
        self._logs = logs
        self._previous_writer = logs.writer
        logs.writer = self.stderr.append
        self.config = load_config(env)
        self.service = Service(self.config, poll_seconds=0.02).start()
        self.port = self.service.api.address.port
        self.health_port = self.service.health.address.port
        self.running = True
        self.remaining: list[str] | None = None

    def stop(self) -> int:
        if self.running:
            self.running = False
            try:
                self.remaining = self.service.stop()
            finally:
                self._logs.writer = self._previous_writer
        return 0


class BrokerProcess(BrokerClient):
    """`python3 -m runner_broker`, its output collected line by line as it comes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.argv = [sys.executable, "-m", "runner_broker"]
        self.env = env
        self.process = subprocess.Popen(
            self.argv,
            env=env,
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr = []
        self.answers = []
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.stdout + self.stderr)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def wait_listening(self, timeout: float = 15) -> BrokerProcess:
        def ports() -> tuple[int, int] | None:
            for line in self.stderr:
                if match := re.search(r"listening on \S+:(\d+) health=\S+:(\d+)", line):
                    return int(match.group(1)), int(match.group(2))
            assert self.running, f"the broker exited with {self.process.returncode}:\n{self.output}"
            return None

        self.port, self.health_port = wait_until(ports, "the broker to listen", timeout)
        return self

    def visible_to_other_processes(self) -> str:
        """The running broker's command line and environment, as /proc shows them to anyone on the node."""
        proc = Path(f"/proc/{self.process.pid}")
        assert self.running and proc.exists(), "needs a running broker and /proc"
        return "\n".join(
            (proc / part).read_bytes().replace(b"\0", b"\n").decode("utf-8", "replace")
            for part in ("cmdline", "environ")
        )

    def memory_kib(self, field_name: str = "VmHWM") -> int:
        """VmHWM (peak resident memory) or VmRSS of the running broker, in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(rf"^{field_name}:\s+(\d+) kB", status, re.M).group(1))

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.running:
            self.process.send_signal(signum)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the broker did not stop within {timeout}s:\n{self.output}") from None
        for reader in self._readers:
            reader.join(timeout=5)
        return self.process.returncode


def broker_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What a broker process needs besides its settings: the package and the contract on PYTHONPATH."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{BROKER_PACKAGE}{os.pathsep}{ROOT}",
        **(extra or {}),
    }


# -------------------------------------------------------------------------- the setup --


def generate_app_key() -> tuple[Any, bytes]:
    """A fresh RSA key for a fake GitHub App, and its PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return key, pem


@dataclass
class BrokerSetup:
    """The doubles, the credential and template files and the broker's environment; `start()` runs a broker."""

    tmp: Path
    app: bool = False
    """A GitHub App rather than a PAT."""
    kube: FakeKubernetes = field(init=False)
    github: FakeGitHub = field(init=False)
    runners: GitHubRunners = field(init=False)
    runs: GitHubRuns = field(init=False)
    cluster: Cluster = field(init=False)
    brokers: list[BrokerClient] = field(init=False, default_factory=list)
    app_keys: list[Any] = field(init=False, default_factory=list)
    secrets: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.kube = FakeKubernetes(api_token=BROKER_API_TOKEN).start()
        self.github = FakeGitHub().start()
        self.runners = GitHubRunners(self.github, REPOSITORY, tokens={PAT})
        self.runs = GitHubRuns(self.runners)
        self.cluster = Cluster(self.kube)
        self.kube_token_file = self.tmp / "kube-token"
        self.kube_token_file.write_text(BROKER_API_TOKEN + "\n")
        self.pat_file = self.tmp / "pat"
        self.key_file = self.tmp / "app-key.pem"
        self.template_file = self.tmp / "gpu-runner-job.json"
        self.template_file.write_text(json.dumps(gpu_runner_template()))
        self.secrets += [PAT, ROTATED_PAT, BROKER_API_TOKEN]
        if self.app:
            self.runners.enable_app(INSTALLATION_ID)
            self.rotate_app_key()
        else:
            self.pat_file.write_text(PAT + "\n")

    def rotate_app_key(self) -> Any:
        """A new App key in the key file, as a rotated Kubernetes Secret would bring; returns the key."""
        key, pem = generate_app_key()
        self.key_file.write_bytes(pem)
        self.app_keys.append(key)
        self.secrets.append(pem.decode())
        # Any one line of the key's body is as secret as the whole.
        self.secrets += [line for line in pem.decode().splitlines()[1:-1] if len(line) > 40]
        return key

    def env(self, **changes: str | None) -> dict[str, str]:
        env = broker_environment(
            {
                "BROKER_REPOSITORY": REPOSITORY,
                "BROKER_RUNNER_NAMESPACE": NAMESPACE,
                "BROKER_AUDIENCE": AUDIENCE,
                "BROKER_LISTEN": "127.0.0.1:0",
                "BROKER_HEALTH_LISTEN": "127.0.0.1:0",
                "BROKER_GPU_RUNNER_TEMPLATE_FILE": str(self.template_file),
                "GITHUB_API_URL": self.github.url,
                "KUBERNETES_API_URL": self.kube.url,
                "KUBERNETES_TOKEN_FILE": str(self.kube_token_file),
                **QUICK,
            }
        )
        if self.app:
            env.update(
                GITHUB_APP_ID=APP_ID,
                GITHUB_APP_INSTALLATION_ID=INSTALLATION_ID,
                GITHUB_APP_PRIVATE_KEY_FILE=str(self.key_file),
            )
        else:
            env["GITHUB_TOKEN_FILE"] = str(self.pat_file)
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def start(self, **changes: str | None) -> BrokerProcess:
        """A real broker process."""
        process = BrokerProcess(self.env(**changes))
        self.brokers.append(process)
        return process.wait_listening()

    def start_in_process(self, **changes: str | None) -> InProcessBroker:
        broker = InProcessBroker(self.env(**changes))
        self.brokers.append(broker)
        return broker

    def run_job(self, runner: RunnerPod, run_id: str = "4242", attempt: str = "1", name: str = "start") -> None:
        """GitHub shows `runner` running job `name` of the run attempt, in progress."""
        self.runs.add_job(run_id, attempt, name, runner_name=runner.name)

    def app_jwts(self) -> list[str]:
        return [
            r.headers["authorization"].split(" ", 1)[1]
            for r in self.github.requests_to(access_tokens_path(INSTALLATION_ID))
        ]

    def all_secrets(self) -> list[str]:
        return [*self.secrets, *self.cluster.tokens, *self.runners.installation_tokens, *self.app_jwts()]

    def assert_no_secret_in(self, text: str, where: str) -> None:
        """No credential, pod token or JIT config, nor any line of an App key, in `text`."""
        for secret in [*self.all_secrets(), *self.runners.jit_configs]:
            assert secret not in text, f"a secret ({secret[:12]}...) reached {where}"

    def check_no_leaks(self) -> None:
        jit_configs = set(self.runners.jit_configs)
        for broker in self.brokers:
            # Every line the broker writes is one of its log lines, never a traceback or a stray print.
            for line in broker.output.splitlines():
                assert re.match(r"([0-9-]+T[0-9:.]+Z \S|broker: configuration: )", line), line
            self.assert_no_secret_in(
                "\n".join([broker.output, *getattr(broker, "argv", []), *getattr(broker, "env", {}).values()]),
                "the broker's output, argv or env",
            )
            for answer in broker.answers:
                if answer.status == 201 and isinstance(answer.body, dict) and "encodedJitConfig" in answer.body:
                    others = jit_configs - {answer.body["encodedJitConfig"]}
                    assert answer.body["encodedJitConfig"] in jit_configs
                    assert not any(other in answer.raw for other in others)
                else:
                    assert not any(config in answer.raw for config in jit_configs), answer.raw
                assert not any(secret in answer.raw for secret in self.all_secrets()), answer.raw

    def close(self) -> None:
        try:
            for broker in self.brokers:
                if broker.running:
                    returncode = broker.stop()
                    assert returncode == 0, f"the broker exited with {returncode} on SIGTERM:\n{broker.output}"
        finally:
            self.kube.stop()
            self.github.stop()

    def __enter__(self) -> BrokerSetup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def slow_client(port: int, *, source: str = "127.0.0.1", header_bytes: int = 0) -> socket.socket:
    """A connection that sends the start of a request (and `header_bytes` of headers) and then nothing."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    connection.sendall(b"POST /v1/jitconfig HTTP/1.1\r\nHost: broker\r\n")
    if header_bytes:
        with contextlib.suppress(OSError):  # the broker has had enough and closed: as it should
            connection.sendall((b"X-Padding: " + b"a" * 8000 + b"\r\n") * (header_bytes // 8013 + 1))
    return connection


class SlowClientAttack:
    """The attack on the broker's availability, from one address: `slow` connections that send a request
    line and headers just within the budget, then nothing; and `flooding` ones that send 64 KiB header lines
    until the broker hangs up."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", slow: int = 64, flooding: int = 64) -> None:
        self.port, self.source = port, source
        self.connections: list[socket.socket] = []
        self.floods: list[threading.Thread] = []
        self.flood_bytes_sent = 0
        self._lock = threading.Lock()
        for _ in range(slow):
            self.connections.append(self._slow())
        for _ in range(flooding):
            thread = threading.Thread(target=self._flood, daemon=True)
            thread.start()
            self.floods.append(thread)

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(self.source, 0))

    def _slow(self) -> socket.socket:
        connection = self._connect()
        with contextlib.suppress(OSError):  # turned away before it had sent it all
            connection.sendall(
                b"POST /v1/jitconfig HTTP/1.1\r\nHost: broker\r\n" + (b"X-Padding: " + b"a" * 7000 + b"\r\n") * 2
            )  # ~14 KiB of 16: within the budget
        return connection

    def _flood(self) -> None:
        line = b"X-Flood: " + b"a" * (64 << 10) + b"\r\n"
        try:
            with self._connect() as connection:
                connection.sendall(b"POST /v1/jitconfig HTTP/1.1\r\n")
                for _ in range(64):  # 4 MiB, if the broker read it all
                    connection.sendall(line)
                    with self._lock:
                        self.flood_bytes_sent += len(line)
        except OSError:
            pass  # the broker hung up: as it should

    def wait_floods(self, timeout: float = 15) -> None:
        for thread in self.floods:
            thread.join(timeout)

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.wait_floods()


# -------------------------------------------------------------------------- benchmark --


def percentile(seconds: list[float], percent: float) -> float:
    ordered = sorted(seconds)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def timed(call: Callable[[], Answer], status: int = 201) -> float:
    started = time.perf_counter()
    answer = call()
    elapsed = time.perf_counter() - started
    assert answer.status == status, answer.raw
    return elapsed


def pod_address(number: int) -> str:
    """A loopback address of its own for pod `number`, as pods have in a cluster (the broker caps per address)."""
    return f"127.0.{1 + number // 250}.{2 + number % 250}"


def benchmark(requests: int = 200, concurrent_pods: int = 50) -> dict:
    """JIT request -> answer latency, in seconds, against the broker's process and the local doubles.

    `requests` sequential requests, each from a pod of its own; then `concurrent_pods`
    other pods asking at once, each from its own address. The doubles answer at once: the
    figures are the broker's own cost plus five local HTTP round trips (review, pod, owner,
    generate, the grant's PATCH).
    """
    with tempfile.TemporaryDirectory() as tmp, BrokerSetup(Path(tmp)) as setup:
        broker = setup.start()
        sequential_pods = [setup.cluster.base_runner_pod() for _ in range(requests)]
        concurrent = [setup.cluster.base_runner_pod() for _ in range(concurrent_pods)]
        sequential = [timed(lambda runner=runner: broker.jitconfig(runner)) for runner in sequential_pods]
        barrier = threading.Barrier(concurrent_pods)

        def ask_together(numbered: tuple[int, RunnerPod]) -> float:
            number, runner = numbered
            barrier.wait()
            return timed(lambda: broker.jitconfig(runner, source=pod_address(number)))

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrent_pods) as pool:
            together = list(pool.map(ask_together, enumerate(concurrent)))
        wall = time.perf_counter() - started
        setup.check_no_leaks()
    return {
        "requests": requests,
        "concurrent_pods": concurrent_pods,
        "sequential_p50_seconds": statistics.median(sequential),
        "sequential_p99_seconds": percentile(sequential, 99),
        "concurrent_p50_seconds": statistics.median(together),
        "concurrent_p99_seconds": percentile(together, 99),
        "concurrent_all_answered_seconds": wall,
    }
