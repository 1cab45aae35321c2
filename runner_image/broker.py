#!/usr/bin/env python3
"""The runner broker: the only holder of the GitHub runner credential in the cluster.

A runner pod proves which pod it is with its projected ServiceAccount token. The
broker asks the Kubernetes API whose token that is, reads the pod and its owner,
and decides from those alone which runner the pod may have: its name and labels
never come from the request. It then asks GitHub for a just-in-time (JIT) runner
configuration, the only thing the pod ever gets, and remembers the runner name so
that it is never handed out twice. A background sweep removes runners whose pods
are gone.

    GET  /healthz                                            200 {"status": "ok"}
    POST /v1/jitconfig  Authorization: Bearer <pod token>    201 {"name", "labels", "encodedJitConfig"}
    POST /v1/finished   Authorization: Bearer <pod token>    200 {"name", "runnerRemoved", "podDeleted"}

Errors are {"error": "..."}: 401 no, invalid or wrong-audience token; 403 not a runner
pod of the runner namespace; 409 the pod already had its runner, or its container has
restarted (a base runner's pod is then deleted, so that its ReplicaSet starts a fresh
one); 502 GitHub refused the credential; 503 GitHub or the Kubernetes API unavailable
before the request's deadline, or too many connections at once.

Configuration is read once from the environment (see `load_config`). Python's
standard library only, but for `cryptography`, imported only to sign a GitHub App's
JWT. Run it as `python3 runner_image/broker.py`.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import ipaddress
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
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import SplitResult, quote, urlsplit

EXIT_CONFIG = 2
USER_AGENT = "gke-gpu-runners-broker"

BASE_RUNNER_LABEL = "base-runner"
GPU_RUNNER_APP = "gpu-runner"
APP_NAME_LABEL = "app.kubernetes.io/name"
RUN_ID_LABEL = "gke-gpu-runners/run-id"
NUMBER = "[0-9]{1,20}"  # a run ID, an attempt, an App's ID: ASCII digits only (\d takes any script's)
DIGITS = re.compile(NUMBER)
GPU_RUNNER_NAME = re.compile(f"gpu-runner-({NUMBER})-{NUMBER}")
RUNNER_POD_SELECTOR = "app.kubernetes.io/part-of=gke-gpu-runners"

# Claims the API server adds to a pod-bound token's review: which pod it was issued to.
POD_NAME_CLAIM = "authentication.kubernetes.io/pod-name"
POD_UID_CLAIM = "authentication.kubernetes.io/pod-uid"

RUNNERS_PER_PAGE = 100
MAX_RUNNER_PAGES = 100  # 10,000 runners: far beyond one repository's, and a bound on a looping API
APP_TOKEN_MARGIN_SECONDS = 300  # an installation token is renewed this long before it expires
MAX_REQUEST_BODY_BYTES = 1 << 20
RECHECK_SECONDS = 30.0
"""A pod asking again this soon after GitHub was asked about its runner gets the same answer, without GitHub."""
SWEEP_DEADLINE_SECONDS = 30.0
DRAIN_MARGIN_SECONDS = 2.0  # on SIGTERM, requests in flight get their deadline and this much more
REPLY_TIMEOUT_SECONDS = 5.0


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
    retries: int  # attempts after the first
    timeout_seconds: float  # limit of one attempt's every wait on the network
    backoff_seconds: float  # wait before the first retry, doubled before each next one...
    backoff_max_seconds: float  # ...up to this; a server's Retry-After is waited in full, within the deadline

    def backoff(self, retry: int) -> float:
        return min(self.backoff_seconds * 2 ** retry, self.backoff_max_seconds)


@dataclass(frozen=True)
class Config:
    repository: str
    runner_namespace: str
    runner_service_account: str
    audience: str
    listen_host: str
    listen_port: int
    base_runner_deployment: str
    sweep_seconds: float
    request_deadline_seconds: float  # every request is answered this soon, below the runner pod's own timeout
    max_connections: int
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


REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")
DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?")
AUDIENCE = re.compile(r"[\x21-\x7e]{1,253}")
TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")
FILE_PATH = re.compile(r"[A-Za-z0-9_./@+-]{1,255}")
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
        if not pattern.fullmatch(value):
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
        if not _is_http_url(parts):
            self.problems.append(f"{name} must be an http(s) URL without query, got {value!r}")
        elif parts.scheme == "http" and not _is_loopback(parts.hostname):
            # Plain HTTP would carry the credential in clear: only to a test double on this machine.
            self.problems.append(f"{name} may be http:// only for a loopback host (127.0.0.0/8, ::1, localhost), "
                                 f"got {value!r}")
        return value

    def path(self, name: str, default: Path) -> Path:
        return Path(self.get(name) or default)


def _is_http_url(parts: SplitResult) -> bool:
    try:
        parts.port  # raises on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(environ: dict[str, str]) -> Config:
    """The broker's settings from `environ`; ConfigError lists every missing or bad variable."""
    env = _Environment(environ)
    listen_host, listen_port = _listen_address(env)
    credential = _credential(env)
    config = Config(
        repository=env.text("BROKER_REPOSITORY", REPOSITORY, "owner/name of the GitHub repository"),
        runner_namespace=env.text("BROKER_RUNNER_NAMESPACE", DNS_LABEL, "a Kubernetes namespace name"),
        runner_service_account=env.text("BROKER_RUNNER_SERVICE_ACCOUNT", DNS_SUBDOMAIN, "a ServiceAccount name",
                                        default="github-runner"),
        audience=env.text("BROKER_AUDIENCE", AUDIENCE, "the audience of runner pods' tokens"),
        listen_host=listen_host,
        listen_port=listen_port,
        base_runner_deployment=env.text("BROKER_BASE_RUNNER_DEPLOYMENT", DNS_SUBDOMAIN, "a Deployment name",
                                        default="base-runner"),
        sweep_seconds=env.number("BROKER_SWEEP_SECONDS", 30.0, positive=True),
        request_deadline_seconds=env.number("BROKER_REQUEST_DEADLINE_SECONDS", 12.0, positive=True),
        max_connections=int(env.number("BROKER_MAX_CONNECTIONS", 64, whole=True, positive=True)),
        credential=credential,  # type: ignore[arg-type] - None only with a problem noted
        github_api_url=env.url("GITHUB_API_URL", "https://api.github.com"),
        github_retry=RetryPolicy(
            retries=int(env.number("BROKER_GITHUB_RETRIES", 4, whole=True)),
            timeout_seconds=env.number("BROKER_GITHUB_TIMEOUT_SECONDS", 10.0, positive=True),
            backoff_seconds=env.number("BROKER_GITHUB_BACKOFF_SECONDS", 1.0),
            backoff_max_seconds=env.number("BROKER_GITHUB_BACKOFF_MAX_SECONDS", 10.0)),
        kubernetes_api_url=env.url("KUBERNETES_API_URL", _in_cluster_api_url(env)),
        kubernetes_token_file=env.path("KUBERNETES_TOKEN_FILE", SERVICE_ACCOUNT_DIR / "token"),
        kubernetes_ca_file=env.path("KUBERNETES_CA_FILE", SERVICE_ACCOUNT_DIR / "ca.crt"),
        # The API server is next door: a few quick retries ride out a blip; a longer
        # outage is the pod's to wait out (it gets a 503 and asks again).
        kubernetes_retry=RetryPolicy(2, env.number("BROKER_KUBERNETES_TIMEOUT_SECONDS", 5.0, positive=True), 0.2, 1),
    )
    # Files are read again on each use; reading them now turns a typo into a
    # start-up error rather than every pod's.
    files = {"KUBERNETES_TOKEN_FILE": config.kubernetes_token_file}
    if urlsplit(config.kubernetes_api_url).scheme == "https":
        files["KUBERNETES_CA_FILE"] = config.kubernetes_ca_file
    if isinstance(credential, PatCredential):
        files["GITHUB_TOKEN_FILE"] = credential.token_file
    if isinstance(credential, AppCredential):
        files["GITHUB_APP_PRIVATE_KEY_FILE"] = credential.private_key_file
    problems = env.problems + [problem for name, path in files.items() if (problem := _unreadable(name, path))]
    if problems or credential is None:
        raise ConfigError(problems)
    return config


