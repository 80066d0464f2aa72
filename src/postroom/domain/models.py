"""Records that move between storage and the pipeline: frozen, typed, free of IO."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.properties import Properties
from postroom.domain.states import DeliveryState, LogStatus

__all__ = [
    "ArchiveCopy",
    "ArchiveResult",
    "ArchiveState",
    "Audience",
    "Delivery",
    "DeliveryLog",
    "EmailFormat",
    "LogUpdate",
    "NewLog",
    "Recipient",
    "RecipientRow",
    "Target",
    "Template",
    "UpsertCounts",
]


class EmailFormat(StrEnum):
    UNKNOWN = "unknown"
    TEXT = "text"
    HTML = "html"


class ArchiveState(StrEnum):
    PENDING = "pending"
    ARCHIVED = "archived"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    email: str
    first_name: str = ""
    last_name: str = ""
    email_format: EmailFormat = EmailFormat.UNKNOWN
    opted_out: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
    address_status: str = "valid"  # valid, with_errors, quarantine or denylisted


@dataclass(frozen=True, slots=True)
class Template:
    id: int
    name: str
    builtin: bool
    properties: Properties
    updated_at: datetime | None = None  # the last change (deliveries made before keep a copy)


@dataclass(frozen=True, slots=True)
class Audience:
    """Who a delivery targets: every recipient, those matching filters, or an imported list."""

    kind: str = "all"  # all | filter | list
    filters: tuple[str, ...] = ()
    source: str = ""  # the list file, for the record

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "filters": list(self.filters), "source": self.source}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Audience:
        return cls(data["kind"], tuple(data.get("filters", ())), data.get("source", ""))


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    name: str
    template_name: str
    state: DeliveryState
    properties: Properties
    audience: Audience
    salt: str
    last_error: str
    created_at: datetime
    analyzed_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryLog:
    id: int
    delivery_id: int
    recipient_id: int | None
    email: str
    status: LogStatus
    failure_type: FailureType | None
    failure_reason: FailureReason | None
    detail: str
    attempts: int
    next_attempt_at: datetime | None
    smtp_reply: str
    message_id: str | None
    sent_at: datetime | None
    size: int | None
    sha256: str | None
    archive_state: ArchiveState | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A pending log claimed for sending, with what rendering needs."""

    log_id: int
    attempts: int
    recipient: Recipient


@dataclass(frozen=True, slots=True)
class ArchiveCopy:
    """One pending compliance copy: the exact bytes that reached `sent`."""

    id: int
    log_id: int
    delivery_id: int
    attempts: int
    data: bytes
    sha256: str


@dataclass(frozen=True, slots=True)
class LogUpdate:
    """What one send attempt changes in its delivery log (and the archive copy it asks for)."""

    log_id: int
    status: LogStatus
    attempts: int
    next_attempt_at: datetime | None
    failure_type: FailureType | None = None
    failure_reason: FailureReason | None = None
    detail: str = ""
    smtp_reply: str = ""
    message_id: str | None = None
    sent_at: datetime | None = None
    size: int | None = None
    sha256: str | None = None
    archive_data: bytes | None = None  # set when the message was sent and Email BCC is on
    mirror_html: bytes | None = None  # the HTML the recipient got, for its mirror page
    mirror_until: datetime | None = None
    to_qualify: bool = False  # no qualification rule matched the reply
    in_doubt: bool = False  # the attempt may have reached the relay (see Outcome.in_doubt)


@dataclass(frozen=True, slots=True)
class NewLog:
    """A delivery log as analysis writes it: pending, or ignored with a reason."""

    recipient_id: int | None
    email: str
    status: LogStatus
    failure_reason: FailureReason | None = None
    detail: str = ""
    failure_type: FailureType | None = None


@dataclass(frozen=True, slots=True)
class RecipientRow:
    """A recipient as the importer hands it over (already validated and normalized).

    `given` names the columns the file had: a re-import changes only those (and merges custom
    fields), so a file without `opted_out` never clears an opt-out.
    """

    email: str
    first_name: str = ""
    last_name: str = ""
    email_format: EmailFormat = EmailFormat.UNKNOWN
    opted_out: bool = False
    fields: dict[str, Any] | None = None
    given: frozenset[str] = frozenset({"first_name", "last_name", "email_format", "opted_out"})


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    inserted: int
    updated: int


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    copy_id: int
    state: ArchiveState
    reply: str
    next_attempt_at: datetime | None = None
    attempted: bool = True
    in_doubt: bool = False  # the connection dropped awaiting the reply to DATA
