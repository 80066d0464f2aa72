"""`parse_bounce(bytes) -> ParsedBounce`: what a message in the errors-to mailbox reports.

The order is Mailman's: a standard report first (RFC 5965 feedback report, RFC 3464
delivery-status), then the known non-standard report formats (Hotmail's JMRP, Amazon SES's
JSON notifications, Apple's unsubscribe mail), then the wording of non-standard bounces, then
auto-replies. A message that is none of these comes back as `BounceKind.UNKNOWN`, never as an
exception: the caller keeps it for a person to look at.

Pure: bytes in, a value out; no clock, no IO.
"""

from __future__ import annotations

import email
import email.parser
import email.utils
import json
import re
from collections.abc import Iterable
from dataclasses import replace
from email.message import Message

from postroom.bounces._heuristics import (
    Autoreply,
    autoreply_signal,
    is_autoreply,
    is_bounce,
    is_delay,
    is_mailer,
    recipients_from_text,
)
from postroom.bounces._mime import (
    MAX_TEXT,
    ReportParts,
    collect_parts,
    field_blocks,
    header_items,
    header_text,
    parse_headers,
)
from postroom.bounces._text import (
    enhanced_status,
    field_address,
    smtp_stage,
    split_original,
    strip_address,
    unannounced_copy,
)
from postroom.bounces.model import BouncedRecipient, BounceKind, ParsedBounce

__all__ = ["MAX_BYTES", "parse_bounce"]

MAX_BYTES = 8 * 1024 * 1024  # a bounce is read up to this size; the rest is a returned copy
MAX_RECIPIENTS = 100  # Postroom sends one recipient per message; a report naming more is odd
_DELAYED = frozenset({"delayed"})
_SUCCESS = frozenset({"delivered", "relayed", "expanded", "deliverable"})
_INLINE_FIELDS = re.compile(r"^\s*(?:final-recipient|original-recipient)\s*:", re.I | re.M)
# More multipart boundaries than any real report has: 3,000 nested parts (200 KB) took 5 s
# to parse; past this many the message is read as headers and plain text.
MAX_BOUNDARIES = 100
_BOUNDARY = re.compile(rb"boundary\s*=", re.I)


def parse_bounce(data: bytes) -> ParsedBounce:
    """Parse one message from the errors-to mailbox. Never raises: hostile or broken input
    yields a `ParsedBounce` of kind UNKNOWN (or whatever could be read before the damage)."""
    try:
        return _parse(bytes(data[:MAX_BYTES]))
    except Exception:  # the last guard; parsing must not stop the intake
        return ParsedBounce(BounceKind.UNKNOWN, (), None, (), None, "", "")


def _addresses(value: str) -> list[str]:
    return [a for _, a in email.utils.getaddresses([value]) if "@" in a]


class _Context:
    """What every step needs: the message, its parts and the returned copy."""

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.parts: ReportParts = collect_parts(msg)
        self.subject = header_text(msg, "subject")
        self.from_ = header_text(msg, "from")
        self.headers = header_items(msg)
        text = ("\n".join(self.parts.texts) or "\n".join(self.parts.html_texts))[:MAX_TEXT]
        self.text, inline = split_original(text)
        if inline is None and _INLINE_FIELDS.search(self.text) is None:
            self.text, inline = unannounced_copy(self.text) or (self.text, None)
        self.original = self.parts.original
        if self.original is None and inline is not None:
            self.original = parse_headers(inline)

    def original_header(self, name: str) -> str:
        if self.original is None:
            return ""
        return header_text(self.original, name)

    def result(self, kind: BounceKind, recipients: Iterable[BouncedRecipient],
               feedback_type: str | None = None) -> ParsedBounce:
        message_id = self.original_header("message-id") or None
        headers = header_items(self.original) if self.original is not None else ()
        return ParsedBounce(kind, tuple(recipients), message_id, headers, feedback_type,
                            self.subject, self.from_)

    def sender_addresses(self) -> list[str]:
        """The original sender's own addresses: bounces quote them, they are never the
        recipient."""
        values = [self.from_, header_text(self.msg, "to")]
        values += [self.original_header(h) for h in ("from", "sender", "reply-to",
                                                      "return-path")]
        return [a for value in values for a in _addresses(value)]


def _parse(data: bytes) -> ParsedBounce:
    try:
        if len(_BOUNDARY.findall(data, 0, MAX_BYTES)) > MAX_BOUNDARIES:
            raise RecursionError  # the parser's time grows with lines times open boundaries
        msg = email.message_from_bytes(data)
    except RecursionError:  # absurdly deep MIME nesting: read it as headers and plain text
        msg = email.parser.BytesParser().parsebytes(data, headersonly=True)
    ctx = _Context(msg)
    for step in (_feedback_report, _delivery_status, _provider_report, _heuristic_bounce,
                 _autoreply):
        parsed = step(ctx)
        if parsed is not None:
            return parsed
    return ctx.result(BounceKind.UNKNOWN, ())


