"""The smoke test's one way into the cluster: a narrow interface, and kubectl behind it.

Checks call `Cluster` methods, which answer parsed JSON or raise `KubeError`; tests pass
an in-process fake of the same methods. `Kubectl` runs the real kubectl with the
operator kubeconfig (the stack's `kubeconfig` output, gke-gcloud-auth-plugin).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

KUBECTL_TIMEOUT_SECONDS = 120


class KubeError(Exception):
    """kubectl could not do it. `reason`: NotFound, Forbidden, Impersonation (you may not act
    as that identity), or Error."""

    def __init__(self, message: str, reason: str = "Error") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class Cluster(Protocol):
    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object, or None when it does not exist."""

    def list(self, kind: str, namespace: str, *, labels: str | None = None, fields: str | None = None) -> list[dict]:
        """The objects of `kind` matching the label and field selectors."""

    def create(self, document: dict) -> dict:
        """Creates the object in its own `metadata.namespace`; the object as the API server stored it."""

    def delete_jobs(self, names: Sequence[str], namespace: str) -> None:
        """Deletes the Jobs and, in the background, their pods; missing ones are no error."""

    def exec(self, namespace: str, pod: str, container: str, command: Sequence[str]) -> tuple[bool, str]:
        """Runs `command` in the container: whether it exited 0, and its output."""

    def can_i(self, verb: str, resource: str, namespace: str, as_identity: str) -> bool:
        """Whether `as_identity` may `verb` `resource` (e.g. `pods/log`, `jobs.batch`) in the namespace."""


Run = Callable[..., subprocess.CompletedProcess]


def error_reason(stderr: str) -> str:
    if "cannot impersonate" in stderr:
        return "Impersonation"
    if "(NotFound)" in stderr:
        return "NotFound"
    if "(Forbidden)" in stderr:
        return "Forbidden"
    return "Error"


class Kubectl:
    """`Cluster` through the kubectl command, with the kubeconfig at `kubeconfig`."""

    def __init__(self, kubectl: str, kubeconfig: Path, run: Run = subprocess.run) -> None:
        self.kubectl = kubectl
        self.kubeconfig = kubeconfig
        self._run = run

    def _call(self, args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        try:
            return self._run(
                [self.kubectl, *args],
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
                timeout=KUBECTL_TIMEOUT_SECONDS,
                env=self._environment(),
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise KubeError(f"kubectl {args[2] if args[:1] == ['-n'] else args[0]}: {error}") from None

    def _environment(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def _checked(self, args: Sequence[str], stdin: str | None = None) -> str:
        result = self._call(args, stdin)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip() or f"kubectl exited {result.returncode}"
            raise KubeError(message, error_reason(result.stderr))
        return result.stdout

    def _json(self, args: Sequence[str], stdin: str | None = None) -> Any:
        text = self._checked(args, stdin)
        try:
            return json.loads(text)
        except ValueError:
            raise KubeError(f"kubectl answered no JSON: {text[:200]!r}") from None

    @staticmethod
    def _in(namespace: str | None) -> list[str]:
        return ["-n", namespace] if namespace else []

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self._json([*self._in(namespace), "get", kind, name, "-o", "json"])
        except KubeError as error:
            if error.reason == "NotFound":
                return None
            raise

    def list(self, kind: str, namespace: str, *, labels: str | None = None, fields: str | None = None) -> list[dict]:
        selectors = (["-l", labels] if labels else []) + (["--field-selector", fields] if fields else [])
        answer = self._json([*self._in(namespace), "get", kind, *selectors, "-o", "json"])
        items = answer.get("items") if isinstance(answer, dict) else None
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    def create(self, document: dict) -> dict:
        namespace = (document.get("metadata") or {}).get("namespace")
        return self._json([*self._in(namespace), "create", "-f", "-", "-o", "json"], json.dumps(document))

    def delete_jobs(self, names: Sequence[str], namespace: str) -> None:
        self._checked(["-n", namespace, "delete", "job", *names, "--ignore-not-found", "--wait=false"])

    def exec(self, namespace: str, pod: str, container: str, command: Sequence[str]) -> tuple[bool, str]:
        result = self._call(["-n", namespace, "exec", pod, "-c", container, "--", *command])
        return result.returncode == 0, result.stdout + result.stderr

    def can_i(self, verb: str, resource: str, namespace: str, as_identity: str) -> bool:
        # kubectl reads `pods/log` as the pod named "log": a subresource has its own flag.
        kind, _, subresource = resource.partition("/")
        flags = [f"--subresource={subresource}"] if subresource else []
        # Exit 1 means "no" as well as "could not ask": stdout tells them apart.
        result = self._call(["-n", namespace, "auth", "can-i", verb, kind, *flags, f"--as={as_identity}"])
        # "no" may be followed by " - <the authorizer's reason>".
        answer = (result.stdout.split() or [""])[0]
        if answer in ("yes", "no"):
            return answer == "yes"
        message = (result.stderr or result.stdout).strip() or f"kubectl exited {result.returncode}"
        raise KubeError(message, error_reason(result.stderr))
