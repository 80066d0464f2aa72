"""Test helpers shipped with postroom (also used by the demo)."""

from postroom.testing.smtp_server import (
    DEFAULT_REJECT_REPLY,
    Action,
    CaptureServer,
    Drop,
    Matcher,
    Received,
    Script,
    Sleep,
    is_rejected,
)

__all__ = [
    "DEFAULT_REJECT_REPLY",
    "Action",
    "CaptureServer",
    "Drop",
    "Matcher",
    "Received",
    "Script",
    "Sleep",
    "is_rejected",
]