def _listen_address(env: _Environment) -> tuple[str, int]:
    raw = env.get("BROKER_LISTEN") or "0.0.0.0:8080"
    host, _, port = raw.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not re.fullmatch("[0-9]{1,5}", port) or int(port) > 65535:
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
    missing = [name for name in APP_VARIABLES if name not in app_set]
    if token_file and app_set:
        env.problems.append(f"GITHUB_TOKEN_FILE and {', '.join(app_set)} are both set: "
                            "give either a PAT or a GitHub App, not both")
    elif not token_file and missing:
        given = f"{', '.join(app_set)} without {', '.join(missing)}" if app_set else "nothing"
        env.problems.append(f"no runner credential: set GITHUB_TOKEN_FILE (a PAT), or all of "
                            f"{', '.join(APP_VARIABLES)} (a GitHub App); got {given}")
    elif token_file:
        return PatCredential(Path(token_file))
    else:
        return AppCredential(env.text("GITHUB_APP_ID", DIGITS, "the App's numeric ID"),
                             env.text("GITHUB_APP_INSTALLATION_ID", DIGITS, "the installation's numeric ID"),
                             env.path("GITHUB_APP_PRIVATE_KEY_FILE", Path()))
    return None


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
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:@,+-]+")


def log(event: str, **fields: object) -> None:
    """One line on stderr: a UTC timestamp, what happened, then key=value pairs (names, reasons, statuses)."""
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
    return text if _PLAIN_VALUE.fullmatch(text) else json.dumps(text)


# ------------------------------------------------------------------------ failures --

class Refusal(Exception):
    """A decision not to serve the request: its status and reason go to the pod and the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Failure(Exception):
    """The broker could not do its part: the pod should ask again later (503) unless said otherwise."""

    status = 503


class CredentialUnreadable(Failure):
    """A credential file (PAT, App key, the broker's own token) could not be read."""


class KubernetesError(Failure):
    """The Kubernetes API could not be asked, or refused the broker itself."""


class GitHubUnavailable(Failure):
    """GitHub did not answer usefully within the retries and the request's deadline."""


class GitHubRefused(Failure):
    """GitHub answered no for a reason a retry will not change: the credential or its permissions."""

    status = 502


# ------------------------------------------------------------------------------ HTTP --

@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


class Unanswered(Exception):
    """No useful answer within the retries or before the deadline; the message says what happened last."""


_deadline: ContextVar[float] = ContextVar("deadline", default=math.inf)


@contextmanager
def deadline_at(moment: float) -> Iterator[None]:
    """Every exchange inside gives up by `moment` (time.monotonic()): someone is waiting for the answer."""
    token = _deadline.set(moment)
    try:
        yield
    finally:
        _deadline.reset(token)


def exchange(method: str, url: str, *, headers: dict[str, str], body: bytes | None, policy: RetryPolicy,
             tls: ssl.SSLContext | None) -> HttpAnswer:
    """One HTTP request, repeated while it fails in a way worth waiting out (no answer, 5xx, 429, a spent
    rate limit), within the policy's retries and the current deadline."""
    problem = ""
    for attempt in range(policy.retries + 1):
        left = _deadline.get() - time.monotonic()
        if left <= 0:
            raise Unanswered(f"{problem or 'no attempt'}; the request's deadline has passed")
        try:
            answer = _send(method, url, headers, body, min(policy.timeout_seconds, left), tls)
        except Unanswered as error:
            problem, asked = str(error), None
        else:
            limited = _rate_limited(answer)
            if answer.status < 500 and answer.status != 429 and not limited:
                return answer
            problem, asked = f"HTTP {answer.status}" + (" (rate limited)" if limited else ""), _asked_wait(answer)
        if attempt == policy.retries:
            break
        wait = policy.backoff(attempt) if asked is None else asked
        if time.monotonic() + wait >= _deadline.get():
            asked_for = " as asked" if asked is not None else ""
            raise Unanswered(f"{problem}; waiting {wait:.3g}s{asked_for} would pass the request's deadline")
        time.sleep(wait)
    raise Unanswered(f"{problem} (after {policy.retries + 1} attempts)")


def _send(method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float,
          tls: ssl.SSLContext | None) -> HttpAnswer:
    parts = urlsplit(url)
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=tls)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return HttpAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    except TimeoutError:
        raise Unanswered(f"no answer within {timeout:.3g}s") from None
    except (OSError, http.client.HTTPException) as error:
        # Only the error's class and the OS's words: never a header, so never a token.
        raise Unanswered(f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}") from None
    finally:
        connection.close()


