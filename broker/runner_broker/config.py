"""The broker's settings, read once from the environment into a frozen object.

`load_config` collects every missing or bad variable and raises them together in a
ConfigError; `__main__` prints them and exits 2. Files (credentials, the GPU runner
template) are read once here, so that a typo stops start-up rather than every request,
and again on each use, so that a rotated Secret or an updated template takes effect
without a restart.

    variable                             default                 meaning
    BROKER_REPOSITORY                    required                owner/name runners register with
    BROKER_RUNNER_NAMESPACE              required                namespace of the runner pods
    BROKER_AUDIENCE                      required                audience a runner pod's token must carry
    BROKER_RUNNER_SERVICE_ACCOUNT        github-runner           ServiceAccount of runner pods
    BROKER_LISTEN                        0.0.0.0:8080            the API's address (port 0: any free one)
    BROKER_HEALTH_LISTEN                 0.0.0.0:8081            /healthz alone, so busy clients cannot fail probes
    BROKER_BASE_RUNNER_DEPLOYMENT        base-runner             Deployment whose pods are base runners
    BROKER_GPU_RUNNER_TEMPLATE_FILE      unset: no GPU runners   the GPU runner Job template (JSON)
    BROKER_MAX_GPU_RUNNERS_PER_RUN       2                       largest `count` a run may ask for
    BROKER_SWEEP_SECONDS                 30                      pause between sweeps
    BROKER_GRANT_GRACE_SECONDS           60                      a granted pod is left alone this long by the sweep
    BROKER_FINAL_SWEEP_SECONDS           120                     on SIGTERM, how long busy runners are retried
    BROKER_REQUEST_DEADLINE_SECONDS      12                      every request is answered this soon
    BROKER_MAX_CONNECTIONS               64                      connections served at once
    BROKER_MAX_CONNECTIONS_PER_CLIENT    8                       of which from one client address
    BROKER_GITHUB_RETRIES, _TIMEOUT_SECONDS, _BACKOFF_SECONDS, _BACKOFF_MAX_SECONDS   4, 10, 1, 10
    BROKER_KUBERNETES_TIMEOUT_SECONDS    5
    GITHUB_TOKEN_FILE                    -                       file holding the PAT
    GITHUB_APP_ID, GITHUB_APP_INSTALLATION_ID, GITHUB_APP_PRIVATE_KEY_FILE  a GitHub App instead
    GITHUB_API_URL                       https://api.github.com  (http:// only to a loopback host)
    KUBERNETES_API_URL                   in-cluster API server   (http:// only to a loopback host)
    KUBERNETES_TOKEN_FILE, KUBERNETES_CA_FILE   the in-cluster ServiceAccount files
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from runner_broker.errors import CredentialUnreadable
from runner_broker.http import RetryPolicy
from runner_broker.secrets import read_file, read_token
from runner_contract import BASE_RUNNER, BROKER_HEALTH_PORT, BROKER_PORT, RUNNER_ACCOUNT

DIGITS = re.compile("[0-9]{1,20}")  # ASCII digits only: \d takes any script's
REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")
DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?")
AUDIENCE = re.compile(r"[\x21-\x7e]{1,253}")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
APP_VARIABLES = ("GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PRIVATE_KEY_FILE")
DAY_SECONDS = 86400


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
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    repository: str
    runner_namespace: str
    runner_service_account: str
    audience: str
    listen: Address
    health_listen: Address
    base_runner_deployment: str
    gpu_runner_template_file: Path | None
    max_gpu_runners_per_run: int
    sweep_seconds: float
    grant_grace_seconds: float
    final_sweep_seconds: float
    request_deadline_seconds: float
    """Every request is answered this soon: below the runner pod's own timeout (startup.sh: 15 s)."""
    max_connections: int
    max_connections_per_client: int
    credential: PatCredential | AppCredential
    github_api_url: str
    github_retry: RetryPolicy
    kubernetes_api_url: str
    kubernetes_token_file: Path
    kubernetes_ca_file: Path
    kubernetes_retry: RetryPolicy

    @property
    def repository_name(self) -> str:
        return self.repository.split("/", 1)[1]


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


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

    def number(
        self, name: str, default: float, *, whole: bool = False, positive: bool = False, most: float = DAY_SECONDS
    ) -> float:
        raw = self.get(name)
        if raw is None:
            return default
        accepted = "a whole number" if whole else "a number of seconds"
        accepted += " greater than 0" if positive else " from 0"
        try:
            value = int(raw) if whole else float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (positive and value == 0) or value > most:
            self.problems.append(f"{name} must be {accepted} (up to {most:g}), got {raw!r}")
            return default
        return value

    def whole(self, name: str, default: int, *, positive: bool = True, most: int = 10000) -> int:
        return int(self.number(name, default, whole=True, positive=positive, most=most))

    def url(self, name: str, default: str) -> str:
        value = (self.get(name) or default).rstrip("/")
        parts = urlsplit(value)
        if not _is_http_url(parts):
            self.problems.append(f"{name} must be an http(s) URL without query, got {value!r}")
        elif parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            # Plain HTTP would carry the credential in clear: only to a test double on this machine.
            self.problems.append(
                f"{name} may be http:// only for a loopback host (127.0.0.0/8, ::1, localhost), got {value!r}"
            )
        return value

    def path(self, name: str, default: Path) -> Path:
        return Path(self.get(name) or default)

    def address(self, name: str, default_port: int) -> Address:
        raw = self.get(name) or f"0.0.0.0:{default_port}"
        host, _, port = raw.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or not re.fullmatch("[0-9]{1,5}", port) or int(port) > 65535:
            self.problems.append(f"{name} must be host:port (port 0 picks a free one), got {raw!r}")
            return Address("0.0.0.0", default_port)
        return Address(host, int(port))


