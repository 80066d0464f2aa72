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

from postroom.compose.charsets import Charset, Unrepresentable
from postroom.compose.headers import address_header, header_text, unstructured_header
from postroom.compose.html import html_to_text
from postroom.compose.personalize import RenderedContent
from postroom.compose.tokens import message_id_proof
from postroom.domain.models import EmailFormat
from postroom.domain.properties import MessageFormat
from postroom.errors import InputError

__all__ = [
    "EncodingError",
    "HeaderValues",
    "MessageWriter",
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
    reply_to: str  # the address, in header form like from_address; empty: no Reply-To
    subject: str
    message_id: str
    date: datetime
    extra: tuple[tuple[str, str], ...] = ()  # after the standard headers, in order
    reply_to_name: str = ""


def make_message_id(*, log_id: int, delivery_id: int, secret: bytes, domain: str) -> str:
    """The Message-ID carries the delivery-log identity and a MAC over it (the instance
    secret), so a bounce that returns it can be attributed and no other can be made up."""
    return f"<{log_id}.{delivery_id}.{message_id_proof(secret, log_id, delivery_id)}@{domain}>"


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
    try:
        return charset.encode(text)
    except UnicodeEncodeError as exc:
        if charset.is_utf8:  # only a lone surrogate: not a charset problem
            raise
        problem = Unrepresentable(text[exc.start], exc.start)
        raise EncodingError(problem.describe(charset, where)) from None


def part_bytes(text: str, charset: Charset, where: str) -> list[bytes]:
    """The lines of one text part in `charset` (what transfer decoding gives back)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [_encoded(line, charset, where) for line in lines]  # stateful codecs reset per line


def _part_lf(text: str, charset: Charset, where: str) -> bytes:
    """The part's lines in `charset`, each ended by LF: `b"\\n".join(part_bytes(...)) + b"\\n"`.

    A stateless charset encodes the whole text at once: its bytes are the lines' bytes with
    LF between them (only a line feed encodes to 0x0A). Anything the charset cannot represent
    goes the line by line way, whose error names the position in the line.
    """
    if charset.stateless:
        try:
            data = charset.encode(text.replace("\r\n", "\n").replace("\r", "\n"))
        except UnicodeEncodeError:
            pass
        else:
            return data if data.endswith(b"\n") else data + b"\n"
    return b"\n".join(part_bytes(text, charset, where)) + b"\n"


def decoded_part(text: str, charset: Charset, where: str) -> bytes:
    """The bytes a reader gets back from the part after transfer decoding (mirror pages)."""
    return _part_lf(text, charset, where).replace(b"\n", b"\r\n")


def body_part(text: str, charset: Charset, where: str) -> tuple[str, bytes]:
    """(transfer encoding, CRLF body) for one text part: the smallest legal choice."""
    cte, body, _decoded = _body(text, charset, where)
    return cte, body


def _qp(lf: bytes) -> bytes:
    return binascii.b2a_qp(lf, istext=True)


class _QpLines:
    """Quoted-printable, line by line, remembering the lines it has encoded.

    `binascii.b2a_qp` encodes each line on its own when the data has no CR and ends with LF
    (its soft breaks, trailing-space and leading-dot rules look no further than the line), so
    the encoding of the whole is the encodings of its lines end to end. The lines every
    message of a delivery shares (the template's static text) are encoded once; at most
    `limit` bytes are remembered (the first lines met: the shared ones come with the first
    message).
    """

    def __init__(self, limit: int = 1 << 20):
        self._lines: dict[bytes, bytes] = {}
        self._room = limit

    def __call__(self, lf: bytes) -> bytes:
        lines = lf.split(b"\n")
        lines.pop()  # after the final LF
        known = self._lines
        encoded = []
        for line in lines:
            qp = known.get(line)
            if qp is None:
                qp = binascii.b2a_qp(line + b"\n", istext=True)
                if self._room > 0:
                    self._room -= len(line) + len(qp)
                    known[line] = qp
            encoded.append(qp)
        return b"".join(encoded)


def _body(text: str, charset: Charset, where: str,
          qp: Callable[[bytes], bytes] = _qp) -> tuple[str, bytes, bytes]:
    """(transfer encoding, CRLF body, decoded CRLF bytes) of one text part.

    7bit when every line is short ASCII without NUL; else quoted-printable unless base64 is
    shorter. The length of base64 is known from the size alone (76 characters and a line
    break per 57 bytes), so it is only encoded when it is the one chosen. `lf` has no CR:
    line ends are normalized, and no character but CR encodes to 0x0D in these charsets.
    """
    lf = _part_lf(text, charset, where)
    raw = lf.replace(b"\n", b"\r\n")
    if lf.isascii() and b"\0" not in lf and max(map(len, lf.split(b"\n"))) <= _MAX_LINE:
        return "7bit", raw, raw
    encoded = qp(lf)
    b64_length = 4 * -(-len(raw) // 3) + 2 * -(-len(raw) // 57)  # with CRLF line ends
    if len(encoded) + encoded.count(b"\n") <= b64_length:
        return "quoted-printable", encoded.replace(b"\n", b"\r\n"), raw
    return "base64", base64.encodebytes(raw).replace(b"\n", b"\r\n"), raw


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


class MessageWriter:
    """Writes the messages of one delivery: what they share is made once, on first use.

    From, Reply-To (an address and an optional display name, written as From is) and the
    operator's extra headers are the same in every message; `write` adds one recipient's
    Date, To, Subject, Message-ID, per-message headers and bodies. A shared header that fails
    (EncodingError) is not kept, so it fails every message at the same point as before, after
    the errors of the headers above it.
    """

    def __init__(self, *, from_name: str, from_address: str, reply_to: str,
                 reply_to_name: str = "", extra: tuple[tuple[str, str], ...] = (),
                 charset: Charset = UTF8):
        self.charset = charset
        self._from_values = (from_name, from_address)
        # Like From: the name as a phrase (encoded words when needed), the address as given
        # (header form), without line breaks even when it is invalid (analysis reports it).
        self._reply_to_values = (reply_to_name, header_text(reply_to)) if reply_to else None
        self._extra = extra
        self._from_line: str | None = None
        self._reply_to_line: str | None = None
        self._extra_lines: list[str] | None = None
        self._qp = _QpLines()

    def write(self, *, content: RenderedContent, parts: Parts, to_name: str, to_address: str,
              message_id: str, date: datetime, headers: tuple[tuple[str, str], ...] = (),
              utf8_headers: bool = False) -> tuple[bytes, bytes | None]:
        """(the message, the decoded bytes of its HTML part if it has one).

        `headers` come before the shared extra headers; `utf8_headers` allows raw UTF-8 in
        headers (RFC 6532), for SMTPUTF8 recipients.
        """
        charset = self.charset
        lines = [f"Date: {format_datetime(date)}", self._from(),
                 _guarded("to", charset, address_header, "To", to_name, to_address)]
        if self._reply_to_values is not None:
            lines.append(self._reply_to())
        lines.append(_guarded("subject", charset, unstructured_header, "Subject",
                              content.subject))
        lines.append(f"Message-ID: {message_id}")
        for name, value in headers:
            lines.append(_guarded(name, charset, unstructured_header, name, value))
        lines += self._extras()
        lines.append("MIME-Version: 1.0")
        html: bytes | None = None
        if parts is Parts.MULTIPART:
            boundary = "=_pr_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
            lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
            head = "\r\n".join(lines) + "\r\n\r\n"
            text_cte, text, _decoded = _body(_text_of(content), charset, "text", self._qp)
            html_cte, html_body, html = _body(content.html, charset, "html", self._qp)
            body = bytearray()
            for subtype, cte, data in (("plain", text_cte, text), ("html", html_cte, html_body)):
                body += f"--{boundary}\r\n{_part_headers(subtype, charset, cte)}\r\n".encode()
                body += data + b"\r\n"  # that CRLF belongs to the delimiter (RFC 2046 §5.1.1)
            body += f"--{boundary}--\r\n".encode()
        else:
            subtype, source = (("plain", _text_of(content)) if parts is Parts.TEXT
                               else ("html", content.html))
            cte, data, decoded = _body(source, charset,
                                       "text" if subtype == "plain" else "html", self._qp)
            head = "\r\n".join(lines) + "\r\n" + _part_headers(subtype, charset, cte) + "\r\n"
            body = bytearray(data)
            html = decoded if subtype == "html" else None
        try:
            encoded = head.encode("utf-8" if utf8_headers else "ascii")
        except UnicodeEncodeError as exc:  # a raw non-ASCII address in a header line
            line = head[:exc.start].rpartition("\n")[2] + head[exc.start:].partition("\r")[0]
            raise EncodingError(f"{line.partition(':')[0]}: {line!r} needs SMTPUTF8, which "
                                "a message to this recipient cannot use") from None
        return encoded + bytes(body), html

    def shared_lines(self) -> tuple[str, str | None, list[str]]:
        """(From, Reply-To or None, the extra headers): the header lines every message shares,
        as `write` puts them (EncodingError when one cannot be encoded)."""
        reply_to = self._reply_to() if self._reply_to_values is not None else None
        return self._from(), reply_to, self._extras()

    def _from(self) -> str:
        if self._from_line is None:
            name, address = self._from_values
            self._from_line = _guarded("from_name", self.charset, address_header, "From", name,
                                       address)
        return self._from_line

    def _reply_to(self) -> str:
        if self._reply_to_line is None:
            assert self._reply_to_values is not None
            name, address = self._reply_to_values
            self._reply_to_line = _guarded("reply_to", self.charset, address_header, "Reply-To",
                                           name, address)
        return self._reply_to_line

    def _extras(self) -> list[str]:
        if self._extra_lines is None:
            self._extra_lines = [_guarded(name, self.charset, unstructured_header, name, value)
                                 for name, value in self._extra]
        return self._extra_lines


def _text_of(content: RenderedContent) -> str:
    """The text part: the text content, or the HTML's text when there is none."""
    return content.text if content.text.strip() else html_to_text(content.html)


def build_message(*, content: RenderedContent, parts: Parts, headers: HeaderValues,
                  charset: Charset = UTF8, utf8_headers: bool = False) -> bytes:
    """The message, as the bytes to hand to SMTP (CRLF line ends, ending in CRLF).

    `utf8_headers` allows raw UTF-8 in headers (RFC 6532), for SMTPUTF8 recipients.
    """
    writer = MessageWriter(from_name=headers.from_name, from_address=headers.from_address,
                           reply_to=headers.reply_to, reply_to_name=headers.reply_to_name,
                           charset=charset)
    data, _html = writer.write(content=content, parts=parts, to_name=headers.to_name,
                               to_address=headers.to_address, message_id=headers.message_id,
                               date=headers.date, headers=headers.extra,
                               utf8_headers=utf8_headers)
    return data
