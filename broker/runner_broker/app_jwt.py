"""A GitHub App's own JWT (RS256), which buys installation tokens. The only user of `cryptography`."""

from __future__ import annotations

import base64
import json
from typing import Any

from runner_broker.errors import CredentialUnreadable
from runner_broker.secrets import Secret

JWT_LIFETIME_SECONDS = 540  # GitHub allows ten minutes
CLOCK_SKEW_SECONDS = 60


def load_rsa_private_key(pem: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise CredentialUnreadable(
            "a GitHub App needs the Python package cryptography, which is not installed"
        ) from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialUnreadable("GITHUB_APP_PRIVATE_KEY_FILE does not hold an unencrypted PEM RSA private key")
    return key


def app_jwt(app_id: str, private_key_pem: bytes, now: int) -> Secret:
    """The App's JWT, valid for nine minutes from a minute back (for clock skew)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = load_rsa_private_key(private_key_pem)
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64url(
        json.dumps(
            {"iat": now - CLOCK_SKEW_SECONDS, "exp": now + JWT_LIFETIME_SECONDS, "iss": app_id}, separators=(",", ":")
        ).encode()
    )
    signing_input = f"{header}.{claims}".encode("ascii")
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return Secret(f"{header}.{claims}.{_b64url(signature)}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
