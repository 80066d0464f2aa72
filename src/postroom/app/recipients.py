"""Recipients: import a CSV, count, list (searched, paginated), one recipient's history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postroom.app.context import AppContext
from postroom.bounces.quarantine import AddressState
from postroom.delivery.audience import matcher
from postroom.domain.addresses import normalize_address
from postroom.domain.models import Recipient
from postroom.errors import InputError, NotFoundError
from postroom.recipients.importer import ImportReport, import_csv
from postroom.storage.recipient_reads import (
    HistoryRow,
    ScanLimitError,
    count_matching,
    filtered_page,
    recipient_history,
    recipient_page,
)

__all__ = ["MAX_PAGE", "RecipientHistory", "RecipientPage", "RecipientService",
           "recipient_json"]

MAX_PAGE = 1000  # recipients or history rows in one answer
MAX_SEARCH = 320
MAX_FILTERS = 10
MAX_FILTER_SCAN = 500_000  # recipients a filtered listing may read (filters run in Python)


def recipient_json(r: Recipient) -> dict[str, Any]:
    return {"id": r.id, "email": r.email, "first_name": r.first_name,
            "last_name": r.last_name, "email_format": str(r.email_format),
            "opted_out": r.opted_out, "fields": r.fields, "address_status": r.address_status}


@dataclass(frozen=True)
class RecipientPage:
    recipients: list[Recipient]
    total: int  # matching the search, all pages
    limit: int
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "limit": self.limit, "offset": self.offset,
                "items": [recipient_json(r) for r in self.recipients]}


@dataclass(frozen=True)
class RecipientHistory:
    recipient: Recipient
    address: AddressState | None  # None: valid, no error on record
    deliveries: list[HistoryRow]  # newest delivery first

    def to_json(self) -> dict[str, Any]:
        a = self.address
        return {
            "recipient": recipient_json(self.recipient),
            "address": None if a is None else {
                "status": str(a.status), "error_count": a.error_count,
                "status_since": a.status_since.isoformat(),
                "last_reason": None if a.last_reason is None else int(a.last_reason),
                "last_text": a.last_text},
            "deliveries": [{
                "log": h.log_id, "delivery": h.delivery_id, "name": h.delivery_name,
                "status": h.status, "failure_type": h.failure_type,
                "failure_reason": h.failure_reason, "detail": h.detail,
                "sent_at": h.sent_at.isoformat() if h.sent_at else None,
            } for h in self.deliveries],
        }


def _bounded(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit {limit}: give 1 to {MAX_PAGE}")
    if offset < 0:
        raise InputError(f"offset {offset}: give 0 or more")


class RecipientService:
    def __init__(self, ctx: AppContext):
        self._ctx = ctx

    def import_recipients(self, path: Path, *, encoding: str = "utf-8",
                          progress: Callable[[int], None] | None = None) -> ImportReport:
        return import_csv(path, self._ctx.store, now=self._ctx.now(), encoding=encoding,
                          progress=progress)

    def count_recipients(self) -> int:
        return self._ctx.store.count_recipients()

    def list_recipients(self, *, search: str | None = None, filters: Sequence[str] = (),
                        limit: int = 50, offset: int = 0) -> RecipientPage:
        """A page of recipients in id order whose address or name contains `search` and
        that every filter matches (`field=value`, `field!=value`, `field~text`: a delivery's
        audience filters, with the same meaning)."""
        _bounded(limit, offset)
        if search is not None and len(search) > MAX_SEARCH:
            raise InputError(f"search: at most {MAX_SEARCH} characters")
        if len(filters) > MAX_FILTERS:
            raise InputError(f"filter: at most {MAX_FILTERS}")
        for text in filters:
            if len(text) > MAX_SEARCH:
                raise InputError(f"filter {text[:40]!r}...: at most {MAX_SEARCH} characters")
        engine = self._ctx.store.engine
        if not filters:
            return RecipientPage(recipient_page(engine, search=search, limit=limit,
                                                offset=offset),
                                 count_matching(engine, search), limit, offset)
        wanted = matcher(filters)  # raises InputError naming a malformed filter
        try:
            found, total = filtered_page(engine, search=search, wanted=wanted, limit=limit,
                                         offset=offset, max_scan=MAX_FILTER_SCAN)
        except ScanLimitError as exc:
            raise InputError(f"filter: {exc}; narrow the list with search first") from exc
        return RecipientPage(found, total, limit, offset)

    def recipient_history(self, email: str, *, limit: int = 100) -> RecipientHistory:
        """One recipient: their data, their address status and every delivery's log."""
        _bounded(limit, 0)
        store = self._ctx.store
        recipient = store.recipient_by_email(email)
        if recipient is None:
            raise NotFoundError(f"no recipient {email!r}")
        try:
            address = store.get_address(normalize_address(recipient.email))
        except InputError:  # imported before addresses were checked this strictly
            address = None
        return RecipientHistory(recipient, address,
                                recipient_history(store.engine, recipient.id, limit=limit))
