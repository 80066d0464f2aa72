"""Signed tokens for links in messages (mirror page, unsubscribe), the return path (VERP) and
the Message-ID: pure HMAC-SHA256.

A token is `<log id>.<128-bit MAC>`: the id says which message, the MAC (keyed with the instance
secret and bound to the link's purpose) makes it unguessable; change one character and it no
longer verifies. The Message-ID `<log id>.<delivery id>.<MAC>@domain` carries its own MAC over
both ids, so knowing one's own Message-ID tells nothing about another message's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

__all__ = [
    "MESSAGE_ID",
    "MIRROR",
    "UNSUBSCRIBE",
    "VERP",
    "make_token",
    "message_id_log",
    "message_id_proof",
    "read_token",
    "verp_address",
    "verp_log_id",
]

MIRROR = "mirror"
UNSUBSCRIBE = "unsubscribe"
VERP = "verp"
MESSAGE_ID = "message-id"
MAX_ID_DIGITS = 18  # more digits than any id the database holds: read no further

# A Message-ID Postroom wrote: log id, delivery id, 22 characters of URL-safe base64 (128 bits).
_MESSAGE_ID = re.compile(r"(?<![\w.])(\d{1,18})\.(\d{1,18})\.([A-Za-z0-9_-]{22})@")


def _mac(secret: bytes, purpose: str, log_id: int) -> str:
    digest = hmac.digest(secret, f"{purpose}:{log_id}".encode(), hashlib.sha256)[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(secret: bytes, purpose: str, log_id: int) -> str:
    return f"{log_id}.{_mac(secret, purpose, log_id)}"


def read_token(secret: bytes, purpose: str, token: str) -> int | None:
    """The log id a token names, or None when it does not verify."""
    head, _, mac = token.partition(".")
    if not (head.isascii() and head.isdecimal()) or len(head) > MAX_ID_DIGITS or not mac:
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


def message_id_proof(secret: bytes, log_id: int, delivery_id: int) -> str:
    """The MAC part of a message's Message-ID, over its log and delivery ids."""
    digest = hmac.digest(secret, f"{MESSAGE_ID}:{log_id}.{delivery_id}".encode(),
                         hashlib.sha256)[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def message_id_log(secret: bytes, value: str) -> int | None:
    """The log id a Message-ID written by Postroom names, or None when none in `value`
    verifies against the secret."""
    for match in _MESSAGE_ID.finditer(value):
        log_id, delivery_id = int(match[1]), int(match[2])
        if hmac.compare_digest(match[3], message_id_proof(secret, log_id, delivery_id)):
            return log_id
    return None
