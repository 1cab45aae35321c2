"""What can go wrong in a request, and the HTTP status each becomes (`server.status_for`)."""

from __future__ import annotations


class Refusal(Exception):
    """A decision not to serve the request: its status and reason go to the caller and the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Failure(Exception):
    """The broker could not do its part: the caller should ask again later (503) unless said otherwise."""

    status = 503


class CredentialUnreadable(Failure):
    """A credential file (PAT, App key, the broker's own token) or the template could not be read."""


class KubernetesError(Failure):
    """The Kubernetes API could not be asked, or refused the broker itself."""


class GitHubUnavailable(Failure):
    """GitHub did not answer usefully within the retries and the request's deadline."""


class GitHubRefused(Failure):
    """GitHub answered no for a reason a retry will not change: the credential or its permissions."""

    status = 502


class NotConfigured(Failure):
    """The broker was started without what this request needs (the GPU runner template)."""

    status = 501
