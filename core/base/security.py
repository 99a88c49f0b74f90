"""Secrets: random, at least 32 bytes, stored only as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_BYTES = 32

#: prefixes tell an operator (and a secret scanner) what a leaked string is
ENROLLMENT_PREFIX = "nxe"
DEVICE_PREFIX = "nxd"
ADMIN_PREFIX = "nxa"
#: the one-time secret of an enrollment answer, presented by a retry after a lost answer
ENROLLMENT_SECRET_PREFIX = "nxr"  # noqa: S105 - a prefix, not a secret
#: console secrets: a one-time sign-in link, an OpenID Connect state, a session cookie
CONSOLE_LINK_PREFIX = "nxl"
CONSOLE_SESSION_PREFIX = "nxs"


def new_secret(prefix: str) -> str:
    """A fresh bearer secret: ``prefix_`` followed by 32 random bytes, URL-safe base64 (43 characters)."""
    return f"{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def new_public_id(prefix: str) -> str:
    """A short public identifier for a credential (not a secret)."""
    return f"{prefix}_{secrets.token_hex(6)}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def matches(secret: str, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented secret against a stored hash."""
    if not stored_hash:
        return False
    return hmac.compare_digest(hash_secret(secret), stored_hash)
