"""MIME composition: rendered content + header values → the exact bytes of one message.

Pure and deterministic: the same inputs give the same bytes (the multipart boundary derives from
the Message-ID), so a retry and the archive copy agree. Lines end in CRLF and never exceed 998
octets; each body part takes the smallest legal transfer encoding (7bit, quoted-printable or
base64) for the delivery's charset. A character the charset cannot represent raises
`EncodingError` naming it and the field: nothing is sent with replacement characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from enum import StrEnum

from postroom.compose.charsets import Charset, first_unrepresentable
from postroom.compose.headers import address_header, header_text, unstructured_header
from postroom.compose.html import html_to_text
from postroom.compose.personalize import RenderedContent
from postroom.domain.models import EmailFormat
from postroom.domain.properties import MessageFormat
from postroom.errors import InputError

__all__ = [
    "EncodingError",
    "HeaderValues",
    "Parts",
    "body_part",
    "build_message",
    "decoded_part",
    "header_text",
    "html_to_text",
    "make_message_id",
    "parts_for",
]

_MAX_LINE = 998
UTF8 = Charset("utf-8", "utf-8")


class Parts(StrEnum):
    MULTIPART = "multipart"
    HTML = "html"
    TEXT = "text"


class EncodingError(InputError):
    """Content holds a character the delivery's charset cannot represent."""


@dataclass(frozen=True, slots=True)
class HeaderValues:
    from_name: str
    from_address: str
    to_name: str
    to_address: str  # header form: A-label domain (or UTF-8 when the message needs SMTPUTF8)
    reply_to: str
    subject: str
    message_id: str
    date: datetime
    extra: tuple[tuple[str, str], ...] = ()  # after the standard headers, in order


def make_message_id(*, log_id: int, delivery_id: int, salt: str, domain: str) -> str:
    """The Message-ID carries the delivery-log identity (and an unguessable salt)."""
    return f"<{log_id}.{delivery_id}.{salt}@{domain}>"


def parts_for(
    fmt: MessageFormat, email_format: EmailFormat, *, has_html: bool, has_text: bool
) -> Parts:
    """Which parts a recipient gets; InputError when the content cannot produce them."""
    if fmt is MessageFormat.RECIPIENT:
        wanted = {EmailFormat.TEXT: Parts.TEXT, EmailFormat.HTML: Parts.HTML}.get(
            email_format, Parts.MULTIPART
        )
    else:
        wanted = Parts(fmt.value)
    if not has_html and not has_text:
        raise InputError("the delivery has neither HTML nor text content")
    if wanted is not Parts.TEXT and not has_html:
        return Parts.TEXT  # text-only content: send what there is
    return wanted


def _encoded(text: str, charset: Charset, where: str) -> bytes:
    problem = first_unrepresentable(text, charset)
    if problem is not None:
        raise EncodingError(problem.describe(charset, where))
    return charset.encode(text)


def part_bytes(text: str, charset: Charset, where: str) -> list[bytes]:
    """The lines of one text part in `charset` (what transfer decoding gives back)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [_encoded(line, charset, where) for line in lines]  # stateful codecs reset per line


def decoded_part(text: str, charset: Charset, where: str) -> bytes:
    """The bytes a reader gets back from the part after transfer decoding (mirror pages)."""
    return b"\r\n".join(part_bytes(text, charset, where)) + b"\r\n"


def body_part(text: str, charset: Charset, where: str) -> tuple[str, bytes]:
    """(transfer encoding, CRLF body) for one text part: the smallest legal choice."""
    encoded = part_bytes(text, charset, where)
    raw = b"\r\n".join(encoded) + b"\r\n"
    if raw.isascii() and b"\0" not in raw and all(len(line) <= _MAX_LINE for line in encoded):
        return "7bit", raw
    qp = binascii.b2a_qp(b"\n".join(encoded) + b"\n", istext=True).replace(b"\n", b"\r\n")
    b64 = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return ("quoted-printable", qp) if len(qp) <= len(b64) else ("base64", b64)


def _part_headers(subtype: str, charset: Charset, cte: str) -> str:
    return (f'Content-Type: text/{subtype}; charset="{charset.mime}"\r\n'
            f"Content-Transfer-Encoding: {cte}\r\n")


def _guarded(field: str, charset: Charset, make: Callable[..., str], *args: str) -> str:
    """A header line; EncodingError names the field when the charset cannot represent it."""
    try:
        return make(*args, charset)
    except UnicodeEncodeError as exc:
        text = str(exc.object)
        character = text[exc.start]
        raise EncodingError(f"{field}: the character {character!r} (U+{ord(character):04X}) at "
                            f"position {exc.start + 1} cannot be encoded in {charset.mime}"
                            ) from None


def build_message(*, content: RenderedContent, parts: Parts, headers: HeaderValues,
                  charset: Charset = UTF8, utf8_headers: bool = False) -> bytes:
    """The message, as the bytes to hand to SMTP (CRLF line ends, ending in CRLF).

    `utf8_headers` allows raw UTF-8 in headers (RFC 6532), for SMTPUTF8 recipients.
    """
    lines = [
        f"Date: {format_datetime(headers.date)}",
        _guarded("from_name", charset, address_header, "From", headers.from_name,
                 headers.from_address),
        _guarded("to", charset, address_header, "To", headers.to_name, headers.to_address),
    ]
    if headers.reply_to:
        lines.append(f"Reply-To: {header_text(headers.reply_to)}")
    lines.append(_guarded("subject", charset, unstructured_header, "Subject", content.subject))
    lines.append(f"Message-ID: {headers.message_id}")
    for name, value in headers.extra:
        lines.append(_guarded(name, charset, unstructured_header, name, value))
    lines.append("MIME-Version: 1.0")
    text = content.text if content.text.strip() else html_to_text(content.html)
    if parts is Parts.MULTIPART:
        boundary = "=_pr_" + hashlib.sha256(headers.message_id.encode()).hexdigest()[:32]
        lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
        head = "\r\n".join(lines) + "\r\n\r\n"
        body = bytearray()
        for subtype, source in (("plain", text), ("html", content.html)):
            cte, data = body_part(source, charset, "text" if subtype == "plain" else "html")
            body += f"--{boundary}\r\n{_part_headers(subtype, charset, cte)}\r\n".encode()
            body += data + b"\r\n"  # that CRLF belongs to the delimiter (RFC 2046 §5.1.1)
        body += f"--{boundary}--\r\n".encode()
    else:
        subtype, source = ("plain", text) if parts is Parts.TEXT else ("html", content.html)
        cte, data = body_part(source, charset, "text" if subtype == "plain" else "html")
        head = "\r\n".join(lines) + "\r\n" + _part_headers(subtype, charset, cte) + "\r\n"
        body = bytearray(data)
    return head.encode("utf-8" if utf8_headers else "ascii") + bytes(body)