def _is_http_url(parts: SplitResult) -> bool:
    try:
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment


def is_loopback(host: str) -> bool:
    try:
        return host.lower() == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(environ: dict[str, str]) -> Config:
    """The broker's settings from `environ`; ConfigError lists every missing or bad variable."""
    env = _Environment(environ)
    credential = _credential(env)
    template = env.get("BROKER_GPU_RUNNER_TEMPLATE_FILE")
    config = Config(
        repository=env.text("BROKER_REPOSITORY", REPOSITORY, "owner/name of the GitHub repository"),
        runner_namespace=env.text("BROKER_RUNNER_NAMESPACE", DNS_LABEL, "a Kubernetes namespace name"),
        runner_service_account=env.text(
            "BROKER_RUNNER_SERVICE_ACCOUNT", DNS_SUBDOMAIN, "a ServiceAccount name", default=RUNNER_ACCOUNT
        ),
        audience=env.text("BROKER_AUDIENCE", AUDIENCE, "the audience of runner pods' tokens"),
        listen=env.address("BROKER_LISTEN", BROKER_PORT),
        health_listen=env.address("BROKER_HEALTH_LISTEN", BROKER_HEALTH_PORT),
        base_runner_deployment=env.text(
            "BROKER_BASE_RUNNER_DEPLOYMENT", DNS_SUBDOMAIN, "a Deployment name", default=BASE_RUNNER
        ),
        gpu_runner_template_file=Path(template) if template else None,
        max_gpu_runners_per_run=env.whole("BROKER_MAX_GPU_RUNNERS_PER_RUN", 2, most=100),
        sweep_seconds=env.number("BROKER_SWEEP_SECONDS", 30.0, positive=True),
        grant_grace_seconds=env.number("BROKER_GRANT_GRACE_SECONDS", 60.0),
        final_sweep_seconds=env.number("BROKER_FINAL_SWEEP_SECONDS", 120.0),
        request_deadline_seconds=env.number("BROKER_REQUEST_DEADLINE_SECONDS", 12.0, positive=True),
        max_connections=env.whole("BROKER_MAX_CONNECTIONS", 64),
        max_connections_per_client=env.whole("BROKER_MAX_CONNECTIONS_PER_CLIENT", 8),
        credential=credential,  # type: ignore[arg-type] - None only with a problem noted
        github_api_url=env.url("GITHUB_API_URL", "https://api.github.com"),
        github_retry=RetryPolicy(
            retries=env.whole("BROKER_GITHUB_RETRIES", 4, positive=False, most=100),
            timeout_seconds=env.number("BROKER_GITHUB_TIMEOUT_SECONDS", 10.0, positive=True),
            backoff_seconds=env.number("BROKER_GITHUB_BACKOFF_SECONDS", 1.0),
            backoff_max_seconds=env.number("BROKER_GITHUB_BACKOFF_MAX_SECONDS", 10.0),
        ),
        kubernetes_api_url=env.url("KUBERNETES_API_URL", _in_cluster_api_url(env)),
        kubernetes_token_file=env.path("KUBERNETES_TOKEN_FILE", SERVICE_ACCOUNT_DIR / "token"),
        kubernetes_ca_file=env.path("KUBERNETES_CA_FILE", SERVICE_ACCOUNT_DIR / "ca.crt"),
        # The API server is next door: a few quick retries ride out a blip; a longer
        # outage is the pod's to wait out (it gets a 503 and asks again).
        kubernetes_retry=RetryPolicy(2, env.number("BROKER_KUBERNETES_TIMEOUT_SECONDS", 5.0, positive=True), 0.2, 1),
    )
    if config.max_connections_per_client > config.max_connections:
        env.problems.append(
            f"BROKER_MAX_CONNECTIONS_PER_CLIENT ({config.max_connections_per_client}) must not "
            f"exceed BROKER_MAX_CONNECTIONS ({config.max_connections})"
        )
    if config.listen == config.health_listen and config.listen.port != 0:
        env.problems.append(f"BROKER_HEALTH_LISTEN must differ from BROKER_LISTEN, both are {config.listen}")
    problems = env.problems + _unreadable_files(config, credential)
    if problems or credential is None:
        raise ConfigError(problems)
    return config


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
        env.problems.append(
            f"GITHUB_TOKEN_FILE and {', '.join(app_set)} are both set: give either a PAT or a GitHub App, not both"
        )
    elif not token_file and missing:
        given = f"{', '.join(app_set)} without {', '.join(missing)}" if app_set else "nothing"
        env.problems.append(
            f"no runner credential: set GITHUB_TOKEN_FILE (a PAT with Administration: read and "
            f"write and Actions: read), or all of {', '.join(APP_VARIABLES)} (a GitHub App with "
            f"the same permissions); got {given}"
        )
    elif token_file:
        return PatCredential(Path(token_file))
    else:
        return AppCredential(
            env.text("GITHUB_APP_ID", DIGITS, "the App's numeric ID"),
            env.text("GITHUB_APP_INSTALLATION_ID", DIGITS, "the installation's numeric ID"),
            env.path("GITHUB_APP_PRIVATE_KEY_FILE", Path()),
        )
    return None


