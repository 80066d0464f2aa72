"""Tolerant MIME reading for bounce parsing: never trust a charset, a boundary or an encoding.

Bounces are written by hundreds of MTAs, some of them broken, and some messages that reach the
errors-to mailbox are hostile. Every helper here returns a best-effort value instead of raising:
unknown charsets fall back to UTF-8 then Latin-1, undecodable transfer encodings give the raw
text, and parts are visited without recursion so that deep nesting cannot exhaust the stack.
"""

from __future__ import annotations

import codecs
import html
import re
from dataclasses import dataclass, field
from email.header import decode_header
from email.message import Message
from email.parser import HeaderParser

__all__ = [
    "MAX_TEXT",
    "ReportParts",
    "collect_parts",
    "decode_header_value",
    "decode_text",
    "field_blocks",
    "header_items",
    "header_text",
    "parse_headers",
]

MAX_TEXT = 256 * 1024  # characters of any one text part worth reading
MAX_PARTS = 500  # parts visited per message; a report has a handful
MAX_HEADERS = 200  # header fields kept from a returned message
MAX_HEADER_VALUE = 2000  # characters kept per header value
MAX_FIELD = 8000  # characters kept per DSN / feedback-report field

# Bounded on purpose: hostile HTML must not make these quadratic.
_TAG = re.compile(r"<(script|style)\b[^<]{0,20000}</\1\s*>|<[^<>]{0,2000}>", re.I)
_BLOCK_TAG = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h\d)\b[^<>]{0,500}>", re.I)


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return codecs.lookup(charset.strip().strip('"')).name
    except (LookupError, ValueError):
        return None


def decode_text(raw: bytes, charset: str | None) -> str:
    """Bytes to text: the declared charset if Python knows it, else UTF-8, else Latin-1."""
    raw = raw[: MAX_TEXT * 4]
    for name in (_codec(charset), "utf-8"):
        if name is None:
            continue
        try:
            return raw.decode(name)[:MAX_TEXT]
        except (UnicodeDecodeError, LookupError):
            continue
    return raw.decode("latin-1")[:MAX_TEXT]


def decode_header_value(value: object) -> str:
    """A header value as readable text (RFC 2047 words decoded, folding removed)."""
    text = str(value)[: MAX_HEADER_VALUE * 4] if value is not None else ""
    if "=?" in text:
        try:
            pieces = []
            for chunk, charset in decode_header(text):
                if isinstance(chunk, bytes):
                    pieces.append(decode_text(chunk, charset))
                else:
                    pieces.append(chunk)
            text = "".join(pieces)
        except Exception:  # a malformed encoded word keeps its raw form
            pass
    # Surrogate escapes stand for undecodable 8-bit bytes in the raw header.
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return re.sub(r"\s*\r?\n\s*", " ", text).strip()[:MAX_HEADER_VALUE]


def header_text(msg: Message, name: str) -> str:
    """One header's value as text, whatever the stdlib returns for it (a str, or a Header
    object when the raw value carries 8-bit bytes), empty when absent."""
    return decode_header_value(msg.get(name, ""))


def header_items(msg: Message) -> tuple[tuple[str, str], ...]:
    """A message's header fields, decoded and capped in number and length."""
    return tuple((str(name), decode_header_value(value))
                 for name, value in msg.items()[:MAX_HEADERS])


def parse_headers(text: str) -> Message:
    """Parse a header block (text/rfc822-headers, or an inline copy of the returned message)."""
    return HeaderParser().parsestr(text[:MAX_TEXT], headersonly=True)


