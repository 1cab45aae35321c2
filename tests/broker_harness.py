"""The runner broker as a real process on 127.0.0.1, against fakes of Kubernetes and GitHub.

    with BrokerSetup(tmp_path) as setup:
        broker = setup.start()
        pod = setup.cluster.base_runner_pod()
        answer = broker.post("/v1/jitconfig", pod.token)
        assert answer.status == 201
        setup.check_no_leaks()

`BrokerSetup.check_no_leaks` proves that no credential (PAT, App key, JWT,
installation token, the broker's own token, a pod's token) reached the broker's
output, its argv or its environment, that JIT configs appear only in 201 answers, and
that every line the broker wrote is a log line (no traceback). For the running process
as others see it, `BrokerProcess.visible_to_other_processes` reads /proc.

`benchmark()` measures how long a runner pod waits for its JIT config.
"""

from __future__ import annotations

import http.client
import importlib.util
import itertools
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from fake_github import FakeGitHub
from fake_kubernetes import FakeKubernetes, job, pod, replicaset
from github_runners import GitHubRunners, access_tokens_path

ROOT = Path(__file__).resolve().parent.parent
BROKER = ROOT / "runner_image" / "broker.py"

REPOSITORY = "acme-ml/models"
NAMESPACE = "github-runners"
AUDIENCE = "runner-broker.gke-gpu-runners"
BASE_DEPLOYMENT = "base-runner"
RUNNER_ACCOUNT = "github-runner"
PART_OF = {"app.kubernetes.io/part-of": "gke-gpu-runners"}
# Fake values, with hyphens so no secret scanner takes them for real ones.
PAT = "ghp_FAKE-broker-pat-0001"
ROTATED_PAT = "ghp_FAKE-broker-pat-0002"
BROKER_API_TOKEN = "FAKE-broker-serviceaccount-token-0001"
APP_ID = "424242"
INSTALLATION_ID = "31337"

# Short waits so failure paths take fractions of a second.
QUICK = {
    "BROKER_GITHUB_RETRIES": "2",
    "BROKER_GITHUB_TIMEOUT_SECONDS": "2",
    "BROKER_GITHUB_BACKOFF_SECONDS": "0.01",
    "BROKER_GITHUB_BACKOFF_MAX_SECONDS": "0.05",
    "BROKER_KUBERNETES_TIMEOUT_SECONDS": "2",
    "BROKER_SWEEP_SECONDS": "3600",
}