def _rate_limited(answer: HttpAnswer) -> bool:
    return answer.status in (403, 429) and (
        answer.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in answer.headers)


def _asked_wait(answer: HttpAnswer) -> float | None:
    """The seconds a server asks for: Retry-After, or until a spent rate limit resets; None when it says nothing."""
    retry_after = answer.headers.get("retry-after", "").strip()
    if re.fullmatch("[0-9]{1,9}", retry_after):
        return float(retry_after)
    reset = answer.headers.get("x-ratelimit-reset", "").strip()
    if answer.headers.get("x-ratelimit-remaining") == "0" and re.fullmatch("[0-9]{1,12}", reset):
        return max(0.0, int(reset) - time.time())
    return None


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
    if not TOKEN.fullmatch(token):
        raise CredentialUnreadable(f"{variable} ({_shown_path(path)}) does not hold a single-line token")
    return Secret(token)


def _shown_path(path: Path) -> str:
    """The path, unless it looks like something else: a token or key pasted where its file's path belongs."""
    text = str(path)
    return text if "/" in text and FILE_PATH.fullmatch(text) else "its value is not a file path, not shown"


# ------------------------------------------------------------------------ Kubernetes --

API_GROUPS = {"pods": "/api/v1", "replicasets": "/apis/apps/v1", "jobs": "/apis/batch/v1"}


class KubernetesClient:
    """The Kubernetes API calls the broker makes, each with the broker's own ServiceAccount token."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def review_token(self, token: Secret, audience: str) -> dict:
        """The TokenReview status of a pod's token, for our audience alone."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "spec": {"token": token.reveal(), "audiences": [audience]}}
        body = self._call("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review,
                          what="a TokenReview", ok=(200, 201)).json()
        status = body.get("status") if isinstance(body, dict) else None
        return status if isinstance(status, dict) else {}

    def get(self, resource: str, name: str) -> dict | None:
        """A pod, ReplicaSet or Job (`resource`: pods, replicasets, jobs) of the runner namespace, or None."""
        answer = self._call("GET", self._path(resource, name), what=f"reading {resource[:-1]} {name}",
                            tolerated=(404,))
        body = answer.json()
        return body if answer.status == 200 and isinstance(body, dict) else None

    def list_pods(self, label_selector: str) -> list[dict] | None:
        """The runner pods; None when the broker may no longer see the runner namespace."""
        answer = self._call("GET", f"{self._path('pods')}?labelSelector={quote(label_selector, safe='')}",
                            what="the list of runner pods", tolerated=(403, 404))
        body = answer.json()
        if answer.status != 200 or not isinstance(body, dict):
            return None
        return [item for item in body.get("items") or [] if isinstance(item, dict)]

    def delete_pod(self, name: str, uid: str) -> bool:
        """Delete the pod if it is still the one with `uid`; False when it is gone or replaced."""
        answer = self._call("DELETE", self._path("pods", name), {"preconditions": {"uid": uid}},
                            what=f"deleting pod {name}", ok=(200, 202), tolerated=(404, 409))
        return answer.status in (200, 202)

    def _path(self, resource: str, name: str = "") -> str:
        path = f"{API_GROUPS[resource]}/namespaces/{quote(self._config.runner_namespace, safe='')}/{resource}"
        return f"{path}/{quote(name, safe='')}" if name else path

    def _call(self, method: str, path: str, body: dict | None = None, *, what: str,
              ok: tuple[int, ...] = (200,), tolerated: tuple[int, ...] = ()) -> HttpAnswer:
        config = self._config
        payload = json.dumps(body).encode() if body is not None else None
        try:
            token = read_token(config.kubernetes_token_file, "KUBERNETES_TOKEN_FILE")
            headers = {"Accept": "application/json", "User-Agent": USER_AGENT,
                       "Authorization": f"Bearer {token.reveal()}",
                       **({"Content-Type": "application/json"} if payload is not None else {})}
            answer = exchange(method, config.kubernetes_api_url + path, headers=headers, body=payload,
                              policy=config.kubernetes_retry, tls=self._tls())
        except Unanswered as error:
            raise KubernetesError(f"the Kubernetes API did not answer {what}: {error}") from None
        except CredentialUnreadable as error:
            raise KubernetesError(f"cannot ask the Kubernetes API ({what}): {error}") from None
        if answer.status in ok or answer.status in tolerated:
            return answer
        if answer.status in (401, 403):
            raise KubernetesError(f"the Kubernetes API refused {what} (HTTP {answer.status}): the broker's "
                                  "ServiceAccount token is invalid or its Role lacks the permission")
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
            raise CredentialUnreadable(f"KUBERNETES_CA_FILE ({_shown_path(ca_file)}) holds no PEM certificate") \
                from None


# ---------------------------------------------------------------------------- GitHub --

