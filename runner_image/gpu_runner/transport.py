"""One HTTP request with urllib, for the broker, GitHub and Google alike.

No redirects are followed (a redirect would carry the Authorization header elsewhere),
answers are read up to 1 MiB, and a request that gets no answer raises `Unreachable`
with the method and URL only: URLs here never hold a credential, headers do.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

MAX_ANSWER_BYTES = 1 << 20
USER_AGENT = "gke-gpu-runners-gpu-runner"


class Unreachable(Exception):
    """No answer: connection refused or reset, timeout, name not resolved."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    """The parsed JSON answer; None when it is empty or not JSON."""
    text: str
    """The answer's first 300 characters, for messages."""

    def reason(self) -> str:
        """What the server said went wrong, from the usual JSON error shapes, else its text."""
        body = self.body
        if isinstance(body, dict):
            for key in ("error_description", "error", "message"):
                value = body.get(key)
                if isinstance(value, dict):
                    value = value.get("message")
                if isinstance(value, str) and value:
                    return " ".join(value.split())[:300]
        return " ".join(self.text.split())[:300] or "(no message)"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # the 3xx then comes back as an answer


def request(
    method: str,
    url: str,
    *,
    authorization: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    proxies: bool = True,
) -> Answer:
    """Send one request; `body` goes as JSON. `proxies=False` ignores the *_proxy variables."""
    data = None if body is None else json.dumps(body).encode()
    sent = {"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
    if data is not None:
        sent["Content-Type"] = "application/json"
    if authorization:
        sent["Authorization"] = authorization
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if not proxies:
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(
            urllib.request.Request(url, data=data, method=method, headers=sent), timeout=timeout
        ) as response:
            return _answer(response.status, response.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as error:
        with error:
            return _answer(error.code, error.read(MAX_ANSWER_BYTES))
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, "reason", None) or str(error) or error.__class__.__name__
        raise Unreachable(f"{method} {url}: {reason}") from None


def _answer(status: int, raw: bytes) -> Answer:
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    return Answer(status, body, text[:300])