def load_broker_module() -> ModuleType:
    """runner_image/broker.py imported in-process, for unit tests of its pure parts."""
    if "runner_broker" in sys.modules:
        return sys.modules["runner_broker"]
    spec = importlib.util.spec_from_file_location("runner_broker", BROKER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["runner_broker"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ------------------------------------------------------------------------ the cluster --

@dataclass(frozen=True)
class RunnerPod:
    name: str
    uid: str
    token: str
    namespace: str = NAMESPACE


class Cluster:
    """Pods as the project's manifests make them, in a FakeKubernetes, each with its own projected token."""

    def __init__(self, kube: FakeKubernetes) -> None:
        self.kube = kube
        self.tokens: list[str] = []
        self._numbers = itertools.count(1)
        self.replicaset = kube.put(replicaset(f"{BASE_DEPLOYMENT}-5d8f7c9b4", NAMESPACE, "uid-rs-base",
                                              deployment=BASE_DEPLOYMENT))

    def base_runner_pod(self, **options: Any) -> RunnerPod:
        rs = self.replicaset["metadata"]
        return self.pod_owned_by(("ReplicaSet", rs["name"], rs["uid"]), name_prefix=rs["name"], **options)

    def gpu_runner_pod(self, run_id: str = "4242", attempt: int = 1, *, labels: dict[str, str] | None = None,
                       job_name: str | None = None, **options: Any) -> RunnerPod:
        name = job_name or f"gpu-runner-{run_id}-{attempt}"
        job_labels = {"app.kubernetes.io/name": "gpu-runner", "gke-gpu-runners/run-id": run_id,
                      "gke-gpu-runners/run-attempt": str(attempt), **PART_OF} if labels is None else labels
        self.kube.put(job(name, NAMESPACE, f"uid-job-{name}", labels=job_labels))
        return self.pod_owned_by(("Job", name, f"uid-job-{name}"), name_prefix=name, **options)

    def pod_owned_by(self, owner: tuple[str, str, str] | None, *, name_prefix: str = "runner",
                     namespace: str = NAMESPACE, terminating: bool = False, phase: str = "Running",
                     restarts: int = 0, audiences: tuple[str, ...] = (AUDIENCE,), pod_bound: bool = True,
                     service_account: str = RUNNER_ACCOUNT) -> RunnerPod:
        number = next(self._numbers)
        name, uid, token = f"{name_prefix}-p{number:04d}", f"uid-pod-{number:04d}", f"FAKE-pod-token-{number:04d}"
        labels = {"app.kubernetes.io/name": "runner", **PART_OF}
        self.kube.put(pod(name, namespace, uid, owner=owner, labels=labels, phase=phase, terminating=terminating,
                          restarts=restarts))
        self.kube.add_token(token, namespace=namespace, service_account=service_account, audiences=list(audiences),
                            pod_name=name if pod_bound else None, pod_uid=uid if pod_bound else None)
        self.tokens.append(token)
        return RunnerPod(name, uid, token, namespace)

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


class BrokerProcess:
    """`python3 runner_image/broker.py`, its output collected line by line as it comes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.argv = [sys.executable, str(BROKER)]
        self.env = env
        self.process = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.answers: list[Answer] = []
        self._readers = [threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()
        self.port = 0

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

    def wait_listening(self, timeout: float = 10) -> "BrokerProcess":
        def port() -> int:
            for line in self.stderr:
                if match := re.search(r"listening on \S+:(\d+)", line):
                    return int(match.group(1))
            assert self.running, f"the broker exited with {self.process.returncode}:\n{self.output}"
            return 0

        wait_until(port, "the broker to listen", timeout)
        self.port = port()
        return self

    def visible_to_other_processes(self) -> str:
        """The running broker's command line and environment, as /proc shows them to anyone on the node."""
        proc = Path(f"/proc/{self.process.pid}")
        assert self.running and proc.exists(), "needs a running broker and /proc"
        return "\n".join((proc / part).read_bytes().replace(b"\0", b"\n").decode("utf-8", "replace")
                         for part in ("cmdline", "environ"))

    def log_lines(self, *fragments: str) -> list[str]:
        """stderr lines holding every fragment."""
        return [line for line in list(self.stderr) if all(f in line for f in fragments)]

    def wait_for_log(self, *fragments: str, timeout: float = 10) -> str:
        wait_until(lambda: self.log_lines(*fragments), f"a log line with {fragments}", timeout)
        return self.log_lines(*fragments)[0]

    def request(self, method: str, path: str, token: str | None = None, body: bytes | None = b"{}",
                timeout: float = 30) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read().decode()
        finally:
            connection.close()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        answer = Answer(response.status, parsed, raw)
        self.answers.append(answer)
        return answer

    def post(self, path: str, token: str | None = None, body: Any = None) -> Answer:
        return self.request("POST", path, token, json.dumps(body if body is not None else {}).encode())

    def jitconfig(self, runner: RunnerPod, body: Any = None) -> Answer:
        return self.post("/v1/jitconfig", runner.token, body)

    def finished(self, runner: RunnerPod) -> Answer:
        return self.post("/v1/finished", runner.token)

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


# -------------------------------------------------------------------------- the setup --

def generate_app_key() -> tuple[Any, bytes]:
    """A fresh RSA key for a fake GitHub App, and its PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    return key, pem


@dataclass
class BrokerSetup:
    """The fakes, the credential files and the broker's environment; `start()` runs the broker."""

    tmp: Path
    app: bool = False
    """A GitHub App rather than a PAT."""
    kube: FakeKubernetes = field(init=False)
    github: FakeGitHub = field(init=False)
    runners: GitHubRunners = field(init=False)
    cluster: Cluster = field(init=False)
    processes: list[BrokerProcess] = field(init=False, default_factory=list)
    app_keys: list[Any] = field(init=False, default_factory=list)
    secrets: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.kube = FakeKubernetes(api_token=BROKER_API_TOKEN).start()
        self.github = FakeGitHub().start()
        self.runners = GitHubRunners(self.github, REPOSITORY, tokens={PAT})
        self.cluster = Cluster(self.kube)
        self.kube_token_file = self.tmp / "kube-token"
        self.kube_token_file.write_text(BROKER_API_TOKEN + "\n")
        self.pat_file = self.tmp / "pat"
        self.key_file = self.tmp / "app-key.pem"
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
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "BROKER_REPOSITORY": REPOSITORY,
            "BROKER_RUNNER_NAMESPACE": NAMESPACE,
            "BROKER_AUDIENCE": AUDIENCE,
            "BROKER_LISTEN": "127.0.0.1:0",
            "GITHUB_API_URL": self.github.url,
            "KUBERNETES_API_URL": self.kube.url,
            "KUBERNETES_TOKEN_FILE": str(self.kube_token_file),
            **QUICK,
        }
        if self.app:
            env.update(GITHUB_APP_ID=APP_ID, GITHUB_APP_INSTALLATION_ID=INSTALLATION_ID,
                       GITHUB_APP_PRIVATE_KEY_FILE=str(self.key_file))
        else:
            env["GITHUB_TOKEN_FILE"] = str(self.pat_file)
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def start(self, **changes: str | None) -> BrokerProcess:
        process = BrokerProcess(self.env(**changes))
        self.processes.append(process)
        return process.wait_listening()

    def github_calls(self) -> list:
        return self.github.requests

    def app_jwts(self) -> list[str]:
        return [r.headers["authorization"].split(" ", 1)[1]
                for r in self.github.requests_to(access_tokens_path(INSTALLATION_ID))]

    def all_secrets(self) -> list[str]:
        return [*self.secrets, *self.cluster.tokens, *self.runners.installation_tokens, *self.app_jwts()]

    def assert_no_secret_in(self, text: str, where: str) -> None:
        """No credential, pod token or JIT config, nor any line of an App key, in `text`."""
        for secret in [*self.all_secrets(), *self.runners.jit_configs]:
            assert secret not in text, f"a secret ({secret[:12]}...) reached {where}"

    def check_no_leaks(self) -> None:
        jit_configs = set(self.runners.jit_configs)
        for process in self.processes:
            # Every line the broker writes is one of its log lines, never a traceback or a stray print.
            for line in process.stdout + process.stderr:
                assert re.match(r"([0-9-]+T[0-9:.]+Z \S|broker: configuration: )", line), line
            self.assert_no_secret_in("\n".join([process.output, *process.argv, *process.env.values()]),
                                     "the broker's output, argv or env")
            for answer in process.answers:
                if answer.status == 201 and isinstance(answer.body, dict) and "encodedJitConfig" in answer.body:
                    others = jit_configs - {answer.body["encodedJitConfig"]}
                    assert answer.body["encodedJitConfig"] in jit_configs
                    assert not any(other in answer.raw for other in others)
                else:
                    assert not any(config in answer.raw for config in jit_configs), answer.raw
                assert not any(secret in answer.raw for secret in self.all_secrets()), answer.raw

    def close(self) -> None:
        try:
            for process in self.processes:
                if process.running:
                    returncode = process.stop()
                    assert returncode == 0, f"the broker exited with {returncode} on SIGTERM:\n{process.output}"
        finally:
            self.kube.stop()
            self.github.stop()

    def __enter__(self) -> "BrokerSetup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -------------------------------------------------------------------------- benchmark --

def _percentile(seconds: list[float], percent: float) -> float:
    ordered = sorted(seconds)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def _timed_jitconfig(broker: BrokerProcess, runner: RunnerPod) -> float:
    started = time.perf_counter()
    answer = broker.jitconfig(runner)
    elapsed = time.perf_counter() - started
    assert answer.status == 201, answer.raw
    return elapsed


def benchmark(requests: int = 200, concurrent_pods: int = 50) -> dict:
    """JIT request -> answer latency against the local fakes, in seconds.

    `requests` sequential requests, each from a pod of its own; then `concurrent_pods`
    other pods asking at once. The fakes answer at once: the figures are the broker's
    own cost plus four local HTTP round trips (review, pod, owner, generate).
    """
    with tempfile.TemporaryDirectory() as tmp, BrokerSetup(Path(tmp)) as setup:
        broker = setup.start()
        sequential_pods = [setup.cluster.base_runner_pod() for _ in range(requests)]
        concurrent = [setup.cluster.base_runner_pod() for _ in range(concurrent_pods)]
        sequential = [_timed_jitconfig(broker, runner) for runner in sequential_pods]
        barrier = threading.Barrier(concurrent_pods)

        def ask_together(runner: RunnerPod) -> float:
            barrier.wait()
            return _timed_jitconfig(broker, runner)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrent_pods) as pool:
            together = list(pool.map(ask_together, concurrent))
        wall = time.perf_counter() - started
        setup.check_no_leaks()
    return {
        "requests": requests,
        "concurrent_pods": concurrent_pods,
        "sequential_p50_seconds": statistics.median(sequential),
        "sequential_p99_seconds": _percentile(sequential, 99),
        "concurrent_p50_seconds": statistics.median(together),
        "concurrent_p99_seconds": _percentile(together, 99),
        "concurrent_all_answered_seconds": wall,
    }


if __name__ == "__main__":
    print(json.dumps(benchmark(), indent=2))
