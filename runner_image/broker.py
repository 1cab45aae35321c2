#!/usr/bin/env python3
"""The runner broker: the only holder of the GitHub runner credential in the cluster.

A runner pod proves which pod it is with its projected ServiceAccount token. The
broker asks the Kubernetes API whose token that is, reads the pod and its owner,
and decides from those alone which runner the pod may have: its name and labels
never come from the request. It then asks GitHub for a just-in-time (JIT) runner
configuration, the only thing the pod ever gets, and remembers the pod so it never
gets a second one. A background sweep removes runners whose pods are gone.

    GET  /healthz                                            200 {"status": "ok"}
    POST /v1/jitconfig  Authorization: Bearer <pod token>    201 {"name", "labels", "encodedJitConfig"}
    POST /v1/finished   Authorization: Bearer <pod token>    200 {"name", "runnerRemoved", "podDeleted"}

Errors are {"error": "..."}: 401 no, invalid or wrong-audience token; 403 not a runner
pod of the runner namespace; 409 the pod already had a runner; 502 GitHub refused the
credential; 503 GitHub or the Kubernetes API is unavailable.

Configuration is read once from the environment (see `load_config`). Python's
standard library only, but for `cryptography`, imported only to sign a GitHub App's
JWT. Run it as `python3 runner_image/broker.py`.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlsplit

EXIT_CONFIG = 2
USER_AGENT = "gke-gpu-runners-broker"

BASE_RUNNER_LABEL = "base-runner"
GPU_RUNNER_APP = "gpu-runner"
APP_NAME_LABEL = "app.kubernetes.io/name"
RUN_ID_LABEL = "gke-gpu-runners/run-id"
RUN_ID = re.compile(r"^[0-9]{1,20}$")
GPU_RUNNER_NAME = re.compile(r"^gpu-runner-(\d+)-(\d+)$")
RUNNER_POD_SELECTOR = "app.kubernetes.io/part-of=gke-gpu-runners"

# Claims the API server adds to a pod-bound token's review: which pod it was issued to.
POD_NAME_CLAIM = "authentication.kubernetes.io/pod-name"
POD_UID_CLAIM = "authentication.kubernetes.io/pod-uid"

RUNNERS_PER_PAGE = 100
MAX_RUNNER_PAGES = 100  # 10,000 runners: far beyond one repository's, and a bound on a looping API
APP_TOKEN_MARGIN_SECONDS = 300  # an installation token is renewed this long before it expires
MAX_REQUEST_BODY_BYTES = 1 << 20


# --------------------------------------------------------------------------- secrets --

class Secret:
    """A credential or token. Its value leaves only through `reveal()`, never str, repr or format."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled")


# --------------------------------------------------------------------- configuration --

@dataclass(frozen=True)
class PatCredential:
    token_file: Path

    def describe(self) -> str:
        return "the PAT in GITHUB_TOKEN_FILE"


@dataclass(frozen=True)
class AppCredential:
    app_id: str
    installation_id: str
    private_key_file: Path

    def describe(self) -> str:
        return f"GitHub App {self.app_id} (installation {self.installation_id})"


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    """Attempts after the first."""
    timeout_seconds: float
    """Limit of one attempt's every wait on the network."""
    backoff_seconds: float
    """Wait before the first retry, doubled before each next one."""
    backoff_max_seconds: float
    """Cap of any wait, a server's Retry-After included."""

    def wait_seconds(self, retry: int, retry_after_seconds: float | None) -> float:
        wanted = retry_after_seconds if retry_after_seconds is not None else self.backoff_seconds * 2 ** retry
        return max(0.0, min(wanted, self.backoff_max_seconds))


@dataclass(frozen=True)
class Config:
    repository: str
    runner_namespace: str
    audience: str
    listen_host: str
    listen_port: int
    base_runner_deployment: str
    sweep_seconds: float
    spent_check_seconds: float
    """A pod that already had a runner makes the broker look that runner up at most this often."""
    credential: PatCredential | AppCredential
    github_api_url: str
    github_retry: RetryPolicy
    kubernetes_api_url: str
    kubernetes_token_file: Path
    kubernetes_ca_file: Path
    kubernetes_retry: RetryPolicy


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


REPOSITORY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
DNS_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?$")
DIGITS = re.compile(r"^[0-9]{1,20}$")
TOKEN = re.compile(r"^[\x21-\x7e]{1,16384}$")
FILE_PATH = re.compile(r"^[\w./@+-]{1,255}$")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
APP_VARIABLES = ("GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PRIVATE_KEY_FILE")


