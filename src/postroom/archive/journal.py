"""The journal format of an archive copy (`archive.format = "journal"`), pure.

Some archives ingest envelope journal reports instead of plain copies: a message of its own
whose first part names the original's sender, recipient, Message-ID and SHA-256, and whose
second part is the original, unaltered, as `message/rfc822` (8bit when it is not ASCII; the
MIME writer keeps lines legal). The report is a function of the original's bytes alone, so a
retried copy is the same report. The outbox and the ledger keep the original's hash; `unwrap()`
gives `archive verify` the original back, byte for byte.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MARKER", "journal_report", "unwrap"]

MARKER = b"X-Postroom-Journal: 1"
_HEADER = re.compile(rb"^(From|To|Message-ID):[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.M | re.I)


def _headers(original: bytes) -> dict[str, str]:
    end = original.find(b"\r\n\r\n")
    head = original[:end if end >= 0 else len(original)]
    found: dict[str, str] = {}
    for match in _HEADER.finditer(head):
        name = match.group(1).decode("ascii").lower()
        value = re.sub(rb"\r\n[ \t]+", b" ", match.group(2)).decode("utf-8", "replace")
        found.setdefault(name, value.strip())
    return found


def journal_report(original: bytes, *, sender: str, archive: str) -> bytes:
    """The report for `original`: from `sender` (the archive's envelope sender) to `archive`."""
    sha = hashlib.sha256(original).hexdigest()
    fields = _headers(original)
    boundary = f"=_postroom_journal_{sha[:32]}"
    encoding = "7bit" if original.isascii() else "8bit"
    facts = (f"Sender: {fields.get('from', '')}\r\nRecipient: {fields.get('to', '')}\r\n"
             f"Message-ID: {fields.get('message-id', '')}\r\nSHA-256: {sha}\r\n")
    head = (f"From: <{sender}>\r\nTo: <{archive}>\r\n"
            f"Subject: Journal report {fields.get('message-id', sha)}\r\n"
            f"Message-ID: <journal.{sha[:40]}@postroom.invalid>\r\n"
            f"MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n').encode()
    return (head + MARKER + b"\r\n\r\n"
            + f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".encode()
            + facts.encode("utf-8")
            + f"\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n"
              f"Content-Transfer-Encoding: {encoding}\r\n\r\n".encode()
            + original + f"\r\n--{boundary}--\r\n".encode())


_BOUNDARY = re.compile(rb'boundary="(=_postroom_journal_[0-9a-f]{32})"')


def unwrap(data: bytes) -> bytes | None:
    """The original inside a journal report (CRLF form), or None if `data` is not one."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or MARKER not in data[:end]:
        return None
    boundary = _BOUNDARY.search(data[:end])
    if boundary is None:
        return None
    mark = b"\r\n--" + boundary.group(1)
    part = data.find(mark + b"\r\nContent-Type: message/rfc822\r\n")
    if part < 0:
        return None
    start = data.find(b"\r\n\r\n", part + len(mark))
    stop = data.rfind(mark + b"--")
    if start < 0 or stop < start:
        return None
    return data[start + 4:stop]
