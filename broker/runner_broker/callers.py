"""Who is asking: a runner pod of the runner namespace, from its token's review, the pod and its owner.

The name and labels of the runner a pod may have come from these alone, never from the
request (`decisions.decide_runner`).
"""

from __future__ import annotations

from dataclasses import dataclass

from runner_broker.config import Config
from runner_broker.decisions import Rules, controller_reference, decide_runner, identity_from_review
from runner_broker.errors import Refusal
from runner_broker.kubernetes import KubernetesClient
from runner_broker.model import Grant, PodIdentity
from runner_broker.secrets import Secret
from runner_broker.template import TemplateSource

OWNER_RESOURCES = {"ReplicaSet": "replicasets", "Job": "jobs"}


@dataclass(frozen=True)
class Caller:
    identity: PodIdentity
    pod: dict
    grant: Grant

    @property
    def terminating(self) -> bool:
        return bool((self.pod.get("metadata") or {}).get("deletionTimestamp"))


class Callers:
    def __init__(self, config: Config, kubernetes: KubernetesClient, templates: TemplateSource) -> None:
        self._config = config
        self._kubernetes = kubernetes
        self._templates = templates

    def authorize(self, token: Secret | None, seen: dict[str, object], *, allow_terminating: bool = False) -> Caller:
        """The runner pod that holds `token`; Refusal(401/403) otherwise. `seen` gathers names for the log."""
        config = self._config
        if token is None:
            raise Refusal(401, "no bearer token")
        identity = identity_from_review(self._kubernetes.review_token(token, config.audience), config.audience)
        seen.update(pod=identity.pod_name, namespace=identity.namespace)
        # Only runner pods' own ServiceAccount in our own namespace gets its pod read; any other is refused unread.
        ours = (identity.namespace, identity.service_account) == (
            config.runner_namespace,
            config.runner_service_account,
        )
        pod = self._kubernetes.get("pods", identity.pod_name) if ours else None
        reference = controller_reference(pod) or {}
        resource = OWNER_RESOURCES.get(str(reference.get("kind")))
        owner = self._kubernetes.get(resource, str(reference["name"])) if resource and reference.get("name") else None
        images = self._templates.load().images if resource == "jobs" and self._templates.configured else ()
        rules = Rules(config.runner_namespace, config.runner_service_account, config.base_runner_deployment, images)
        grant = decide_runner(identity, pod, owner, rules, allow_terminating=allow_terminating)
        seen["runner"] = grant.name
        return Caller(identity, pod or {}, grant)
