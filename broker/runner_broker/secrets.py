"""Credentials: a wrapper that never prints its value, and the files they are read from, afresh on each use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from runner_broker.errors import CredentialUnreadable

TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")
FILE_PATH = re.compile(r"[A-Za-z0-9_./@+-]{1,255}")


class Secret:
    """A credential or token. Its value leaves only through `reveal()`, never str, repr, format or pickle."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled")


def read_file(path: Path, variable: str) -> bytes:
    """A credential file's bytes, read afresh so that a rotated Secret takes effect without a restart."""
    try:
        data = path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CredentialUnreadable(f"{variable} ({shown_path(path)}) cannot be read: {reason}") from None
    if not data.strip():
        raise CredentialUnreadable(f"{variable} ({shown_path(path)}) is empty")
    return data


def read_token(path: Path, variable: str) -> Secret:
    """A one-line token from a file; anything else would break the Authorization header."""
    token = read_file(path, variable).decode("utf-8", "replace").strip()
    if not TOKEN.fullmatch(token):
        raise CredentialUnreadable(f"{variable} ({shown_path(path)}) does not hold a single-line token")
    return Secret(token)


def shown_path(path: Path) -> str:
    """The path, unless it looks like something else: a token or key pasted where its file's path belongs."""
    text = str(path)
    return text if "/" in text and FILE_PATH.fullmatch(text) else "its value is not a file path, not shown"


def bearer_token(header: str | None) -> Secret | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, value = (header or "").strip().partition(" ")
    return Secret(value.strip()) if scheme.lower() == "bearer" and value.strip() else None