class _Environment:
    """Reads variables, collecting every problem instead of stopping at the first."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def get(self, name: str) -> str | None:
        value = self.environ.get(name, "").strip()
        return value or None

    def text(self, name: str, pattern: re.Pattern[str], accepted: str, default: str | None = None) -> str:
        value = self.get(name) or default
        if value is None:
            self.problems.append(f"{name} is required: {accepted}")
            return ""
        if not pattern.match(value):
            self.problems.append(f"{name} must be {accepted}, got {value!r}")
        return value

    def number(self, name: str, default: float, *, whole: bool = False, positive: bool = False) -> float:
        raw = self.get(name)
        if raw is None:
            return default
        accepted = "a whole number" if whole else "a number of seconds"
        accepted += " greater than 0" if positive else " from 0"
        try:
            value = int(raw) if whole else float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (positive and value == 0) or value > 86400:
            self.problems.append(f"{name} must be {accepted} (up to 86400), got {raw!r}")
            return default
        return value

    def url(self, name: str, default: str) -> str:
        value = (self.get(name) or default).rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            self.problems.append(f"{name} must be an http(s) URL without query, got {value!r}")
        return value

    def path(self, name: str, default: Path) -> Path:
        return Path(self.get(name) or default)


def load_config(environ: dict[str, str]) -> Config:
    """The broker's settings from `environ`; ConfigError lists every missing or bad variable."""
    env = _Environment(environ)
    repository = env.text("BROKER_REPOSITORY", REPOSITORY, "owner/name of the GitHub repository")
    runner_namespace = env.text("BROKER_RUNNER_NAMESPACE", DNS_LABEL, "a Kubernetes namespace name")
    audience = env.text("BROKER_AUDIENCE", re.compile(r"^\S{1,253}$"), "the audience of runner pods' tokens")
    listen_host, listen_port = _listen_address(env)
    base_runner_deployment = env.text("BROKER_BASE_RUNNER_DEPLOYMENT", DNS_SUBDOMAIN, "a Deployment name",
                                      default="base-runner")
    sweep_seconds = env.number("BROKER_SWEEP_SECONDS", 30.0, positive=True)
    spent_check_seconds = env.number("BROKER_SPENT_CHECK_SECONDS", 10.0)
    credential = _credential(env)
    github_retry = RetryPolicy(
        retries=int(env.number("BROKER_GITHUB_RETRIES", 4, whole=True)),
        timeout_seconds=env.number("BROKER_GITHUB_TIMEOUT_SECONDS", 10.0, positive=True),
        backoff_seconds=env.number("BROKER_GITHUB_BACKOFF_SECONDS", 1.0),
        backoff_max_seconds=env.number("BROKER_GITHUB_BACKOFF_MAX_SECONDS", 10.0),
    )
    # The API server is next door: a few quick retries ride out a blip; a longer
    # outage is the pod's to wait out (it gets a 503 and asks again).
    kubernetes_retry = RetryPolicy(
        retries=2,
        timeout_seconds=env.number("BROKER_KUBERNETES_TIMEOUT_SECONDS", 5.0, positive=True),
        backoff_seconds=0.2,
        backoff_max_seconds=1.0,
    )
    github_api_url = env.url("GITHUB_API_URL", "https://api.github.com")
    kubernetes_api_url = env.url("KUBERNETES_API_URL", _in_cluster_api_url(env))
    kubernetes_token_file = env.path("KUBERNETES_TOKEN_FILE", SERVICE_ACCOUNT_DIR / "token")
    kubernetes_ca_file = env.path("KUBERNETES_CA_FILE", SERVICE_ACCOUNT_DIR / "ca.crt")

    # Files are read again on each use; reading them now turns a typo into a
    # start-up error rather than every pod's.
    files = [("KUBERNETES_TOKEN_FILE", kubernetes_token_file)]
    if urlsplit(kubernetes_api_url).scheme == "https":
        files.append(("KUBERNETES_CA_FILE", kubernetes_ca_file))
    if isinstance(credential, PatCredential):
        files.append(("GITHUB_TOKEN_FILE", credential.token_file))
    if isinstance(credential, AppCredential):
        files.append(("GITHUB_APP_PRIVATE_KEY_FILE", credential.private_key_file))
    problems = env.problems + [problem for name, path in files if (problem := _unreadable(name, path))]
    if problems or credential is None:
        raise ConfigError(problems)
    return Config(
        repository=repository,
        runner_namespace=runner_namespace,
        audience=audience,
        listen_host=listen_host,
        listen_port=listen_port,
        base_runner_deployment=base_runner_deployment,
        sweep_seconds=sweep_seconds,
        spent_check_seconds=spent_check_seconds,
        credential=credential,
        github_api_url=github_api_url,
        github_retry=github_retry,
        kubernetes_api_url=kubernetes_api_url,
        kubernetes_token_file=kubernetes_token_file,
        kubernetes_ca_file=kubernetes_ca_file,
        kubernetes_retry=kubernetes_retry,
    )


def _listen_address(env: _Environment) -> tuple[str, int]:
    raw = env.get("BROKER_LISTEN") or "0.0.0.0:8080"
    host, _, port = raw.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or int(port) > 65535:
        env.problems.append(f"BROKER_LISTEN must be host:port (port 0 picks a free one), got {raw!r}")
        return "0.0.0.0", 8080
    return host, int(port)


def _in_cluster_api_url(env: _Environment) -> str:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if host and port:
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return "https://kubernetes.default.svc"


def _credential(env: _Environment) -> PatCredential | AppCredential | None:
    """A PAT file or a complete GitHub App, exactly one of them; None (with the problem noted) otherwise."""
    token_file = env.get("GITHUB_TOKEN_FILE")
    app_set = [name for name in APP_VARIABLES if env.get(name)]
    if token_file and app_set:
        env.problems.append(f"GITHUB_TOKEN_FILE and {', '.join(app_set)} are both set: "
                            "give either a PAT or a GitHub App, not both")
        return None
    if token_file:
        return PatCredential(Path(token_file))
    if not app_set:
        env.problems.append(f"no runner credential: set GITHUB_TOKEN_FILE (a PAT), or {', '.join(APP_VARIABLES)}")
        return None
    missing = [name for name in APP_VARIABLES if name not in app_set]
    for name in missing:
        env.problems.append(f"{name} is required with {', '.join(app_set)}: a GitHub App needs all of "
                            f"{', '.join(APP_VARIABLES)}")
    app_id = env.text("GITHUB_APP_ID", DIGITS, "the App's numeric ID") if "GITHUB_APP_ID" in app_set else ""
    installation_id = (env.text("GITHUB_APP_INSTALLATION_ID", DIGITS, "the installation's numeric ID")
                       if "GITHUB_APP_INSTALLATION_ID" in app_set else "")
    if missing:
        return None
    return AppCredential(app_id, installation_id, Path(env.get("GITHUB_APP_PRIVATE_KEY_FILE") or ""))


def _unreadable(variable: str, path: Path) -> str | None:
    """Why the file a variable names cannot serve, or None."""
    try:
        if variable == "GITHUB_APP_PRIVATE_KEY_FILE":
            load_rsa_private_key(read_file(path, variable))
        elif variable == "KUBERNETES_CA_FILE":
            read_file(path, variable)
        else:
            read_token(path, variable)
    except CredentialUnreadable as error:
        return str(error)
    return None


# --------------------------------------------------------------------------- logging --

_log_lock = threading.Lock()
_PLAIN_VALUE = re.compile(r"^[\w./:@,+-]+$")


def log(event: str, **fields: object) -> None:
    """One line on stderr: a UTC timestamp, what happened, then key=value pairs.

    Callers pass names, reasons and statuses only; a Secret would print as ***.
    """
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    pairs = [f"{key}={_log_value(value)}" for key, value in fields.items() if value is not None]
    line = " ".join([stamp, event, *pairs])
    with _log_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _log_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(item) for item in value)
    text = str(value)
    return text if _PLAIN_VALUE.match(text) else json.dumps(text)


# ------------------------------------------------------------------------------ HTTP --

@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    """Names lower-cased."""
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


class TransportError(Exception):
    """No HTTP answer at all: refused, reset or timed out."""