@dataclass(frozen=True)
class Runner:
    id: int
    name: str
    labels: frozenset[str]
    online: bool = False
    busy: bool = False


@dataclass(frozen=True)
class JitConfig:
    runner_id: int
    encoded: Secret = field(repr=False)


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
        self._app_token: tuple[str, Secret, float] | None = None
        """The installation token, with the digest of the key that got it and when to renew it."""

    # ------------------------------------------------------------------ runners --

    def list_runners(self) -> list[Runner]:
        runners: list[Runner] = []
        for page in range(1, MAX_RUNNER_PAGES + 1):
            items, total = self._runners(f"per_page={RUNNERS_PER_PAGE}&page={page}",
                                         "listing the repository's runners")
            runners.extend(runner for runner in map(_runner, items) if runner is not None)
            if len(items) < RUNNERS_PER_PAGE or (isinstance(total, int) and page * RUNNERS_PER_PAGE >= total):
                break
        return runners

    def find_runner(self, name: str) -> Runner | None:
        items, _ = self._runners(f"name={quote(name, safe='')}", f"looking up runner {name}")
        return next((runner for runner in map(_runner, items) if runner is not None and runner.name == name), None)

    def generate_jit_config(self, name: str, labels: tuple[str, ...]) -> JitConfig | None:
        """A new runner's JIT config; None when GitHub already has a runner of that name."""
        request = {"name": name, "runner_group_id": 1, "labels": list(labels), "work_folder": "_work"}
        answer = self._call("POST", f"{self._runners_path}/generate-jitconfig", request,
                            operation=f"generating a JIT config for runner {name}", tolerated=(409,))
        if answer.status == 409:
            return None
        body = answer.json()
        encoded = body.get("encoded_jit_config") if isinstance(body, dict) else None
        runner = body.get("runner") if isinstance(body, dict) else None
        if not isinstance(encoded, str) or not encoded or not isinstance(runner, dict):
            raise GitHubUnavailable(f"GitHub answered generate-jitconfig for {name} without a runner and its "
                                    "encoded_jit_config")
        runner_id = runner.get("id")
        return JitConfig(runner_id if isinstance(runner_id, int) else 0, Secret(encoded))

    def delete_runner(self, runner_id: int) -> bool:
        """Remove a runner; False when GitHub no longer had it."""
        answer = self._call("DELETE", f"{self._runners_path}/{runner_id}", operation=f"removing runner {runner_id}",
                            tolerated=(404,))
        return answer.status != 404

    def _runners(self, query: str, operation: str) -> tuple[list[dict], object]:
        body = self._call("GET", f"{self._runners_path}?{query}", operation=operation).json()
        body = body if isinstance(body, dict) else {}
        return [item for item in body.get("runners") or [] if isinstance(item, dict)], body.get("total_count")

    # -------------------------------------------------------------- credential --

    def _bearer(self) -> Secret:
        if isinstance(self._credential, PatCredential):
            return read_token(self._credential.token_file, "GITHUB_TOKEN_FILE")
        return self._installation_token(self._credential)

    def _installation_token(self, app: AppCredential) -> Secret:
        """The App installation's token, cached until shortly before it expires or the key changes."""
        key_pem = read_file(app.private_key_file, "GITHUB_APP_PRIVATE_KEY_FILE")
        key_digest = hashlib.sha256(key_pem).hexdigest()
        # One lock: fifty pods arriving at once cause one token request, not fifty.
        with self._app_token_lock:
            if self._app_token and self._app_token[0] == key_digest and self._clock() < self._app_token[2]:
                return self._app_token[1]
            token, expires_at = self._new_installation_token(app, key_pem)
            self._app_token = (key_digest, token, expires_at - APP_TOKEN_MARGIN_SECONDS)
            return token

    def _forget_installation_token(self, token: Secret) -> None:
        with self._app_token_lock:
            if self._app_token and self._app_token[1] is token:
                self._app_token = None

    def _new_installation_token(self, app: AppCredential, key_pem: bytes) -> tuple[Secret, float]:
        jwt = app_jwt(app.app_id, key_pem, now=int(self._clock()))
        what = f"an installation token for {app.describe()}"
        try:
            answer = exchange("POST", f"{self._api}/app/installations/{app.installation_id}/access_tokens",
                              headers=_github_headers(jwt, None), body=None, policy=self._retry, tls=self._tls)
        except Unanswered as error:
            raise GitHubUnavailable(f"GitHub did not answer a request for {what}: {error}") from None
        body = answer.json()
        token = body.get("token") if isinstance(body, dict) else None
        if answer.status == 201 and isinstance(token, str) and token:
            return Secret(token), _expiry(body.get("expires_at"), self._clock())
        if answer.status == 201:
            raise GitHubUnavailable(f"GitHub answered the request for {what} without a token")
        if answer.status == 401:
            raise GitHubRefused(f"GitHub refused the JWT of GitHub App {app.app_id} (HTTP 401): GITHUB_APP_ID or "
                                "the key in GITHUB_APP_PRIVATE_KEY_FILE is wrong, or the key was revoked")
        if answer.status == 404:
            raise GitHubRefused(f"installation {app.installation_id} of GitHub App {app.app_id} does not exist "
                                f"(HTTP 404): check GITHUB_APP_INSTALLATION_ID and that the App is installed on "
                                f"{self._repository}")
        if answer.status == 403:
            raise GitHubRefused(f"GitHub App {app.app_id} may not get a token for installation "
                                f"{app.installation_id} (HTTP 403): the installation may be suspended")
        raise GitHubRefused(f"GitHub refused {what} (HTTP {answer.status})")

    # ------------------------------------------------------------------ plumbing --

    def _call(self, method: str, path: str, body: dict | None = None, *, operation: str,
              tolerated: tuple[int, ...] = ()) -> HttpAnswer:
        payload = json.dumps(body).encode() if body is not None else None
        for fresh_token in (False, True):
            bearer = self._bearer()
            try:
                answer = exchange(method, self._api + path, headers=_github_headers(bearer, payload), body=payload,
                                  policy=self._retry, tls=self._tls)
            except Unanswered as error:
                raise GitHubUnavailable(f"GitHub did not answer {operation}: {error}") from None
            if answer.status != 401 or fresh_token or not isinstance(self._credential, AppCredential):
                break
            # An installation token revoked before its time: once more, with a new one.
            self._forget_installation_token(bearer)
        if 200 <= answer.status < 300 or answer.status in tolerated:
            return answer
        raise GitHubRefused(self._refusal(operation, answer))

    def _refusal(self, operation: str, answer: HttpAnswer) -> str:
        credential = self._credential.describe()
        prefix = f"GitHub refused {operation} (HTTP {answer.status})"
        if answer.status == 401:
            return f"{prefix}: the runner credential (PAT or App), {credential}, is invalid, expired or revoked"
        if answer.status == 403:
            return (f"{prefix}: the credential, {credential}, lacks Administration: read and write on "
                    f"{self._repository} (classic PAT: repo scope; App: administration write)")
        if answer.status == 404:
            return f"{prefix}: {self._repository} does not exist or the credential, {credential}, cannot see it"
        body = answer.json()
        message = body.get("message") if isinstance(body, dict) else None
        return f"{prefix}: {str(message)[:200]}" if message else prefix


