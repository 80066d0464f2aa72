"""What a bounce mail says, as plain values.

The parser turns bytes into a `ParsedBounce`; qualification and attribution read it. Keeping the
result a frozen value (no `email.message.Message` inside) lets it be stored, compared in tests
and handed between processes without dragging the parser along.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BounceKind", "BouncedRecipient", "ParsedBounce"]


class BounceKind(StrEnum):
    """Which kind of report a message is; decides how its recipients are qualified."""

    DSN = "dsn"  # RFC 3464 delivery-status notification reporting a failure
    ARF = "arf"  # RFC 5965 feedback report (spam complaint)
    AUTOREPLY = "autoreply"  # RFC 3834 auto-reply, vacation notice: never counted
    DELAY = "delay"  # delayed-delivery warning: the MTA is still trying
    SUCCESS = "success"  # delivered / relayed / expanded notice
    HEURISTIC = "heuristic"  # a non-standard bounce recognised by its wording
    UNKNOWN = "unknown"  # not recognised: kept for a person to look at


@dataclass(frozen=True, slots=True)
class BouncedRecipient:
    """One recipient the report is about, with what the reporting MTA said about it.

    `diagnostic` is the text to qualify: the Diagnostic-Code, or for non-standard bounces the
    paragraph that names the recipient. It is never None so that rules can always run on it.
    """

    recipient: str | None
    status: str | None
    action: str | None
    diagnostic: str
    remote_mta: str | None


@dataclass(frozen=True, slots=True)
class ParsedBounce:
    """Everything Postroom needs from one bounce: its kind, recipients and the returned message.

    `original_message_id` and `original_headers` come from the returned message (a
    message/rfc822 or text/rfc822-headers part, or an inline copy) and serve attribution when
    the VERP token is missing.
    """

    kind: BounceKind
    recipients: tuple[BouncedRecipient, ...]
    original_message_id: str | None
    original_headers: tuple[tuple[str, str], ...]
    feedback_type: str | None
    subject: str
    from_: str