def send(method: str, url: str, *, headers: dict[str, str], body: bytes | None, timeout_seconds: float,
         tls: ssl.SSLContext | None) -> HttpAnswer:
    """One HTTP exchange on its own connection."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout_seconds, context=tls)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_seconds)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return HttpAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    except TimeoutError:
        raise TransportError(f"no answer within {timeout_seconds:g}s") from None
    except (OSError, http.client.HTTPException) as error:
        # Only the error's class and the OS's words: never a header, so never a token.
        raise TransportError(f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}") from None
    finally:
        connection.close()


@dataclass(frozen=True)
class Outcome:
    answer: HttpAnswer
    attempts: int
    """1 when the first attempt was answered; more means earlier attempts may have had an effect unseen."""


class RetriesSpent(Exception):
    def __init__(self, attempts: int, last_problem: str) -> None:
        super().__init__(f"{last_problem} (after {attempts} attempts)")


def is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header, in seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def with_retries(attempt: Callable[[], HttpAnswer], policy: RetryPolicy,
                 sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Repeat `attempt` while it fails in a way worth waiting out (5xx, 429, no answer)."""
    last_problem, retry_after = "", None
    for number in range(policy.retries + 1):
        if number:
            sleep(policy.wait_seconds(number - 1, retry_after))
        retry_after = None
        try:
            answer = attempt()
        except TransportError as error:
            last_problem = str(error)
            continue
        if not is_retryable(answer.status):
            return Outcome(answer, number + 1)
        last_problem = f"HTTP {answer.status}"
        retry_after = retry_after_seconds(answer.headers.get("retry-after"))
    raise RetriesSpent(policy.retries + 1, last_problem)


class CredentialUnreadable(Exception):
    """A credential file (PAT, App key, the broker's own token) could not be read."""


def read_file(path: Path, variable: str) -> bytes:
    """A credential file's bytes, read afresh so a rotated Secret takes effect without a restart."""
    try:
        data = path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CredentialUnreadable(f"{variable} ({_shown_path(path)}) cannot be read: {reason}") from None
    if not data.strip():
        raise CredentialUnreadable(f"{variable} ({_shown_path(path)}) is empty")
    return data


def read_token(path: Path, variable: str) -> Secret:
    """A one-line token from a file; anything else would break the Authorization header."""
    token = read_file(path, variable).decode("utf-8", "replace").strip()
    if not TOKEN.match(token):
        raise CredentialUnreadable(f"{variable} ({_shown_path(path)}) does not hold a single-line token")
    return Secret(token)


def _shown_path(path: Path) -> str:
    """The path, unless it looks like something else: a token or key pasted where its file's path belongs."""
    text = str(path)
    return text if "/" in text and FILE_PATH.match(text) else "its value is not a file path, not shown"


# ------------------------------------------------------------------------ Kubernetes --

class KubernetesError(Exception):
    """The Kubernetes API could not be asked, or refused the broker itself."""