def _github_headers(bearer: Secret, payload: bytes | None) -> dict[str, str]:
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
               "User-Agent": USER_AGENT, "Authorization": f"Bearer {bearer.reveal()}"}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    return headers


def _runner(item: dict) -> Runner | None:
    if not isinstance(item.get("id"), int) or not isinstance(item.get("name"), str):
        return None
    labels = frozenset(label.get("name") for label in item.get("labels") or []
                       if isinstance(label, dict) and isinstance(label.get("name"), str))
    return Runner(item["id"], item["name"], labels, item.get("status") == "online", item.get("busy") is True)


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
# Pure functions: reviewed identity, pod and owner in; a grant out, or a Refusal raised.

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


def identity_from_review(status: dict, audience: str) -> PodIdentity:
    """The pod a TokenReview status vouches for; Refusal(401) when the token proves nothing."""
    if status.get("authenticated") is not True:
        error = str(status.get("error") or "")[:200]
        raise Refusal(401, "the token is invalid, expired or not for this audience" + (f" ({error})" if error else ""))
    if audience not in (status.get("audiences") or []):
        raise Refusal(401, f"the token is not for audience {audience}")
    user = status.get("user") if isinstance(status.get("user"), dict) else {}
    parts = str(user.get("username") or "").split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        raise Refusal(401, "the token is not a ServiceAccount's")
    extra = user.get("extra") if isinstance(user.get("extra"), dict) else {}
    pod_name, pod_uid = _first(extra.get(POD_NAME_CLAIM)), _first(extra.get(POD_UID_CLAIM))
    if not pod_name or not pod_uid:
        raise Refusal(401, "the token is not bound to a pod (no pod name and UID in its review)")
    return PodIdentity(namespace=parts[2], service_account=parts[3], pod_name=pod_name, pod_uid=pod_uid)


def _first(values: object) -> str:
    return values[0] if isinstance(values, list) and values and isinstance(values[0], str) else ""


def controller_reference(obj: dict | None) -> dict | None:
    """The ownerReference marked controller, the one owner Kubernetes itself acts on."""
    references = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in references if isinstance(ref, dict) and ref.get("controller") is True), None)


def decide_runner(identity: PodIdentity, pod: dict | None, owner: dict | None, *, runner_namespace: str,
                  runner_service_account: str, base_runner_deployment: str, allow_terminating: bool = False) -> Grant:
    """Which runner the pod `identity` names may have, from the pod and its controller alone; Refusal(403) if none.

    `pod` is the pod as read from the runner namespace (None when absent); `owner` its
    controller (a ReplicaSet or a Job) as read likewise, None when absent or of another kind.
    """
    where = f"pod {identity.namespace}/{identity.pod_name}"
    if identity.namespace != runner_namespace:
        raise Refusal(403, f"{where} is not in the runner namespace {runner_namespace}")
    if identity.service_account != runner_service_account:
        raise Refusal(403, f"{where} runs as ServiceAccount {identity.service_account}, not {runner_service_account}")
    if pod is None:
        raise Refusal(403, f"{where} does not exist")
    metadata = pod.get("metadata") or {}
    if metadata.get("uid") != identity.pod_uid:
        raise Refusal(403, f"{where} has UID {metadata.get('uid')}, not the token's {identity.pod_uid}: "
                           "the token belongs to an earlier pod of that name")
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise Refusal(403, f"{where} has ended (phase {phase})")
    if metadata.get("deletionTimestamp") and not allow_terminating:
        raise Refusal(403, f"{where} is terminating")
    reference = controller_reference(pod)
    if reference is None:
        raise Refusal(403, f"{where} has no controller: a bare pod is not a runner")
    kind, name = reference.get("kind"), str(reference.get("name") or "")
    if owner is not None and (owner.get("metadata") or {}).get("uid") != reference.get("uid"):
        raise Refusal(403, f"{where}'s {kind} {name} has been replaced (its UID differs from the pod's reference)")
    if kind == "ReplicaSet":
        return _base_runner(where, identity.pod_name, name, owner, base_runner_deployment)
    if kind == "Job":
        return _gpu_runner(where, name, owner)
    raise Refusal(403, f"{where} is controlled by {kind} {name}, neither a ReplicaSet of Deployment "
                       f"{base_runner_deployment} nor a {GPU_RUNNER_APP} Job")


