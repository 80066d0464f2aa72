"""Signed tokens for links in messages (mirror page, unsubscribe): pure HMAC-SHA256.

A token is `<log id>.<128-bit MAC>`: the id says which message, the MAC (keyed with the instance
secret and bound to the link's purpose) makes it unguessable; change one character and it no
longer verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = [
    "MIRROR",
    "UNSUBSCRIBE",
    "VERP",
    "make_token",
    "read_token",
    "verp_address",
    "verp_log_id",
]

MIRROR = "mirror"
UNSUBSCRIBE = "unsubscribe"
VERP = "verp"


def _mac(secret: bytes, purpose: str, log_id: int) -> str:
    digest = hmac.digest(secret, f"{purpose}:{log_id}".encode(), hashlib.sha256)[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(secret: bytes, purpose: str, log_id: int) -> str:
    return f"{log_id}.{_mac(secret, purpose, log_id)}"


def read_token(secret: bytes, purpose: str, token: str) -> int | None:
    """The log id a token names, or None when it does not verify."""
    head, _, mac = token.partition(".")
    if not (head.isascii() and head.isdecimal()) or len(head) > 18 or not mac:
        return None
    log_id = int(head)
    if not hmac.compare_digest(mac, _mac(secret, purpose, log_id)) or str(log_id) != head:
        return None
    return log_id


def verp_address(secret: bytes, errors_to: str, log_id: int) -> str:
    """The envelope sender of one message: errors-to with a signed token (`box+token@domain`)."""
    local, _, domain = errors_to.rpartition("@")
    return f"{local}+{make_token(secret, VERP, log_id)}@{domain}"


def verp_log_id(secret: bytes, address: str) -> int | None:
    """The log id a bounce's envelope recipient names, or None if it carries no valid token."""
    local = address.strip().strip("<>").rpartition("@")[0]
    _, plus, token = local.rpartition("+")
    return read_token(secret, VERP, token) if plus else None