class KubernetesClient:
    """The Kubernetes API calls the broker makes, each with the broker's own ServiceAccount token."""

    def __init__(self, config: Config) -> None:
        self._api = config.kubernetes_api_url
        self._namespace = config.runner_namespace
        self._retry = config.kubernetes_retry
        self._token_file = config.kubernetes_token_file
        self._ca_file = config.kubernetes_ca_file
        self._tls_lock = threading.Lock()
        self._tls: tuple[bytes, ssl.SSLContext] | None = None

    def review_token(self, token: Secret, audience: str) -> dict:
        """The TokenReview status of a pod's token, for our audience alone."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "spec": {"token": token.reveal(), "audiences": [audience]}}
        answer = self._call("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review,
                            what="a TokenReview", ok=(200, 201))
        body = answer.json()
        status = body.get("status") if isinstance(body, dict) else None
        return status if isinstance(status, dict) else {}

    def get_pod(self, name: str) -> dict | None:
        return self._get(f"/api/v1/namespaces/{self._ns}/pods/{_segment(name)}", f"pod {name}")

    def get_replicaset(self, name: str) -> dict | None:
        return self._get(f"/apis/apps/v1/namespaces/{self._ns}/replicasets/{_segment(name)}", f"ReplicaSet {name}")

    def get_job(self, name: str) -> dict | None:
        return self._get(f"/apis/batch/v1/namespaces/{self._ns}/jobs/{_segment(name)}", f"Job {name}")

    def list_pods(self, label_selector: str) -> list[dict] | None:
        """The runner pods; None when the broker may no longer see the runner namespace."""
        answer = self._call("GET", f"/api/v1/namespaces/{self._ns}/pods?labelSelector={_segment(label_selector)}",
                            what="the list of runner pods", tolerated=(403, 404))
        if answer.status != 200:
            return None
        body = answer.json()
        items = body.get("items") if isinstance(body, dict) else None
        return [item for item in items or [] if isinstance(item, dict)]

    def delete_pod(self, name: str, uid: str) -> bool:
        """Delete the pod if it is still the one with `uid`; False when it is gone or replaced."""
        answer = self._call("DELETE", f"/api/v1/namespaces/{self._ns}/pods/{_segment(name)}",
                            {"preconditions": {"uid": uid}}, what=f"deleting pod {name}",
                            ok=(200, 202), tolerated=(404, 409))
        return answer.status in (200, 202)

    @property
    def _ns(self) -> str:
        return _segment(self._namespace)

    def _get(self, path: str, what: str) -> dict | None:
        answer = self._call("GET", path, what=f"reading {what}", tolerated=(404,))
        body = answer.json()
        return body if answer.status == 200 and isinstance(body, dict) else None

    def _call(self, method: str, path: str, body: dict | None = None, *, what: str,
              ok: tuple[int, ...] = (200,), tolerated: tuple[int, ...] = ()) -> HttpAnswer:
        payload = json.dumps(body).encode() if body is not None else None

        def attempt() -> HttpAnswer:
            headers = {"Accept": "application/json", "User-Agent": USER_AGENT,
                       "Authorization": f"Bearer {self._own_token().reveal()}"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            return send(method, self._api + path, headers=headers, body=payload,
                        timeout_seconds=self._retry.timeout_seconds, tls=self._tls_context())

        try:
            answer = with_retries(attempt, self._retry).answer
        except RetriesSpent as spent:
            raise KubernetesError(f"the Kubernetes API did not answer {what}: {spent}") from None
        except CredentialUnreadable as error:
            raise KubernetesError(f"cannot ask the Kubernetes API ({what}): {error}") from None
        if answer.status in ok or answer.status in tolerated:
            return answer
        if answer.status in (401, 403):
            raise KubernetesError(f"the Kubernetes API refused {what} (HTTP {answer.status}): the broker's "
                                  "ServiceAccount token is invalid or its Role lacks the permission")
        raise KubernetesError(f"the Kubernetes API answered {what} with HTTP {answer.status}")

    def _own_token(self) -> Secret:
        return read_token(self._token_file, "KUBERNETES_TOKEN_FILE")

    def _tls_context(self) -> ssl.SSLContext | None:
        """The API server's CA, rebuilt only when the CA file's bytes change."""
        if urlsplit(self._api).scheme != "https":
            return None
        ca = read_file(self._ca_file, "KUBERNETES_CA_FILE")
        with self._tls_lock:
            if self._tls is None or self._tls[0] != ca:
                try:
                    context = ssl.create_default_context(cadata=ca.decode("ascii", "replace"))
                except ssl.SSLError:
                    raise CredentialUnreadable(f"KUBERNETES_CA_FILE ({_shown_path(self._ca_file)}) holds no PEM "
                                               "certificate") from None
                self._tls = (ca, context)
            return self._tls[1]


def _segment(value: str) -> str:
    return quote(value, safe="")


# ---------------------------------------------------------------------------- GitHub --

class GitHubRefused(Exception):
    """GitHub answered no for a reason a retry will not change: the credential or its permissions."""


class GitHubUnavailable(Exception):
    """GitHub did not answer usefully within the bounded retries."""


class GitHubConflict(Exception):
    def __init__(self, name: str, earlier_attempt_unanswered: bool) -> None:
        super().__init__(f"GitHub already has a runner named {name}")
        self.earlier_attempt_unanswered = earlier_attempt_unanswered


@dataclass(frozen=True)
class Runner:
    id: int
    name: str
    labels: frozenset[str]
    status: str = ""
    busy: bool = False


@dataclass(frozen=True)
class JitConfig:
    runner_id: int
    encoded: Secret = field(repr=False)


@dataclass(frozen=True)
class _CachedToken:
    key: str
    token: Secret
    renew_at: float


class GitHubClient:
    """The repository's self-hosted runners, as the runner credential (a PAT or an App) sees them."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self._repository = config.repository
        self._runners_path = f"/repos/{config.repository}/actions/runners"
        self._api = config.github_api_url
        self._retry = config.github_retry
        self._credential = config.credential
        self._clock = clock
        self._tls = ssl.create_default_context() if urlsplit(self._api).scheme == "https" else None
        self._app_token_lock = threading.Lock()
        self._app_token: _CachedToken | None = None

    # ------------------------------------------------------------------ runners --

    def list_runners(self) -> list[Runner]:
        runners: list[Runner] = []
        for page in range(1, MAX_RUNNER_PAGES + 1):
            answer = self._call("GET", f"{self._runners_path}?per_page={RUNNERS_PER_PAGE}&page={page}",
                                operation="listing the repository's runners").answer
            body = answer.json()
            body = body if isinstance(body, dict) else {}
            batch = [item for item in body.get("runners") or [] if isinstance(item, dict)]
            runners.extend(runner for runner in map(_runner, batch) if runner is not None)
            total = body.get("total_count")
            if len(batch) < RUNNERS_PER_PAGE or (isinstance(total, int) and page * RUNNERS_PER_PAGE >= total):
                break
        return runners

    def find_runner(self, name: str) -> Runner | None:
        return next((runner for runner in self.list_runners() if runner.name == name), None)

    def generate_jit_config(self, name: str, labels: tuple[str, ...]) -> JitConfig:
        request = {"name": name, "runner_group_id": 1, "labels": list(labels), "work_folder": "_work"}
        outcome = self._call("POST", f"{self._runners_path}/generate-jitconfig", request,
                             operation=f"generating a JIT config for runner {name}", tolerated=(409,))
        if outcome.answer.status == 409:
            raise GitHubConflict(name, earlier_attempt_unanswered=outcome.attempts > 1)
        body = outcome.answer.json()
        encoded = body.get("encoded_jit_config") if isinstance(body, dict) else None
        runner = body.get("runner") if isinstance(body, dict) else None
        if not isinstance(encoded, str) or not encoded or not isinstance(runner, dict):
            raise GitHubUnavailable(f"GitHub answered generate-jitconfig for {name} without a runner and its "
                                    "encoded_jit_config")
        runner_id = runner.get("id")
        return JitConfig(runner_id if isinstance(runner_id, int) else 0, Secret(encoded))

    def delete_runner(self, runner_id: int) -> bool:
        """Remove a runner; False when GitHub no longer had it."""
        outcome = self._call("DELETE", f"{self._runners_path}/{runner_id}",
                             operation=f"removing runner {runner_id}", tolerated=(404,))
        return outcome.answer.status != 404

    # -------------------------------------------------------------- credential --

    def _bearer(self) -> Secret:
        if isinstance(self._credential, PatCredential):
            return read_token(self._credential.token_file, "GITHUB_TOKEN_FILE")
        return self._installation_token(self._credential)

    def _installation_token(self, app: AppCredential) -> Secret:
        """The App installation's token, cached until shortly before it expires or the key changes."""
        key_pem = read_file(app.private_key_file, "GITHUB_APP_PRIVATE_KEY_FILE")
        cache_key = hashlib.sha256(b"\0".join([app.app_id.encode(), app.installation_id.encode(), key_pem])).hexdigest()
        # One lock: fifty pods arriving at once cause one token request, not fifty.
        with self._app_token_lock:
            cached = self._app_token
            if cached is not None and cached.key == cache_key and self._clock() < cached.renew_at:
                return cached.token
            token, expires_at = self._new_installation_token(app, key_pem)
            self._app_token = _CachedToken(cache_key, token, expires_at - APP_TOKEN_MARGIN_SECONDS)
            return token

    def _forget_installation_token(self) -> None:
        with self._app_token_lock:
            self._app_token = None

    def _new_installation_token(self, app: AppCredential, key_pem: bytes) -> tuple[Secret, float]:
        jwt = app_jwt(app.app_id, key_pem, now=int(self._clock()))
        path = f"/app/installations/{app.installation_id}/access_tokens"
        what = f"an installation token for {app.describe()}"
        try:
            answer = with_retries(lambda: self._send("POST", path, None, jwt), self._retry).answer
        except RetriesSpent as spent:
            raise GitHubUnavailable(f"GitHub did not answer a request for {what}: {spent}") from None
        if answer.status == 201:
            body = answer.json()
            token = body.get("token") if isinstance(body, dict) else None
            if isinstance(token, str) and token:
                return Secret(token), _expiry(body.get("expires_at"), self._clock())
            raise GitHubUnavailable(f"GitHub answered the request for {what} without a token")
        raise GitHubRefused(self._app_refusal(app, answer.status))

    def _app_refusal(self, app: AppCredential, status: int) -> str:
        if status == 401:
            return (f"GitHub refused the JWT of GitHub App {app.app_id} (HTTP 401): GITHUB_APP_ID or the key in "
                    "GITHUB_APP_PRIVATE_KEY_FILE is wrong, or the key was revoked")
        if status == 404:
            return (f"installation {app.installation_id} of GitHub App {app.app_id} does not exist (HTTP 404): check "
                    f"GITHUB_APP_INSTALLATION_ID and that the App is installed on {self._repository}")
        if status == 403:
            return (f"GitHub App {app.app_id} may not get a token for installation {app.installation_id} (HTTP 403): "
                    "the installation may be suspended, or the rate limit is spent")
        return f"GitHub refused a token for {app.describe()} (HTTP {status})"

    # ------------------------------------------------------------------ plumbing --

    def _send(self, method: str, path: str, payload: bytes | None, bearer: Secret) -> HttpAnswer:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": USER_AGENT, "Authorization": f"Bearer {bearer.reveal()}"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        return send(method, self._api + path, headers=headers, body=payload,
                    timeout_seconds=self._retry.timeout_seconds, tls=self._tls)

    def _call(self, method: str, path: str, body: dict | None = None, *, operation: str,
              tolerated: tuple[int, ...] = ()) -> Outcome:
        payload = json.dumps(body).encode() if body is not None else None
        try:
            outcome = with_retries(lambda: self._send(method, path, payload, self._bearer()), self._retry)
        except RetriesSpent as spent:
            raise GitHubUnavailable(f"GitHub did not answer {operation}: {spent}") from None
        status = outcome.answer.status
        if 200 <= status < 300 or status in tolerated:
            return outcome
        if status == 401 and isinstance(self._credential, AppCredential):
            self._forget_installation_token()  # revoked early: the next request fetches a new one
        raise GitHubRefused(self._refusal(operation, outcome.answer))

    def _refusal(self, operation: str, answer: HttpAnswer) -> str:
        credential = self._credential.describe()
        prefix = f"GitHub refused {operation} (HTTP {answer.status})"
        if answer.status == 401:
            return f"{prefix}: the runner credential (PAT or App), {credential}, is invalid, expired or revoked"
        if answer.status == 403:
            spent = " (it is: no requests left this hour)" if answer.headers.get("x-ratelimit-remaining") == "0" else ""
            return (f"{prefix}: the credential, {credential}, lacks Administration: read and write on "
                    f"{self._repository} (classic PAT: repo scope; App: administration write), or its rate limit "
                    f"is spent{spent}")
        if answer.status == 404:
            return f"{prefix}: {self._repository} does not exist or the credential, {credential}, cannot see it"
        body = answer.json()
        message = body.get("message") if isinstance(body, dict) else None
        return f"{prefix}: {str(message)[:200]}" if message else prefix