def _base_runner(where: str, pod_name: str, replicaset: str, owner: dict | None, deployment: str) -> Grant:
    if owner is None:
        raise Refusal(403, f"{where}'s ReplicaSet {replicaset} does not exist")
    reference = controller_reference(owner) or {}
    if reference.get("kind") != "Deployment" or reference.get("name") != deployment:
        controller = f"{reference.get('kind')} {reference.get('name')}" if reference else "nothing"
        raise Refusal(403, f"{where}'s ReplicaSet {replicaset} belongs to {controller}, not Deployment {deployment}")
    if not pod_name.startswith(f"{deployment}-"):
        # The sweep recognises base runners by this prefix; a runner it could not see would never be removed.
        raise Refusal(403, f"{where} is not named {deployment}-*, as the Deployment's pods are")
    return Grant(pod_name, (BASE_RUNNER_LABEL,), "base")


def _gpu_runner(where: str, job_name: str, owner: dict | None) -> Grant:
    if owner is None:
        raise Refusal(403, f"{where}'s Job {job_name} does not exist")
    labels = (owner.get("metadata") or {}).get("labels") or {}
    if labels.get(APP_NAME_LABEL) != GPU_RUNNER_APP:
        raise Refusal(403, f"{where}'s Job {job_name} is not labelled {APP_NAME_LABEL}={GPU_RUNNER_APP}")
    run_id = str(labels.get(RUN_ID_LABEL) or "")
    if not DIGITS.fullmatch(run_id):
        raise Refusal(403, f"{where}'s Job {job_name} has no numeric {RUN_ID_LABEL} label (got {run_id!r})")
    match = GPU_RUNNER_NAME.fullmatch(job_name)
    if match is None or match.group(1) != run_id:
        # The sweep recognises GPU runners by this name; a runner it could not see would never be removed.
        raise Refusal(403, f"{where}'s Job is named {job_name}, not {GPU_RUNNER_APP}-{run_id}-<attempt>")
    return Grant(job_name, (f"gpu-runner-{run_id}",), "gpu")


def container_restarts(pod: dict) -> int:
    """How often the pod's containers have restarted. startup.sh asks once per container start, so a
    restarted container belongs to a pod that has already had its runner."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(s["restartCount"] for s in statuses if isinstance(s, dict) and isinstance(s.get("restartCount"), int))


def is_ours(runner: Runner, base_runner_deployment: str) -> bool:
    """Whether the broker registered this runner: its name and label say so together."""
    if runner.name.startswith(f"{base_runner_deployment}-") and BASE_RUNNER_LABEL in runner.labels:
        return True
    match = GPU_RUNNER_NAME.fullmatch(runner.name)
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


# ---------------------------------------------------------------------------- broker --

@dataclass
class Handout:
    """One runner name, which one pod at a time may have; its requests queue on its lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # requests holding or awaiting the lock: while any, the sweep keeps the entry
    pod_name: str = ""
    pod_uid: str = ""
    granted: bool = False
    checked_at: float | None = None  # time.monotonic() when GitHub last said the runner is in use or gone
    finished_at: float | None = None  # time.monotonic() when the pod last said its runner has ended

    def claim(self, who: Authorized) -> None:
        """Make the record the asking pod's. Pod names are unique, so a base pod's namesake is gone; a Job's
        other pod may not be."""
        if self.pod_uid == who.identity.pod_uid:
            return
        if self.granted and who.grant.kind == "gpu":
            raise Refusal(409, f"runner {who.grant.name} was given to pod {self.pod_name} of the same Job")
        self.pod_name, self.pod_uid = who.identity.pod_name, who.identity.pod_uid
        self.granted, self.checked_at, self.finished_at = False, None, None


@dataclass(frozen=True)
class Authorized:
    identity: PodIdentity
    pod: dict
    grant: Grant

    @property
    def terminating(self) -> bool:
        return bool((self.pod.get("metadata") or {}).get("deletionTimestamp"))


