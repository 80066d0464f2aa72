"""Import recipients from a CSV file into the store, streaming, in batches."""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from postroom.domain.models import RecipientRow, UpsertCounts
from postroom.errors import InputError
from postroom.recipients.csv_rows import RowError, parse_csv

__all__ = ["ImportReport", "RecipientStore", "import_csv"]

MAX_ERRORS_KEPT = 1000


class RecipientStore(Protocol):
    def upsert_recipients(self, rows: list[RecipientRow], now: datetime) -> UpsertCounts: ...


@dataclass
class ImportReport:
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)  # kept only when asked (audience lists)

    def to_json(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "rejected": self.rejected,
            "errors": [{"line": e.line, "reason": e.reason} for e in self.errors],
            "errors_truncated": self.rejected > len(self.errors),
        }


def import_csv(
    path: Path,
    store: RecipientStore,
    *,
    now: datetime,
    encoding: str = "utf-8",
    batch_size: int = 1000,
    keep_emails: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import `path`; good rows go in, bad rows are reported with their line and reason."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"--encoding {encoding!r}: not a character encoding Python knows "
                         "(for example utf-8, latin-1, cp1252, shift_jis)") from None
    report = ImportReport()
    batch: list[RecipientRow] = []

    def flush() -> None:
        counts = store.upsert_recipients(batch, now)
        report.inserted += counts.inserted
        report.updated += counts.updated
        if progress is not None:
            progress(len(batch))
        batch.clear()

    try:
        stream = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file: {exc.strerror}") from None
    with stream:
        for item in parse_csv(stream, encoding=encoding):
            report.rows += 1
            if isinstance(item, RowError):
                report.rejected += 1
                if len(report.errors) < MAX_ERRORS_KEPT:
                    report.errors.append(item)
                continue
            batch.append(item)
            if keep_emails:
                report.emails.append(item.email)
            if len(batch) >= batch_size:
                flush()
    if batch:
        flush()
    return report