def _runner(item: dict) -> Runner | None:
    if not isinstance(item.get("id"), int) or not isinstance(item.get("name"), str):
        return None
    labels = frozenset(label.get("name") for label in item.get("labels") or []
                       if isinstance(label, dict) and isinstance(label.get("name"), str))
    return Runner(item["id"], item["name"], labels, str(item.get("status") or ""), bool(item.get("busy")))


def _expiry(expires_at: object, now: float) -> float:
    """When an installation token expires; an unreadable answer is taken as GitHub's usual hour."""
    try:
        return datetime.fromisoformat(str(expires_at).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return now + 3600


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_rsa_private_key(pem: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise CredentialUnreadable("a GitHub App needs the Python package cryptography, which is not installed") \
            from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialUnreadable("GITHUB_APP_PRIVATE_KEY_FILE does not hold an unencrypted PEM RSA private key")
    return key


def app_jwt(app_id: str, private_key_pem: bytes, now: int) -> Secret:
    """The App's own RS256 JWT, valid for nine minutes (GitHub allows ten), a minute back for clock skew."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = load_rsa_private_key(private_key_pem)
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64url(json.dumps({"iat": now - 60, "exp": now + 540, "iss": app_id}, separators=(",", ":")).encode())
    signing_input = f"{header}.{claims}".encode("ascii")
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return Secret(f"{header}.{claims}.{_b64url(signature)}")


# ------------------------------------------------------------------------- decisions --
# Pure functions: reviewed identity, pod and owner in; a grant or a refusal out.

@dataclass(frozen=True)
class PodIdentity:
    """Who a token belongs to, as the TokenReview says."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str


@dataclass(frozen=True)
class Grant:
    name: str
    labels: tuple[str, ...]
    kind: str
    """"base" (a pod of the base-runner Deployment) or "gpu" (the pod of a GPU runner Job)."""


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


def identity_from_review(status: dict, audience: str) -> PodIdentity | Refusal:
    """The pod a TokenReview status vouches for, or why the token proves nothing (401)."""
    if status.get("authenticated") is not True:
        error = str(status.get("error") or "")[:200]
        return Refusal(401, "the token is invalid, expired or not for this audience" + (f" ({error})" if error else ""))
    if audience not in (status.get("audiences") or []):
        return Refusal(401, f"the token is not for audience {audience}")
    user = status.get("user") if isinstance(status.get("user"), dict) else {}
    parts = str(user.get("username") or "").split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        return Refusal(401, "the token is not a ServiceAccount's")
    extra = user.get("extra") if isinstance(user.get("extra"), dict) else {}
    pod_name, pod_uid = _first(extra.get(POD_NAME_CLAIM)), _first(extra.get(POD_UID_CLAIM))
    if not pod_name or not pod_uid:
        return Refusal(401, "the token is not bound to a pod (no pod name and UID in its review)")
    return PodIdentity(namespace=parts[2], service_account=parts[3], pod_name=pod_name, pod_uid=pod_uid)


def _first(values: object) -> str:
    return values[0] if isinstance(values, list) and values and isinstance(values[0], str) else ""


def controller_reference(obj: dict | None) -> dict | None:
    """The ownerReference marked controller, the one owner Kubernetes itself acts on."""
    references = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in references if isinstance(ref, dict) and ref.get("controller") is True), None)


def decide_runner(identity: PodIdentity, pod: dict | None, owner: dict | None, *, runner_namespace: str,
                  base_runner_deployment: str, allow_terminating: bool = False) -> Grant | Refusal:
    """Which runner the pod `identity` names may have, from the pod and its controller alone.

    `pod` is the pod as read from the runner namespace (None when absent); `owner` its
    controller (a ReplicaSet or a Job) as read likewise, None when absent or of another kind.
    """
    where = f"pod {identity.namespace}/{identity.pod_name}"
    if identity.namespace != runner_namespace:
        return Refusal(403, f"{where} is not in the runner namespace {runner_namespace}")
    if pod is None:
        return Refusal(403, f"{where} does not exist")
    metadata = pod.get("metadata") or {}
    if metadata.get("uid") != identity.pod_uid:
        return Refusal(403, f"{where} has UID {metadata.get('uid')}, not the token's {identity.pod_uid}: "
                            "the token belongs to an earlier pod of that name")
    if metadata.get("deletionTimestamp") and not allow_terminating:
        return Refusal(403, f"{where} is terminating")
    reference = controller_reference(pod)
    if reference is None:
        return Refusal(403, f"{where} has no controller: a bare pod is not a runner")
    kind, name = reference.get("kind"), str(reference.get("name") or "")
    if owner is not None and (owner.get("metadata") or {}).get("uid") != reference.get("uid"):
        return Refusal(403, f"{where}'s {kind} {name} has been replaced (its UID differs from the pod's reference)")
    if kind == "ReplicaSet":
        return _base_runner(where, identity.pod_name, name, owner, base_runner_deployment)
    if kind == "Job":
        return _gpu_runner(where, name, owner)
    return Refusal(403, f"{where} is controlled by {kind} {name}, neither a ReplicaSet of Deployment "
                        f"{base_runner_deployment} nor a {GPU_RUNNER_APP} Job")