class Broker:
    """Hands each runner pod one JIT runner, removes runners that ended, sweeps up after pods that are gone."""

    def __init__(self, config: Config, kubernetes: KubernetesClient, github: GitHubClient) -> None:
        self.config = config
        self.kubernetes = kubernetes
        self.github = github
        self._lock = threading.Lock()
        self._handouts: dict[str, Handout] = {}  # by runner name

    # ------------------------------------------------------------------ requests --

    def issue_jit_config(self, token: Secret | None) -> dict:
        with self._request("jitconfig", token, allow_terminating=False) as (who, handout, seen):
            jit = self._issue(who, handout)
        log("jitconfig", decision="granted", status=201, **seen, labels=who.grant.labels, runner_id=jit.runner_id,
            reason=f"{who.grant.kind} runner pod")
        return {"name": who.grant.name, "labels": list(who.grant.labels), "encodedJitConfig": jit.encoded.reveal()}

    def finish(self, token: Secret | None) -> dict:
        with self._request("finished", token, allow_terminating=True) as (who, handout, seen):
            removed, deleted = self._wind_up(who, handout)
        log("finished", decision="done", status=200, **seen, runner_removed=removed, pod_deleted=deleted,
            reason="the pod says its runner has ended")
        return {"name": who.grant.name, "runnerRemoved": removed, "podDeleted": deleted}

    @contextmanager
    def _request(self, event: str, token: Secret | None, *,
                 allow_terminating: bool) -> Iterator[tuple[Authorized, Handout, dict[str, object]]]:
        """Who asks, and their runner name's record, held; a refusal or failure is logged on the way out."""
        seen: dict[str, object] = {}
        try:
            who = self._authorize(token, seen, allow_terminating=allow_terminating)
            with self._lock:
                handout = self._handouts.setdefault(who.grant.name, Handout())
                handout.users += 1
            try:
                with handout.lock:
                    handout.claim(who)
                    yield who, handout, seen
            finally:
                with self._lock:
                    handout.users -= 1
        except Refusal as refusal:
            log(event, decision="refused", status=refusal.status, **seen, reason=refusal.reason)
            raise
        except Failure as error:
            log(event, decision="failed", status=error.status, **seen, reason=str(error))
            raise

    def _authorize(self, token: Secret | None, seen: dict[str, object], *, allow_terminating: bool) -> Authorized:
        """Who is asking, from the token's review, the pod and its owner; never from the request."""
        if token is None:
            raise Refusal(401, "no bearer token")
        identity = identity_from_review(self.kubernetes.review_token(token, self.config.audience), self.config.audience)
        seen.update(pod=identity.pod_name, namespace=identity.namespace)
        # Only runner pods' own ServiceAccount in our own namespace gets its pod read; any other is refused unread.
        ours = (identity.namespace, identity.service_account) == (self.config.runner_namespace,
                                                                  self.config.runner_service_account)
        pod = self.kubernetes.get("pods", identity.pod_name) if ours else None
        grant = decide_runner(identity, pod, self._controller_of(pod), runner_namespace=self.config.runner_namespace,
                              runner_service_account=self.config.runner_service_account,
                              base_runner_deployment=self.config.base_runner_deployment,
                              allow_terminating=allow_terminating)
        seen["runner"] = grant.name
        return Authorized(identity, pod or {}, grant)

    def _controller_of(self, pod: dict | None) -> dict | None:
        reference = controller_reference(pod) or {}
        resource = {"ReplicaSet": "replicasets", "Job": "jobs"}.get(str(reference.get("kind")))
        return self.kubernetes.get(resource, str(reference["name"])) if resource and reference.get("name") else None

    def _issue(self, who: Authorized, handout: Handout) -> JitConfig:
        """The pod's JIT runner, if it may have one."""
        grant, pod = who.grant, who.identity
        restarts = container_restarts(who.pod)
        if restarts:
            deleted = grant.kind == "base" and self.kubernetes.delete_pod(pod.pod_name, pod.pod_uid)
            outcome = ": deleted it, so that its ReplicaSet starts a fresh one" if deleted else ""
            raise Refusal(409, f"the pod's container has restarted ({restarts} times): a pod that has already asked "
                               f"for its runner is spent{outcome}")
        had = f"this pod already had its runner, {grant.name}"
        now = time.monotonic()
        if handout.finished_at is not None:
            raise Refusal(409, f"{had}, and said it has ended")
        if handout.checked_at is not None and now - handout.checked_at < RECHECK_SECONDS:
            raise Refusal(409, f"{had}, in use or gone when GitHub was asked {now - handout.checked_at:.0f}s ago")
        jit = None if handout.granted else self.github.generate_jit_config(grant.name, grant.labels)
        if jit is None:
            # The name is taken. A runner that never connected (offline, not busy) has lost
            # its JIT config with an answer the pod never got: replace it. Any other stays.
            runner = self.github.find_runner(grant.name)
            if runner is None and handout.granted:
                handout.checked_at = now
                raise Refusal(409, f"{had}, which has ended")
            if runner is not None and (runner.online or runner.busy):
                handout.checked_at = now
                raise Refusal(409, f"GitHub already has a runner named {grant.name}, "
                                   f"{'busy' if runner.busy else 'online'}: {had}")
            if runner is not None:
                self.github.delete_runner(runner.id)
                log("jitconfig", decision="replaced", runner=grant.name, runner_id=runner.id,
                    reason="registered but never connected: its JIT config was lost with an answer")
            jit = self.github.generate_jit_config(grant.name, grant.labels)
            if jit is None:
                raise Refusal(409, f"GitHub already has a runner named {grant.name} again")
        handout.granted, handout.checked_at = True, None
        return jit

    def _wind_up(self, who: Authorized, handout: Handout) -> tuple[bool, bool]:
        """Remove the pod's runner from GitHub and, for a base runner, the pod."""
        grant, pod = who.grant, who.identity
        now = time.monotonic()
        if handout.finished_at is not None and now - handout.finished_at < RECHECK_SECONDS:
            return False, False  # said so moments ago: a pod saying it in a loop costs no GitHub call
        handout.finished_at = now
        removed, github_error = False, None
        try:
            runner = self.github.find_runner(grant.name)
            if runner is not None and runner.busy:
                log("finished", decision="left", runner=grant.name, runner_id=runner.id,
                    reason="GitHub says the runner is busy: the sweep removes it once its pod is gone")
            elif runner is not None:
                removed = self.github.delete_runner(runner.id)
        except Failure as error:
            github_error = error
        # The pod goes even when GitHub failed: a fresh one should not wait on it, and once
        # this one is gone the sweep removes its runner.
        deleted = grant.kind == "base" and not who.terminating and self.kubernetes.delete_pod(pod.pod_name,
                                                                                                pod.pod_uid)
        if github_error is not None:
            aftermath = "; the pod was deleted, the sweep removes its runner" if deleted else ""
            raise type(github_error)(f"{github_error}{aftermath}") from None
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
            except Failure as error:
                log("sweep", decision="failed", runner=runner.name, runner_id=runner.id, reason=str(error))
                continue
            log("sweep", decision="removed", runner=runner.name, runner_id=runner.id,
                reason="no live pod holds this runner")
        if not final:
            self._forget_gone_pods(pods)

    def sweep_safely(self, final: bool = False) -> None:
        try:
            with deadline_at(time.monotonic() + SWEEP_DEADLINE_SECONDS):
                self.sweep(final=final)
        except Failure as error:
            log("sweep", decision="failed", when="final" if final else "periodic",
                reason=f"{error}; trying again next round")

    def _forget_gone_pods(self, listed: list[dict]) -> None:
        """Drop the records of pods that no longer exist: a deleted pod's token is dead, it cannot ask again."""
        listed_uids = {(pod.get("metadata") or {}).get("uid") for pod in listed}
        with self._lock:
            unlisted = [(name, h) for name, h in self._handouts.items() if h.pod_uid not in listed_uids]
        for name, handout in unlisted:
            pod = self.kubernetes.get("pods", handout.pod_name) if handout.pod_name else None
            if pod is None or (pod.get("metadata") or {}).get("uid") != handout.pod_uid:
                with self._lock:
                    if self._handouts.get(name) is handout and not handout.users:
                        del self._handouts[name]


