"""A tiny Kubernetes API over real TLS, to test kubeconfigs with the real `kubectl`.

`kube_apiserver(workdir, token)` makes a throwaway CA and a server
certificate for 127.0.0.1 with `openssl`, serves HTTPS on 127.0.0.1 on a free port and
yields an `ApiServer`: the endpoint as a kubeconfig's `server` wants it (without the
scheme), the CA as `certificate-authority-data`, a maker of other CAs (for the
negative test) and the log of requests. It answers discovery (`/api`, `/api/v1`,
`/apis`, `/version`) and `GET /api/v1/namespaces/<ns>/pods` (an empty PodList), each
only with `Authorization: Bearer <token>`; anything else gets a Kubernetes Status.

`kubectl_against(kubeconfig_text, server)` runs `kubectl get pods` with nothing but
that kubeconfig.
"""

import base64
import contextlib
import http.server
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from collections.abc import Callable, Iterator

import yaml

from local_server import QuietHandler, send_json

PODS_PATH = re.compile(r"^/api/v1/namespaces/(?P<namespace>[a-z0-9-]+)/pods$")
KUBECTL_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Request:
    """One HTTP request the server saw."""

    method: str
    path: str
    """The path, without the query string."""
    query: str
    authorization: str | None
    """The Authorization header as sent, None without one."""


class ApiServer(NamedTuple):
    """What `kube_apiserver` yields; unpacks as (endpoint, ca_b64, other_ca_b64, requests)."""

    endpoint: str
    """`127.0.0.1:PORT`, as a GKE cluster's `endpoint` output (no scheme)."""
    ca_b64: str
    """Base64 of the PEM CA that signed the server certificate."""
    other_ca_b64: Callable[[], str]
    """Makes a fresh CA that did not sign the server certificate; base64 of its PEM."""
    requests: list[Request]
    """Every request served, in order."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True)


def _make_ca(directory: Path, name: str) -> Path:
    """A self-signed CA (EC P-256, one day); returns the certificate's path."""
    _openssl(
        "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt"


def _make_server_certificate(directory: Path, ca_name: str) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 signed by `ca_name`; returns (cert, key) paths."""
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1\n"
    )
    _openssl(
        "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", f"{ca_name}.crt", "-CAkey", f"{ca_name}.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    return directory / "server.crt", directory / "server.key"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


DISCOVERY = {
    "/version": {
        "major": "1",
        "minor": "30",
        "gitVersion": "v1.30.0-fake",
        "platform": "linux/amd64",
    },
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    },
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get", "list", "watch", "create", "delete"],
                "shortNames": ["po"],
            }
        ],
    },
}


class _Handler(QuietHandler):
    server: "_TlsServer"

    def do_GET(self):  # noqa: N802 - the base class's name
        path, _, query = self.path.partition("?")
        authorization = self.headers.get("Authorization")
        self.server.requests.append(Request("GET", path, query, authorization))
        if authorization != f"Bearer {self.server.token}":
            send_json(self, 401, _status(401, "Unauthorized", "Unauthorized"))
            return
        if path in DISCOVERY:
            send_json(self, 200, DISCOVERY[path])
            return
        match = PODS_PATH.match(path)
        if match:
            send_json(
                self, 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}
            )
            return
        send_json(self, 404, _status(404, "NotFound", f"the server could not find the requested resource ({path})"))


class _TlsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, token: str):
        self.context = context
        self.token = token
        self.requests: list[Request] = []
        self.tls_errors: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request, client_address):
        # The handshake runs in the request's thread, so a refused one blocks nobody.
        try:
            tls_request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            self.tls_errors.append(str(error))
            return
        try:
            super().finish_request(tls_request, client_address)
        finally:
            with contextlib.suppress(OSError):
                tls_request.close()


@contextlib.contextmanager
def kube_apiserver(workdir: Path, token: str) -> Iterator[ApiServer]:
    """Serve the fake API over TLS for the `with` block; see the module docstring."""
    pki = Path(workdir) / "pki"
    pki.mkdir(mode=0o700, exist_ok=True)
    ca_certificate = _make_ca(pki, "ca")
    server_certificate, server_key = _make_server_certificate(pki, "ca")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_certificate, server_key)

    other_cas = iter(range(1, 1000))

    def other_ca_b64() -> str:
        return _b64(_make_ca(pki, f"other-ca-{next(other_cas)}"))

    server = _TlsServer(context, token)
    thread = threading.Thread(target=server.serve_forever, name="fake-kube-apiserver", daemon=True)
    thread.start()
    try:
        yield ApiServer(f"127.0.0.1:{server.server_address[1]}", _b64(ca_certificate), other_ca_b64, server.requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def kubectl_binary() -> str:
    """The real kubectl; fails (never skips) when it is missing."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH: these tests need the real client"
    return kubectl


def kubectl_against(
    kubeconfig_text: str, server: ApiServer, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `kubectl get pods` (or `args`) with only `kubeconfig_text`, against `server`.

    The kubeconfig goes to a private temporary file; HOME is a fresh folder, so no
    kubeconfig, discovery cache or plugin of the caller's leaks in.
    """
    clusters = yaml.safe_load(kubeconfig_text).get("clusters") or []
    servers = [cluster["cluster"].get("server") for cluster in clusters]
    assert f"https://{server.endpoint}" in servers, f"kubeconfig points at {servers}, not at the test server"
    with tempfile.TemporaryDirectory(prefix="kubectl-home-") as home:
        kubeconfig = Path(home) / "kubeconfig"
        fd = os.open(kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(kubeconfig_text)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "KUBECONFIG": str(kubeconfig),
            "KUBECACHEDIR": str(Path(home) / "cache"),
            # Go's HTTP client would send 127.0.0.1 to a proxy set in the caller's env.
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
            **(env or {}),
        }
        command = [kubectl_binary(), *(args or ("get", "pods")), "--request-timeout=10s"]
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_SECONDS, check=False
        )