def _base_runner(where: str, pod_name: str, replicaset: str, owner: dict | None, deployment: str) -> Grant | Refusal:
    if owner is None:
        return Refusal(403, f"{where}'s ReplicaSet {replicaset} does not exist")
    reference = controller_reference(owner) or {}
    if reference.get("kind") != "Deployment" or reference.get("name") != deployment:
        controller = f"{reference.get('kind')} {reference.get('name')}" if reference else "nothing"
        return Refusal(403, f"{where}'s ReplicaSet {replicaset} belongs to {controller}, not Deployment {deployment}")
    if not pod_name.startswith(f"{deployment}-"):
        # The sweep recognises base runners by this prefix; a runner it could not see would never be removed.
        return Refusal(403, f"{where} is not named {deployment}-*, as the Deployment's pods are")
    return Grant(pod_name, (BASE_RUNNER_LABEL,), "base")


def _gpu_runner(where: str, job_name: str, owner: dict | None) -> Grant | Refusal:
    if owner is None:
        return Refusal(403, f"{where}'s Job {job_name} does not exist")
    labels = (owner.get("metadata") or {}).get("labels") or {}
    if labels.get(APP_NAME_LABEL) != GPU_RUNNER_APP:
        return Refusal(403, f"{where}'s Job {job_name} is not labelled {APP_NAME_LABEL}={GPU_RUNNER_APP}")
    run_id = str(labels.get(RUN_ID_LABEL) or "")
    if not RUN_ID.match(run_id):
        return Refusal(403, f"{where}'s Job {job_name} has no numeric {RUN_ID_LABEL} label (got {run_id!r})")
    match = GPU_RUNNER_NAME.match(job_name)
    if match is None or match.group(1) != run_id:
        # The sweep recognises GPU runners by this name; a runner it could not see would never be removed.
        return Refusal(403, f"{where}'s Job is named {job_name}, not {GPU_RUNNER_APP}-{run_id}-<attempt>")
    return Grant(job_name, (f"gpu-runner-{run_id}",), "gpu")


def is_ours(runner: Runner, base_runner_deployment: str) -> bool:
    """Whether the broker registered this runner: its name and label say so together."""
    if runner.name.startswith(f"{base_runner_deployment}-") and BASE_RUNNER_LABEL in runner.labels:
        return True
    match = GPU_RUNNER_NAME.match(runner.name)
    return match is not None and f"gpu-runner-{match.group(1)}" in runner.labels


def live_runner_names(pods: list[dict]) -> set[str]:
    """The runner names pods still running could hold: a base pod's own name, a GPU pod's Job's."""
    names = set()
    for pod in pods:
        metadata = pod.get("metadata") or {}
        if metadata.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        reference = controller_reference(pod) or {}
        if reference.get("kind") == "ReplicaSet" and metadata.get("name"):
            names.add(metadata["name"])
        elif reference.get("kind") == "Job" and reference.get("name"):
            names.add(reference["name"])
    return names


def runners_to_remove(runners: list[Runner], pods: list[dict], base_runner_deployment: str) -> list[Runner]:
    live = live_runner_names(pods)
    return [runner for runner in runners if is_ours(runner, base_runner_deployment) and runner.name not in live]


# ---------------------------------------------------------------------- pod records --

@dataclass
class PodRecord:
    """A pod that has had its runner (or said it ended): it never gets another."""

    runner_name: str
    kind: str
    checked_at: float
    """time.monotonic() when GitHub was last asked about its runner."""
    finished: bool = False


@dataclass
class _PodEntry:
    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    record: PodRecord | None = None


class PodLedger:
    """Which pods had a runner, by pod UID, with one lock per pod.

    One pod's requests queue behind each other, so fifty at once yield one grant;
    other pods' requests go on meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[str, _PodEntry] = {}

    @contextmanager
    def holding(self, uid: str, pod_name: str) -> Iterator[_PodEntry]:
        with self._lock:
            entry = self._pods.setdefault(uid, _PodEntry(pod_name))
        with entry.lock:
            yield entry

    def known_pods(self) -> dict[str, str]:
        """Pod name by UID, of every pod the broker holds anything for."""
        with self._lock:
            return {uid: entry.name for uid, entry in self._pods.items()}

    def forget(self, uid: str) -> None:
        with self._lock:
            self._pods.pop(uid, None)


# ---------------------------------------------------------------------------- broker --

class Refused(Exception):
    """A decision not to serve the request: the status and reason go to the pod and the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Authorized:
    identity: PodIdentity
    pod: dict
    grant: Grant

    @property
    def terminating(self) -> bool:
        return bool((self.pod.get("metadata") or {}).get("deletionTimestamp"))


INFRASTRUCTURE_ERRORS = (GitHubRefused, GitHubUnavailable, KubernetesError, CredentialUnreadable)