def _unreadable_files(config: Config, credential: PatCredential | AppCredential | None) -> list[str]:
    """Why the files the variables name cannot serve."""
    from runner_broker.template import load_template  # the template's own rules live there

    checks = [("KUBERNETES_TOKEN_FILE", lambda: read_token(config.kubernetes_token_file, "KUBERNETES_TOKEN_FILE"))]
    if urlsplit(config.kubernetes_api_url).scheme == "https":
        checks.append(("KUBERNETES_CA_FILE", lambda: read_file(config.kubernetes_ca_file, "KUBERNETES_CA_FILE")))
    if isinstance(credential, PatCredential):
        checks.append(("GITHUB_TOKEN_FILE", lambda: read_token(credential.token_file, "GITHUB_TOKEN_FILE")))
    if isinstance(credential, AppCredential) and credential.private_key_file != Path():

        def app_key() -> object:
            from runner_broker.app_jwt import load_rsa_private_key

            return load_rsa_private_key(read_file(credential.private_key_file, "GITHUB_APP_PRIVATE_KEY_FILE"))

        checks.append(("GITHUB_APP_PRIVATE_KEY_FILE", app_key))
    if config.gpu_runner_template_file is not None:
        template_file = config.gpu_runner_template_file
        checks.append(("BROKER_GPU_RUNNER_TEMPLATE_FILE", lambda: load_template(template_file)))
    problems = []
    for _, check in checks:
        try:
            check()
        except CredentialUnreadable as error:
            problems.append(str(error))
    return problems