def _feedback_report(ctx: _Context) -> ParsedBounce | None:
    """RFC 5965: the complainant is Original-Rcpt-To or Removal-Recipient, else (often) only
    the To of the returned message."""
    if not ctx.parts.feedback_report:
        return None
    fields = [f for block in field_blocks("\n\n".join(ctx.parts.feedback_report)) for f in block]
    feedback_type = next((v.strip().lower() for k, v in fields if k == "feedback-type"), None)
    addresses = [strip_address(v) for k, v in fields
                 if k in ("original-rcpt-to", "removal-recipient")]
    found = [a for a in dict.fromkeys(addresses) if a]
    if not found:
        found = _addresses(ctx.original_header("to"))[:1]
    recipients = [BouncedRecipient(a, None, None, f"feedback-type: {feedback_type}", None)
                  for a in found] or [
        BouncedRecipient(None, None, None, f"feedback-type: {feedback_type}", None)]
    return ctx.result(BounceKind.ARF, recipients, feedback_type)


def _kind_of(actions: list[str]) -> BounceKind:
    if actions and all(a in _DELAYED for a in actions):
        return BounceKind.DELAY
    if actions and all(a in _SUCCESS for a in actions):
        return BounceKind.SUCCESS
    return BounceKind.DSN


def _recipient_groups(blocks: list[list[tuple[str, str]]]) -> list[dict[str, str]]:
    """Per-recipient field groups: a new group starts with each block that names a recipient,
    and again when a block names a second one, so DSNs that forget the blank line between
    recipients still split right. Fields a block gives before its first recipient field
    (Exim writes `Action:` first) belong to that recipient's group."""
    groups: list[dict[str, str]] = []
    for block in blocks:
        current: dict[str, str] | None = None
        leading: dict[str, str] = {}
        for name, value in block:
            starts = name in ("final-recipient", "original-recipient") and (
                current is None or name in current)
            if starts:
                current = dict(leading) if current is None else {}
                groups.append(current)
            if current is None:
                leading.setdefault(name, value)
            elif name not in current:
                current[name] = value
    return groups


def _recipient_of(group: dict[str, str]) -> str | None:
    """Original-Recipient when the reporting MTA rewrote the address (an alias, a forward):
    that is the address Postroom sent to and can attribute. Otherwise Final-Recipient, as
    spelled there."""
    final = field_address(group.get("final-recipient", ""))
    original = field_address(group.get("original-recipient", ""))
    if original and (final is None or _bare(original) != _bare(final)):
        return original
    return final or field_address(group.get("x-actual-recipient", ""))


def _bare(address: str) -> str:
    return address.replace('"', "").lower()


def _strip_type(value: str) -> str:
    return re.sub(r"^\s*[\w-]+\s*;\s*", "", value).strip()


def _delivery_status(ctx: _Context) -> ParsedBounce | None:
    """RFC 3464: one recipient per group of Final-Recipient/Action/Status/Diagnostic-Code."""
    text = "\n\n".join(ctx.parts.delivery_status)
    if not ctx.parts.delivery_status:
        inline = _inline_fields(ctx.text)
        if inline is None:
            return None
        text = inline
    groups = _recipient_groups(field_blocks(text))[:MAX_RECIPIENTS]
    recipients = []
    for group in groups:
        address = _recipient_of(group)
        if address is None:
            continue
        diagnostic = _strip_type(group.get("diagnostic-code", ""))
        context = _context_for(ctx.text, address)
        if not diagnostic:
            diagnostic = context
        elif smtp_stage(diagnostic) is None and (stage := smtp_stage(context)) is not None:
            diagnostic = f"{diagnostic} ({stage})"  # the human part says where it failed
        status = enhanced_status(group.get("status", "")) or enhanced_status(diagnostic)
        action = group.get("action", "").strip().lower() or None
        remote = _strip_type(group.get("remote-mta", "")) or None
        recipients.append(BouncedRecipient(address, status, action, diagnostic, remote))
    if not recipients:
        return _heuristic_bounce(ctx, force=True)
    kind = _kind_of([r.action or "failed" for r in recipients])
    return ctx.result(kind, recipients)


def _inline_fields(text: str) -> str | None:
    """DSN fields pasted into a text part (Amazon WorkMail, old Sendmail): read them too."""
    match = _INLINE_FIELDS.search(text)
    if match is None:
        return None
    start = text.rfind("\n\n", 0, match.start())
    return text[start + 1 if start >= 0 else 0:]


def _context_for(text: str, address: str) -> str:
    """The human-readable lines about one recipient (its own block, not the first
    recipient's): the diagnostic when the DSN has none, and where in the SMTP session it
    failed (Postfix says so only there)."""
    found = recipients_from_text(text, exclude=(), failed=[address], fallback=(),
                                 action="failed")
    key = address.lower()
    mine = next((r.diagnostic for r in found if (r.recipient or "").lower() == key), None)
    return mine if mine is not None else text.strip()[:4000]  # not its own block: all of it


