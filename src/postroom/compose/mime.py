"""MIME composition: rendered content + header values → the exact bytes of one message.

Pure and deterministic: the same inputs give the same bytes (the multipart boundary derives from
the Message-ID), so a preview, a retry and the archive copy agree. Lines end in CRLF and stay
under 998 octets (the policy folds headers; bodies use quoted-printable or base64 when needed).
Values that come from data go through `header_text`, so no data can start a new header.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from enum import StrEnum

from inscriptis import get_text
from inscriptis.model.config import ParserConfig

from postroom.compose.personalize import RenderedContent
from postroom.domain.models import EmailFormat
from postroom.domain.properties import MessageFormat
from postroom.errors import InputError

__all__ = [
    "HeaderValues",
    "Parts",
    "build_message",
    "header_text",
    "html_to_text",
    "make_message_id",
    "parts_for",
]

POLICY = policy.SMTP.clone(max_line_length=78, cte_type="7bit")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_TEXT_CONFIG = ParserConfig(display_links=True)


class Parts(StrEnum):
    MULTIPART = "multipart"
    HTML = "html"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class HeaderValues:
    from_name: str
    from_address: str
    to_name: str
    to_address: str
    reply_to: str
    subject: str
    message_id: str
    date: datetime


def header_text(value: str) -> str:
    """A header value from data: every line break or control character becomes one space."""
    return _CONTROL.sub(" ", value).strip()


def html_to_text(html: str) -> str:
    """A readable text version of HTML: headings, lists and tables kept, links with their URL."""
    text: str = get_text(html, _TEXT_CONFIG)
    return text.strip() + "\n"


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


def build_message(*, content: RenderedContent, parts: Parts, headers: HeaderValues) -> bytes:
    """The message, as the bytes to hand to SMTP (CRLF line ends, ending in CRLF)."""
    msg = EmailMessage(policy=POLICY)
    msg["Date"] = format_datetime(headers.date)
    msg["From"] = Address(header_text(headers.from_name), addr_spec=headers.from_address)
    msg["To"] = Address(header_text(headers.to_name), addr_spec=headers.to_address)
    if headers.reply_to:
        msg["Reply-To"] = headers.reply_to
    msg["Subject"] = header_text(content.subject)
    msg["Message-ID"] = headers.message_id
    text = content.text if content.text.strip() else html_to_text(content.html)
    if parts is Parts.TEXT:
        msg.set_content(text, subtype="plain", charset="utf-8")
    elif parts is Parts.HTML:
        msg.set_content(content.html, subtype="html", charset="utf-8")
    else:
        msg.set_content(text, subtype="plain", charset="utf-8")
        msg.add_alternative(content.html, subtype="html", charset="utf-8")
        for part in msg.iter_parts():
            del part["MIME-Version"]
        digest = hashlib.sha256(headers.message_id.encode()).hexdigest()[:32]
        msg.set_boundary(f"=_pr_{digest}")
    data = msg.as_bytes(policy=POLICY)
    return data if data.endswith(b"\r\n") else data + b"\r\n"