# ------------------------------------------------------------------------ HTTP server --

def bearer_token(header: str | None) -> Secret | None:
    scheme, _, value = (header or "").strip().partition(" ")
    return Secret(value.strip()) if scheme.lower() == "bearer" and value.strip() else None


def status_for(error: Exception) -> int:
    """The HTTP status of a failed request: the only place errors become statuses."""
    return error.status if isinstance(error, (Refusal, Failure)) else 500


def log_unexpected(path: str, error: Exception) -> None:
    """A bug: its class and line only, since an unexpected exception's text is not vetted for secrets."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    log("error", path=path, reason=f"{type(error).__name__} at line {frame.tb_lineno if frame else 0}")


class _DeadlineReader(io.RawIOBase):
    """A connection's bytes until its deadline, however slowly they trickle in."""

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        super().__init__()
        self._connection = connection
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request was not read before its deadline")
        self._connection.settimeout(left)
        return self._connection.recv_into(buffer)


ROUTES = {"/healthz": "GET", "/v1/jitconfig": "POST", "/v1/finished": "POST"}


class BrokerHandler(BaseHTTPRequestHandler):
    server: "BrokerServer"
    server_version = USER_AGENT
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # The whole exchange, reading the request included, ends by this deadline: below the pod's own timeout.
        self.deadline = time.monotonic() + self.server.config.request_deadline_seconds
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self.deadline))

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        method = ROUTES.get(path)
        if method is None:
            self._reply(404, {"error": f"no such path: {path}"})
            return
        if self.command != method:
            self._reply(405, {"error": f"{path} answers {method} only"}, {"Allow": method})
            return
        if not self._drain_body():
            return
        token = bearer_token(self.headers.get("Authorization"))
        try:
            with deadline_at(self.deadline):
                if path == "/v1/jitconfig":
                    status, body = 201, self.server.broker.issue_jit_config(token)
                elif path == "/v1/finished":
                    status, body = 200, self.server.broker.finish(token)
                else:
                    status, body = 200, {"status": "ok"}
        except Exception as error:  # noqa: BLE001 - every failure still gets an answer
            status = status_for(error)
            body = {"error": str(error) if status != 500 else "internal error"}
            if status == 500:
                log_unexpected(path, error)
        self._reply(status, body)

    def _drain_body(self) -> bool:
        """Read (and ignore) the request body: the broker decides from the token alone."""
        length = self.headers.get("Content-Length") or "0"
        if not re.fullmatch("[0-9]{1,9}", length) or int(length) > MAX_REQUEST_BODY_BYTES:
            self._reply(413 if length.isdigit() else 400, {"error": "bad or too large request body"})
            return False
        self.rfile.read(int(length))
        return True

    def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        try:
            self.connection.settimeout(REPLY_TIMEOUT_SECONDS)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")  # a 201 carries a JIT config
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the pod gave up waiting; it will ask again

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # decisions are logged by the broker; request lines and headers never are


class BrokerServer(ThreadingHTTPServer):
    # Daemon request threads: a request that outlives its deadline never holds the
    # process; on SIGTERM `drain` waits for those in flight, a bounded time.
    daemon_threads = True
    block_on_close = False
    # Every base runner may ask at once (a rollout, a node pool coming up); the
    # default backlog of 5 would turn connections away.
    request_queue_size = 128

    def __init__(self, config: Config, broker: Broker) -> None:
        self.config = config
        self.broker = broker
        self.slots = threading.BoundedSemaphore(config.max_connections)
        self.address_family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
        super().__init__((config.listen_host, config.listen_port), BrokerHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self._turn_away(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _turn_away(self, request: socket.socket) -> None:
        """503 at once, without a thread: the pod asks again later."""
        log("busy", decision="refused", status=503, reason=f"{self.config.max_connections} connections in flight")
        body = json.dumps({"error": "the broker is busy: too many connections at once; ask again"}).encode()
        head = (f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(0.1)
            request.recv(65536)  # what has come of the request, so that closing does not reset the answer
            request.sendall(head + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke while being read: one log line, not the standard library's traceback."""
        log("connection", decision="dropped", reason=type(sys.exc_info()[1]).__name__)

    def drain(self, until: float) -> bool:
        """Wait, until `until` (time.monotonic()) at most, for the requests in flight; whether they all ended."""
        for _ in range(self.config.max_connections):
            if not self.slots.acquire(timeout=max(0.0, until - time.monotonic())):
                return False
        return True


def serve(config: Config) -> int:
    broker = Broker(config, KubernetesClient(config), GitHubClient(config))
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        server = BrokerServer(config, broker)
    except OSError as error:
        log("cannot listen", address=f"{config.listen_host}:{config.listen_port}", reason=error.strerror)
        return 1
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="serve", daemon=True).start()
    sweeping = threading.Thread(target=_sweep_until, args=(broker, stopping), name="sweep", daemon=True)
    sweeping.start()
    host, port = server.server_address[:2]
    shown_host = f"[{host}]" if ":" in host else host
    log(f"listening on {shown_host}:{port}", repository=config.repository, namespace=config.runner_namespace,
        credential=config.credential.describe(), sweep_seconds=config.sweep_seconds)
    stopping.wait()
    log("stopping", reason="signal: no new requests; finishing those in flight, then a final sweep")
    server.shutdown()
    server.server_close()
    until = time.monotonic() + config.request_deadline_seconds + DRAIN_MARGIN_SECONDS
    if not server.drain(until):
        log("stopping", reason="requests still in flight past their deadline: not waiting for them")
    sweeping.join(max(0.0, until - time.monotonic()))
    broker.sweep_safely(final=True)
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