def _part_bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def part_text(part: Message) -> str:
    """The decoded text of a leaf part."""
    text = decode_text(_part_bytes(part), part.get_content_charset())
    if part.get_content_subtype() == "html":
        text = _BLOCK_TAG.sub("\n", text)
        text = html.unescape(_TAG.sub(" ", text))
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _fields_text(part: Message) -> str:
    """The raw text of a message/delivery-status or message/feedback-report part.

    The stdlib parses these into a list of header blocks; an encoded or malformed part ends up
    as a string payload instead. Either way, give back text for `field_blocks`.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        return decode_text(_part_bytes(part), part.get_content_charset())
    blocks = []
    for block in payload:
        if not isinstance(block, Message):
            continue
        lines = [f"{name}: {value}" for name, value in block.items()]
        body = block.get_payload()
        if isinstance(body, str) and body.strip():
            lines.append(body)
        blocks.append("\n".join(lines))
    text = "\n\n".join(blocks)[:MAX_TEXT]
    if header_text(part, "content-transfer-encoding").lower() in _ENCODED:
        # The stdlib split an encoded part into blocks as if it were plain: undo, decode.
        text = decode_text(_decoded_body(part, text), part.get_content_charset())
    return text


_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)\s*:\s?(.*)$")


# A further line of a multi-line SMTP reply pasted unfolded into a field (`550-text`, `550 text`)
_REPLY_LINE = re.compile(r"^[2-5]\d\d[ -](.*)$")


def field_blocks(text: str) -> list[list[tuple[str, str]]]:
    """Blocks of `Name: value` fields separated by blank lines, continuation lines unfolded
    (also a multi-line SMTP reply whose further lines are not indented).

    Field names are lower-cased. Lines that are neither fields nor continuations are dropped:
    MTAs put comments and stray text in these parts.
    """
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, list[str]]] = []

    def close() -> None:
        if current:
            blocks.append([(name, " ".join(parts)[:MAX_FIELD]) for name, parts in current])
            current.clear()

    for line in text[:MAX_TEXT].replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            close()
        elif line[0] in " \t" and current:
            current[-1][1].append(line.strip())
        elif current and (reply := _REPLY_LINE.match(line)):
            current[-1][1].append(reply.group(1).strip())  # "550-..." lines of one reply
        elif match := _FIELD.match(line):
            current.append((match.group(1).lower(), [match.group(2).strip()]))
    close()
    return blocks


@dataclass(slots=True)
class ReportParts:
    """The parts of a report outside the returned message, sorted by what they are for."""

    texts: list[str] = field(default_factory=list)  # text/plain, in order
    html_texts: list[str] = field(default_factory=list)  # text/html, as text
    delivery_status: list[str] = field(default_factory=list)
    feedback_report: list[str] = field(default_factory=list)
    original: Message | None = None  # message/rfc822 or parsed text/rfc822-headers


_ENCODED = frozenset({"base64", "quoted-printable"})
_ORIGINAL_TYPES = frozenset({"message/rfc822", "message/global", "text/rfc822-headers",
                             "message/rfc822-headers", "message/global-headers"})
_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})


def _original_from(part: Message) -> Message | None:
    """The returned message (or its headers) from a message/rfc822-like part."""
    if part.get_content_type().endswith("headers"):
        return parse_headers(part_text(part))
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner = payload[0]
        if header_text(part, "content-transfer-encoding").lower() in _ENCODED:
            body = inner.get_payload()  # an encoded message/rfc822 was parsed as plain
            if isinstance(body, str):
                return parse_headers(decode_text(_decoded_body(part, body), None))
        return inner
    if isinstance(payload, str):
        return parse_headers(part_text(part))
    return None


def _decoded_body(part: Message, body: str) -> bytes:
    probe = Message()
    probe["Content-Transfer-Encoding"] = header_text(part, "content-transfer-encoding")
    probe.set_payload(body)
    decoded = probe.get_payload(decode=True)
    return decoded if isinstance(decoded, bytes) else body.encode("utf-8", "surrogateescape")


def collect_parts(msg: Message) -> ReportParts:
    """Visit the report's parts (iteratively) without descending into the returned message."""
    found = ReportParts()
    stack: list[Message] = [msg]
    visited = 0
    while stack and visited < MAX_PARTS:
        part = stack.pop()
        visited += 1
        ctype = part.get_content_type()
        if ctype in _ORIGINAL_TYPES and part is not msg:
            if found.original is None:
                found.original = _original_from(part)
            continue
        if ctype in _STATUS_TYPES:
            found.delivery_status.append(_fields_text(part))
            continue
        if ctype == "message/feedback-report":
            found.feedback_report.append(_fields_text(part))
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
            continue
        maintype = part.get_content_maintype()
        if maintype == "text" or (part is msg and maintype in ("multipart", "message")):
            text = part_text(part)
            if part.get_content_subtype() == "html":
                found.html_texts.append(text)
            else:
                found.texts.append(text)
    return found