class Broker:
    """Hands each runner pod one JIT runner, removes runners that ended, sweeps up after pods that are gone."""

    def __init__(self, config: Config, kubernetes: KubernetesClient, github: GitHubClient,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.kubernetes = kubernetes
        self.github = github
        self.ledger = PodLedger()
        self._monotonic = monotonic

    # ------------------------------------------------------------------ requests --

    def issue_jit_config(self, token: Secret | None) -> dict:
        seen: dict[str, object] = {}
        try:
            who = self._authorize(token, seen, allow_terminating=False)
            with self.ledger.holding(who.identity.pod_uid, who.identity.pod_name) as entry:
                if entry.record is not None:
                    self._refuse_again(who, entry.record)
                jit = self._register(who, entry)
        except Refused as refusal:
            log("jitconfig", decision="refused", status=refusal.status, **seen, reason=refusal.reason)
            raise
        except INFRASTRUCTURE_ERRORS as error:
            log("jitconfig", decision="failed", **seen, reason=str(error))
            raise
        log("jitconfig", decision="granted", status=201, **seen, labels=who.grant.labels, runner_id=jit.runner_id,
            reason=f"{who.grant.kind} runner pod")
        return {"name": who.grant.name, "labels": list(who.grant.labels), "encodedJitConfig": jit.encoded.reveal()}

    def finish(self, token: Secret | None) -> dict:
        seen: dict[str, object] = {}
        try:
            who = self._authorize(token, seen, allow_terminating=True)
            with self.ledger.holding(who.identity.pod_uid, who.identity.pod_name) as entry:
                removed, deleted = self._wind_up(who, entry)
        except Refused as refusal:
            log("finished", decision="refused", status=refusal.status, **seen, reason=refusal.reason)
            raise
        except INFRASTRUCTURE_ERRORS as error:
            log("finished", decision="failed", **seen, reason=str(error))
            raise
        log("finished", decision="done", status=200, **seen, runner_removed=removed, pod_deleted=deleted,
            reason="the pod says its runner has ended")
        return {"name": who.grant.name, "runnerRemoved": removed, "podDeleted": deleted}

    def _authorize(self, token: Secret | None, seen: dict[str, object], *, allow_terminating: bool) -> Authorized:
        """Who is asking, from the token's review, the pod and its owner; never from the request."""
        if token is None:
            raise Refused(401, "no bearer token")
        review = self.kubernetes.review_token(token, self.config.audience)
        identity = identity_from_review(review, self.config.audience)
        if isinstance(identity, Refusal):
            raise Refused(identity.status, identity.reason)
        seen.update(pod=identity.pod_name, namespace=identity.namespace)
        # Only pods of our own namespace are read; any other is refused unread.
        in_namespace = identity.namespace == self.config.runner_namespace
        pod = self.kubernetes.get_pod(identity.pod_name) if in_namespace else None
        owner = self._controller_of(pod)
        decision = decide_runner(identity, pod, owner, runner_namespace=self.config.runner_namespace,
                                 base_runner_deployment=self.config.base_runner_deployment,
                                 allow_terminating=allow_terminating)
        if isinstance(decision, Refusal):
            raise Refused(decision.status, decision.reason)
        seen["runner"] = decision.name
        return Authorized(identity, pod or {}, decision)

    def _controller_of(self, pod: dict | None) -> dict | None:
        reference = controller_reference(pod)
        name = str((reference or {}).get("name") or "")
        if not name:
            return None
        if reference["kind"] == "ReplicaSet":
            return self.kubernetes.get_replicaset(name)
        if reference["kind"] == "Job":
            return self.kubernetes.get_job(name)
        return None

    def _register(self, who: Authorized, entry: _PodEntry) -> JitConfig:
        """A new JIT runner for a pod that never had one. Runs holding the pod's lock."""
        grant = who.grant
        # A runner of this name already there means this pod (or its Job) had one
        # before the broker last started: the record in memory is gone, GitHub's is not.
        existing = self.github.find_runner(grant.name)
        jit = None
        if existing is None:
            try:
                jit = self._generate(grant)
            except GitHubConflict:
                pass
        entry.record = PodRecord(grant.name, grant.kind, self._monotonic())
        if jit is None:
            raise Refused(409, f"GitHub already has a runner named {grant.name}: this pod already had its runner")
        return jit

    def _generate(self, grant: Grant) -> JitConfig:
        try:
            return self.github.generate_jit_config(grant.name, grant.labels)
        except GitHubConflict as conflict:
            if not conflict.earlier_attempt_unanswered:
                raise
        # An earlier attempt whose answer was lost registered the runner: the name was
        # free just before, and only this broker, holding this pod's lock, uses it. Its
        # JIT config is gone with the answer, so the runner could never start; replace it.
        stale = self.github.find_runner(grant.name)
        if stale is not None:
            self.github.delete_runner(stale.id)
            log("jitconfig", decision="replaced", runner=grant.name, runner_id=stale.id,
                reason="an earlier attempt registered the runner but its answer was lost")
        return self.github.generate_jit_config(grant.name, grant.labels)

    def _refuse_again(self, who: Authorized, record: PodRecord) -> None:
        """A pod asking again. A base pod whose runner has ended is spent: delete it so its ReplicaSet replaces it."""
        already = f"this pod already had its runner, {record.runner_name}"
        now = self._monotonic()
        if record.finished or who.grant.kind != "base" or now - record.checked_at < self.config.spent_check_seconds:
            raise Refused(409, already)
        # Throttled above: a pod hammering the broker must not spend the credential's rate limit.
        record.checked_at = now
        try:
            if self.github.find_runner(record.runner_name) is not None:
                raise Refused(409, f"{already}, still registered")
            deleted = self.kubernetes.delete_pod(who.identity.pod_name, who.identity.pod_uid)
        except INFRASTRUCTURE_ERRORS as error:
            raise Refused(409, f"{already} (whether it has ended is unknown: {error})") from None
        outcome = "deleted it so its ReplicaSet starts a fresh one" if deleted else "it was already gone"
        raise Refused(409, f"{already}, which has ended: the pod is spent, {outcome}")

    def _wind_up(self, who: Authorized, entry: _PodEntry) -> tuple[bool, bool]:
        """Remove the pod's runner from GitHub and, for a base runner, the pod. Runs holding the pod's lock."""
        grant = who.grant
        if entry.record is not None and entry.record.finished:
            return False, False  # said so before; another pod of the same Job may hold the name by now
        github_error: Exception | None = None
        removed = False
        try:
            runner = self.github.find_runner(grant.name)
            removed = runner is not None and self.github.delete_runner(runner.id)
        except (GitHubRefused, GitHubUnavailable, CredentialUnreadable) as error:
            github_error = error
        deleted = False
        if grant.kind == "base" and not who.terminating:
            # Even when GitHub failed: a fresh pod should not wait on it, and once this
            # one is gone the sweep removes its runner.
            deleted = self.kubernetes.delete_pod(who.identity.pod_name, who.identity.pod_uid)
        if github_error is not None:
            aftermath = "; the pod was deleted, the sweep removes its runner" if deleted else ""
            raise type(github_error)(f"{github_error}{aftermath}") from None
        entry.record = PodRecord(grant.name, grant.kind, self._monotonic(), finished=True)
        return removed, deleted

    # --------------------------------------------------------------------- sweep --

    def sweep(self, *, final: bool = False) -> None:
        """Remove from GitHub every runner of ours whose pod is gone.

        GitHub is read before the pods: a runner registered in between then belongs to a
        pod already in the list, so it is never taken for one whose pod has gone.

        `pulumi destroy` deletes the runner namespace, and the broker's Role in it, before
        the broker: on the way out (`final`), a namespace the broker may no longer see
        holds no pod of ours, and every runner of ours goes.
        """
        runners = self.github.list_runners()
        pods = self.kubernetes.list_pods(RUNNER_POD_SELECTOR)
        if pods is None:
            if not final:
                raise KubernetesError("the Kubernetes API refused the list of runner pods: the broker's Role in "
                                      f"{self.config.runner_namespace} is missing, or the namespace is gone")
            log("sweep", decision="namespace-gone", namespace=self.config.runner_namespace,
                reason="the runner namespace is gone or closed to the broker: no runner of ours has a pod")
            pods = []
        for runner in runners_to_remove(runners, pods, self.config.base_runner_deployment):
            try:
                self.github.delete_runner(runner.id)
            except INFRASTRUCTURE_ERRORS as error:
                log("sweep", decision="failed", runner=runner.name, runner_id=runner.id, reason=str(error))
                continue
            log("sweep", decision="removed", runner=runner.name, runner_id=runner.id,
                reason="no live pod holds this runner")
        if not final:
            self._forget_gone_pods(pods)

    def sweep_safely(self, when: str = "periodic") -> None:
        try:
            self.sweep(final=when == "final")
        except INFRASTRUCTURE_ERRORS as error:
            log("sweep", decision="failed", when=when, reason=f"{error}; trying again next round")

    def _forget_gone_pods(self, listed: list[dict]) -> None:
        """Drop records of pods that no longer exist: a deleted pod's token is dead, it cannot ask again."""
        listed_uids = {(pod.get("metadata") or {}).get("uid") for pod in listed}
        for uid, name in self.ledger.known_pods().items():
            if uid in listed_uids:
                continue
            pod = self.kubernetes.get_pod(name)
            if pod is None or (pod.get("metadata") or {}).get("uid") != uid:
                self.ledger.forget(uid)


# ------------------------------------------------------------------------ HTTP server --

def bearer_token(header: str | None) -> Secret | None:
    scheme, _, value = (header or "").strip().partition(" ")
    return Secret(value.strip()) if scheme.lower() == "bearer" and value.strip() else None


def status_for(error: Exception) -> int:
    """The HTTP status of a failed request: the only place errors become statuses."""
    if isinstance(error, Refused):
        return error.status
    if isinstance(error, GitHubRefused):
        return 502
    if isinstance(error, (GitHubUnavailable, KubernetesError, CredentialUnreadable)):
        return 503
    return 500


def log_unexpected(path: str, error: Exception) -> None:
    """A bug: its class and line only, since an unexpected exception's text is not vetted for secrets."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    log("error", path=path, reason=f"{type(error).__name__} at line {frame.tb_lineno if frame else 0}")


class BrokerHandler(BaseHTTPRequestHandler):
    server: "BrokerServer"
    server_version = USER_AGENT
    sys_version = ""
    timeout = 15  # a client that never finishes its request must not hold a thread for ever

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        methods = ROUTES.get(path)
        if methods is None:
            self._reply(404, {"error": f"no such path: {path}"})
            return
        if self.command not in methods:
            self._reply(405, {"error": f"{path} answers {', '.join(methods)} only"}, {"Allow": ", ".join(methods)})
            return
        if not self._drain_body():
            return
        try:
            status, body = methods[self.command](self)
        except Exception as error:  # noqa: BLE001 - every failure still gets an answer
            status = status_for(error)
            body = {"error": str(error) if status != 500 else "internal error"}
            if status == 500:
                log_unexpected(path, error)
        self._reply(status, body)

    def _drain_body(self) -> bool:
        """Read (and ignore) the request body: the broker decides from the token alone."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REQUEST_BODY_BYTES:
            self._reply(413 if length > 0 else 400, {"error": "bad or too large request body"})
            return False
        if length:
            self.rfile.read(length)
        return True

    def _token(self) -> Secret | None:
        return bearer_token(self.headers.get("Authorization"))

    def healthz(self) -> tuple[int, dict]:
        return 200, {"status": "ok"}

    def jitconfig(self) -> tuple[int, dict]:
        return 201, self.server.broker.issue_jit_config(self._token())

    def finished(self) -> tuple[int, dict]:
        return 200, self.server.broker.finish(self._token())

    def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")  # a 201 carries a JIT config
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the pod gave up waiting; it will ask again

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # decisions are logged by the broker; request lines and headers never are


ROUTES: dict[str, dict[str, Callable[[BrokerHandler], tuple[int, dict]]]] = {
    "/healthz": {"GET": BrokerHandler.healthz},
    "/v1/jitconfig": {"POST": BrokerHandler.jitconfig},
    "/v1/finished": {"POST": BrokerHandler.finished},
}


class BrokerServer(ThreadingHTTPServer):
    # Request threads are joined on close, so a SIGTERM never cuts a grant in half.
    daemon_threads = False
    block_on_close = True
    # Every base runner may ask at once (a rollout, a node pool coming up); the
    # default backlog of 5 would turn connections away.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], broker: Broker) -> None:
        self.broker = broker
        super().__init__(address, BrokerHandler)


class BrokerServer6(BrokerServer):
    address_family = socket.AF_INET6


def serve(config: Config) -> int:
    broker = Broker(config, KubernetesClient(config), GitHubClient(config))
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server_class = BrokerServer6 if ":" in config.listen_host else BrokerServer
    try:
        server = server_class((config.listen_host, config.listen_port), broker)
    except OSError as error:
        log("cannot listen", address=f"{config.listen_host}:{config.listen_port}", reason=error.strerror)
        return 1
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="serve")
    sweeping = threading.Thread(target=_sweep_until, args=(broker, stopping), name="sweep")
    serving.start()
    sweeping.start()
    host, port = server.server_address[:2]
    shown_host = f"[{host}]" if ":" in host else host
    log(f"listening on {shown_host}:{port}", repository=config.repository, namespace=config.runner_namespace,
        credential=config.credential.describe(), sweep_seconds=config.sweep_seconds)
    stopping.wait()
    log("stopping", reason="signal: no new requests; finishing those in flight, then a final sweep")
    server.shutdown()
    server.server_close()
    serving.join()
    sweeping.join()
    broker.sweep_safely(when="final")
    log("stopped")
    return 0


def _sweep_until(broker: Broker, stopping: threading.Event) -> None:
    while not stopping.wait(broker.config.sweep_seconds):
        broker.sweep_safely()


def main() -> int:
    try:
        config = load_config(dict(os.environ))
    except ConfigError as error:
        for problem in error.problems:
            print(f"broker: configuration: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
