"""Recognizing an archived copy, pure: strip what the receiving MTA prepended, hash the rest,
read the Message-ID and what Postroom identity it carries.

An archive store (a Maildir written by Postfix, an IMAP folder, a directory sink) keeps the bytes
Postroom sent with a *trace block* on top: the header fields the receiving MTA and the delivery
agent prepend (Return-Path, Received, Delivered-To, X-Original-To, ...). Only that leading block
is removed, up to the first field that is not a trace field, so a trace-like field inside the
original header is kept. Maildir files use bare LF line ends: a copy without any CRLF gets CRLF
back, the form in which Postroom sent (and hashed) it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from postroom.archive.journal import unwrap

__all__ = [
    "TRACE_FIELDS",
    "CopyId",
    "Fingerprint",
    "Kind",
    "fingerprint",
    "parse_message_id",
    "strip_trace",
]

TRACE_FIELDS = frozenset({
    "return-path", "received", "delivered-to", "x-original-to", "envelope-to",
    "x-envelope-from", "x-envelope-to", "x-delivered-to", "received-spf",
    "authentication-results", "arc-seal", "arc-message-signature",
    "arc-authentication-results",
})
_HEADER_LIMIT = 256 * 1024  # a header block longer than this is not read for a Message-ID
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def strip_trace(data: bytes) -> bytes:
    """`data` without the leading trace block, with CRLF line ends."""
    if b"\r\n" not in data:
        data = data.replace(b"\n", b"\r\n")
    offset = 0
    in_trace = False
    while offset < len(data):
        end = data.find(b"\n", offset)
        end = len(data) if end < 0 else end + 1
        line = data[offset:end]
        if line[:1] in (b" ", b"\t"):  # a continuation line: part of the field before it
            if not in_trace:
                break
        else:
            match = _FIELD.match(line)
            if match is None or match.group(1).decode("ascii").lower() not in TRACE_FIELDS:
                break
            in_trace = True
        offset = end
    return data[offset:]


def _header_value(data: bytes, name: bytes) -> str | None:
    head = data[:_HEADER_LIMIT]
    cut = re.search(rb"\r?\n\r?\n", head)
    if cut is not None:
        head = head[:cut.start()]
    value: bytes | None = None
    for line in _lines(head):
        if value is not None and line[:1] in (b" ", b"\t"):
            value += line.strip(b"\r\n")
            continue
        if value is not None:
            break
        match = _FIELD.match(line)
        if match is not None and match.group(1).lower() == name:
            value = line[match.end():].strip(b"\r\n")
    return None if value is None else value.decode("utf-8", "replace").strip()


class Kind(StrEnum):
    LOG = "log"  # <log.delivery.salt@domain>
    PROOF = "proof"  # <proof.N.delivery.salt@domain>
    OTHER = "other"  # not a Postroom Message-ID


@dataclass(frozen=True, slots=True)
class CopyId:
    kind: Kind
    log_id: int | None = None
    delivery_id: int | None = None


_LOG_ID = re.compile(r"^<(\d+)\.(\d+)\.[A-Za-z0-9_-]+@[^>]+>$")
_PROOF_ID = re.compile(r"^<proof\.(\d+)\.(\d+)\.[A-Za-z0-9_-]+@[^>]+>$")


def parse_message_id(message_id: str | None) -> CopyId:
    """What identity a Message-ID claims (to be checked against the store: the salt is not)."""
    if message_id:
        if match := _LOG_ID.match(message_id):
            return CopyId(Kind.LOG, int(match.group(1)), int(match.group(2)))
        if match := _PROOF_ID.match(message_id):
            return CopyId(Kind.PROOF, None, int(match.group(2)))
    return CopyId(Kind.OTHER)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    message_id: str | None
    sha256: str
    size: int


def fingerprint(data: bytes) -> Fingerprint:
    """The Message-ID and the SHA-256 and size of the copy as Postroom sent it."""
    original = strip_trace(data)
    inner = unwrap(original)  # a journal report: the original it carries
    if inner is not None:
        original = inner
    return Fingerprint(_header_value(original, b"message-id"),
                       hashlib.sha256(original).hexdigest(), len(original))