def _provider_report(ctx: _Context) -> ParsedBounce | None:
    """Report formats of providers that are not MIME reports but are regular and documented."""
    if ctx.original is not None:
        complainant = ctx.original_header("x-hmxmroriginalrecipient")
        if complainant:  # Hotmail/Outlook.com JMRP complaint: the message, with this header
            recipient = BouncedRecipient(strip_address(complainant), None, None,
                                         "feedback-type: abuse", None)
            return ctx.result(BounceKind.ARF, [recipient], "abuse")
    if header_text(ctx.msg, "x-apple-unsubscribe").lower() == "true":
        sender = _addresses(ctx.from_)[:1]
        recipient = BouncedRecipient(sender[0] if sender else None, None, None,
                                     "feedback-type: unsubscribe", None)
        return ctx.result(BounceKind.ARF, [recipient], "unsubscribe")
    return _ses_notification(ctx)


def _ses_notification(ctx: _Context) -> ParsedBounce | None:
    """Amazon SES bounce/complaint/delivery notifications delivered as JSON (via SNS)."""
    body = ctx.text.strip()
    if "notificationType" not in body:
        return None
    start = body.find("{")
    end = body.rfind("}")
    try:
        data = json.loads(body[start:end + 1], strict=False)
        if isinstance(data, dict) and isinstance(data.get("Message"), str):
            data = json.loads(data["Message"], strict=False)
    except (ValueError, RecursionError):  # not JSON, a number past int's digits, deep nesting
        return None
    if not isinstance(data, dict):
        return None
    kind_name = str(data.get("notificationType", "")).lower()
    detail = data.get(kind_name)
    if not isinstance(detail, dict):
        return None
    if kind_name == "bounce":
        items = detail.get("bouncedRecipients") or []
        recipients = [BouncedRecipient(
            str(item.get("emailAddress") or "") or None,
            enhanced_status(str(item.get("status") or "")),
            str(item.get("action") or "failed").lower(),
            _strip_type(str(item.get("diagnosticCode") or detail.get("bounceSubType") or "")),
            None) for item in items if isinstance(item, dict)]
        transient = str(detail.get("bounceType", "")).lower() == "transient"
        return ctx.result(BounceKind.DELAY if transient and not recipients else BounceKind.DSN,
                          recipients)
    if kind_name == "complaint":
        items = detail.get("complainedRecipients") or []
        recipients = [BouncedRecipient(str(item.get("emailAddress") or "") or None, None, None,
                                       "feedback-type: abuse", None)
                      for item in items if isinstance(item, dict)]
        return ctx.result(BounceKind.ARF, recipients, str(
            detail.get("complaintFeedbackType") or "abuse").lower())
    if kind_name == "delivery":
        found = detail.get("recipients") or []
        reply = str(detail.get("smtpResponse") or "")
        recipients = [BouncedRecipient(str(a), enhanced_status(reply), "delivered", reply, None)
                      for a in found if isinstance(a, str)]
        return ctx.result(BounceKind.SUCCESS, recipients)
    return None


def _heuristic_bounce(ctx: _Context, force: bool = False) -> ParsedBounce | None:
    """A bounce recognised by its wording (no delivery-status part, or an empty one)."""
    failed_values = [v for k, v in ctx.headers if k.lower() == "x-failed-recipients"]
    failed = [a for v in failed_values for a in re.split(r"[\s,;]+", v) if "@" in a]
    if not force and not is_bounce(subject=ctx.subject, from_=ctx.from_, text=ctx.text,
                                   failed_header=bool(failed)):
        return None
    if not force:
        # A vacation notice that quotes bounce-like words is still a vacation notice, unless
        # a mail system evidently wrote it.
        signal = autoreply_signal(ctx.headers, ctx.subject)
        daemon = bool(failed) or bool(re.search(r"mailer[-_ ]?daemon|postmaster", ctx.from_,
                                                re.I))
        mailer = is_mailer(subject=ctx.subject, from_=ctx.from_, failed_header=bool(failed))
        if (signal is Autoreply.STRONG and not daemon) or (signal is Autoreply.WEAK
                                                          and not mailer):
            return None
    delayed = is_delay(subject=ctx.subject, text=ctx.text)
    recipients = recipients_from_text(
        ctx.text, exclude=ctx.sender_addresses(), failed=failed,
        fallback=_addresses(ctx.original_header("to")),
        action="delayed" if delayed else "failed")
    kind = BounceKind.DELAY if delayed else BounceKind.HEURISTIC
    return ctx.result(kind, recipients[:MAX_RECIPIENTS])


def _autoreply(ctx: _Context) -> ParsedBounce | None:
    """RFC 3834 auto-replies and vacation notices: the recipient is whoever replied."""
    if not is_autoreply(ctx.headers, ctx.subject):
        return None
    sender = _addresses(ctx.from_)[:1]
    recipient = BouncedRecipient(sender[0] if sender else None, None, None,
                                 ctx.text.strip()[:2000], None)
    parsed = ctx.result(BounceKind.AUTOREPLY, [recipient])
    if parsed.original_message_id is None:
        # An auto-reply returns no copy, but In-Reply-To names the message it answers.
        replied = re.search(r"<[^<>\s]+>", header_text(ctx.msg, "in-reply-to"))
        if replied is not None:
            parsed = replace(parsed, original_message_id=replied.group(0))
    return parsed
