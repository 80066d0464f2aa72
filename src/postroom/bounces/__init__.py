"""Bounces: parsing what comes back, qualifying failures, and the address quarantine policy.

The pure core of DESIGN.md §5 (bounce inbox → parse → attribute → qualify → quarantine):

- `parse_bounce(bytes) -> ParsedBounce`: RFC 3464 DSNs, RFC 5965 feedback reports, RFC 3834
  auto-replies and the non-standard bounces of the big MTAs and providers. Never raises.
- `default_rules()`, `qualify(...)`, `qualify_bounce(...)`, `qualify_smtp_reply(...)`: one
  ordered rule table for bounces and synchronous SMTP replies alike.
- `normalize_text(text)`: the "to qualify" key of a text no rule matched.
- `apply_event(state, event, now=..., policy=...)`, `due_release(...)`: the quarantine policy.

Everything here is a function of its arguments: no IO, no clock, no global state.
"""

from postroom.bounces.model import BouncedRecipient, BounceKind, ParsedBounce
from postroom.bounces.normalize import normalize_text
from postroom.bounces.parse import parse_bounce
from postroom.bounces.quarantine import (
    AddressEvent,
    AddressState,
    AddressStatus,
    QuarantinePolicy,
    apply_event,
    due_release,
    expire_errors,
    release,
)
from postroom.bounces.rules import (
    Qualification,
    Rule,
    default_rules,
    qualify,
    qualify_bounce,
    qualify_recipient,
    qualify_smtp_reply,
)

__all__ = [
    "AddressEvent",
    "AddressState",
    "AddressStatus",
    "BounceKind",
    "BouncedRecipient",
    "ParsedBounce",
    "Qualification",
    "QuarantinePolicy",
    "Rule",
    "apply_event",
    "default_rules",
    "due_release",
    "expire_errors",
    "normalize_text",
    "parse_bounce",
    "qualify",
    "qualify_bounce",
    "qualify_recipient",
    "qualify_smtp_reply",
    "release",
]
