"""`archive verify`: reconcile what Postroom sent to the archive with what the store holds.

1. Read the archive store once (archive/stores.py) and keep, per copy, only its location,
   Message-ID and SHA-256 (archive/reconcile.py) in a scratch SQLite file on disk, indexed by
   Message-ID: memory stays bounded however large the archive.
2. Read the logs that owe a copy (in scope: one delivery, or a sent-time range) from the store in
   keyset batches, and look each batch up in the scratch file: no copy → missing; a copy with the
   log's SHA-256 → verified (more than one → duplicated); a copy with another hash → altered.
3. Every copy left unmatched is classified through the store: a copy of a log in scope that owes
   none (it failed), a proof, or a message Postroom never sent → unexpected; a copy of another
   delivery (outside the scope) → counted apart, not a fault.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from postroom.archive.reconcile import Kind, fingerprint, parse_message_id
from postroom.archive.stores import ArchiveReader
from postroom.storage.ledger import ExpectedCopy, LogIdentity

__all__ = ["Scope", "VerifyReport", "VerifyStore", "verify_archive"]

_BATCH = 1000
_LISTED = 100  # items listed per category in the report (the counts are always complete)


class VerifyStore(Protocol):
    def expected_copies(self, *, delivery_id: int | None, since: datetime | None,
                        until: datetime | None, after: int,
                        limit: int) -> list[ExpectedCopy]: ...
    def oldest_unarchived(self, *, delivery_id: int | None, since: datetime | None,
                          until: datetime | None) -> datetime | None: ...
    def log_identities(self, log_ids: Sequence[int]) -> dict[int, LogIdentity]: ...


@dataclass(frozen=True, slots=True)
class Scope:
    delivery_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def holds(self, log: LogIdentity) -> bool:
        return ((self.delivery_id is None or log.delivery_id == self.delivery_id)
                and (self.since is None or log.when >= self.since)
                and (self.until is None or log.when < self.until))

    def holds_delivery(self, delivery_id: int | None) -> bool:
        return self.delivery_id is None or delivery_id == self.delivery_id


@dataclass
class VerifyReport:
    expected: int = 0  # logs owing a copy
    verified: int = 0  # of those, with a copy whose hash matches
    missing: int = 0
    duplicated: int = 0  # extra identical copies
    altered: int = 0  # copies whose hash differs from what was sent
    unexpected: int = 0
    out_of_scope: int = 0  # copies of other deliveries / outside the time range
    read: int = 0  # copies read from the store
    not_acknowledged: int = 0  # expected copies the archive has not acknowledged yet
    lag_seconds: float | None = None  # age of the oldest sent message without an ack
    items: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.altered == 0 and self.unexpected == 0

    def note(self, category: str, **item: Any) -> None:
        if len(self.items[category]) < _LISTED:
            self.items[category].append(item)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "expected": self.expected, "verified": self.verified,
                "missing": self.missing, "duplicated": self.duplicated,
                "altered": self.altered, "unexpected": self.unexpected,
                "out_of_scope": self.out_of_scope, "read": self.read,
                "not_acknowledged": self.not_acknowledged, "lag_seconds": self.lag_seconds,
                "items": {k: v for k, v in self.items.items() if v}}


class _Scratch:
    """The scan's results on disk: one row per copy read."""

    def __init__(self, directory: str):
        self.db = sqlite3.connect(Path(directory) / "copies.db")
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE copies (id INTEGER PRIMARY KEY, location TEXT, "
                        "message_id TEXT, sha256 TEXT, matched INTEGER NOT NULL DEFAULT 0)")

    def fill(self, reader: ArchiveReader, progress: Callable[[int], None]) -> int:
        count = 0
        rows: list[tuple[str, str | None, str | None]] = []
        for location, data in reader:
            if data is None:
                rows.append((location, None, None))
            else:
                print_ = fingerprint(data)
                rows.append((location, print_.message_id, print_.sha256))
            count += 1
            if len(rows) >= _BATCH:
                self._insert(rows)
                progress(len(rows))
                rows = []
        self._insert(rows)
        progress(len(rows))
        self.db.execute("CREATE INDEX ix_mid ON copies (message_id)")
        return count

    def _insert(self, rows: list[tuple[str, str | None, str | None]]) -> None:
        self.db.executemany("INSERT INTO copies (location, message_id, sha256) VALUES (?,?,?)",
                            rows)

    def lookup(self, message_ids: list[str]) -> dict[str, list[tuple[int, str, str]]]:
        found: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
        for start in range(0, len(message_ids), 500):
            chunk = message_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for rowid, location, mid, sha in self.db.execute(
                    f"SELECT id, location, message_id, sha256 FROM copies "
                    f"WHERE message_id IN ({marks}) ORDER BY id", chunk):
                found[mid].append((rowid, location, sha))
        return found

    def mark(self, rowids: list[int]) -> None:
        self.db.executemany("UPDATE copies SET matched = 1 WHERE id = ?",
                            [(r,) for r in rowids])

    def unmatched(self) -> list[tuple[int, str, str | None, str | None]]:
        """The next batch of unmatched copies (callers mark what they saw)."""
        return list(self.db.execute(
            "SELECT id, location, message_id, sha256 FROM copies WHERE matched = 0 "
            "ORDER BY id LIMIT ?", (_BATCH,)))

    def close(self) -> None:
        self.db.close()


def verify_archive(store: VerifyStore, reader: ArchiveReader, scope: Scope, *, now: datetime,
                   progress: Callable[[int], None] = lambda n: None) -> VerifyReport:
    report = VerifyReport()
    with tempfile.TemporaryDirectory(prefix="postroom-verify-") as directory:
        scratch = _Scratch(directory)
        try:
            report.read = scratch.fill(reader, progress)
            _match_expected(store, scratch, scope, report)
            _classify_unmatched(store, scratch, scope, report)
        finally:
            scratch.close()
    oldest = store.oldest_unarchived(delivery_id=scope.delivery_id, since=scope.since,
                                     until=scope.until)
    report.lag_seconds = None if oldest is None else max(0.0, (now - oldest).total_seconds())
    return report


def _match_expected(store: VerifyStore, scratch: _Scratch, scope: Scope,
                    report: VerifyReport) -> None:
    after = 0
    while True:
        batch = store.expected_copies(delivery_id=scope.delivery_id, since=scope.since,
                                      until=scope.until, after=after, limit=_BATCH)
        if not batch:
            return
        after = batch[-1].log_id
        found = scratch.lookup([e.message_id for e in batch if e.message_id])
        seen: list[int] = []
        for expected in batch:
            report.expected += 1
            if expected.state != "archived":
                report.not_acknowledged += 1
            copies = found.get(expected.message_id, []) if expected.message_id else []
            seen.extend(rowid for rowid, _, _ in copies)
            same = [c for c in copies if c[2] == expected.sha256]
            if same:
                report.verified += 1
            elif not copies:
                report.missing += 1
                report.note("missing", log=expected.log_id, delivery=expected.delivery_id,
                            message_id=expected.message_id, archive_state=expected.state)
            for _rowid, location, sha in copies:
                if sha != expected.sha256:
                    report.altered += 1
                    report.note("altered", log=expected.log_id, location=location,
                                message_id=expected.message_id, sent_sha256=expected.sha256,
                                archived_sha256=sha)
            if len(same) > 1:
                report.duplicated += len(same) - 1
                report.note("duplicated", log=expected.log_id,
                            locations=[c[1] for c in same])
        scratch.mark(seen)


def _classify_unmatched(store: VerifyStore, scratch: _Scratch, scope: Scope,
                        report: VerifyReport) -> None:
    while rows := scratch.unmatched():
        ids = {rowid: parse_message_id(mid) for rowid, _, mid, _ in rows}
        logs = store.log_identities([c.log_id for c in ids.values()
                                     if c.kind is Kind.LOG and c.log_id is not None])
        for rowid, location, mid, _sha in rows:
            copy = ids[rowid]
            reason: str | None
            if mid is None and _sha is None:
                reason = "too large to read"
            elif copy.kind is Kind.PROOF:
                reason = "a proof" if scope.holds_delivery(copy.delivery_id) else None
            elif copy.kind is Kind.LOG and copy.log_id in logs \
                    and logs[copy.log_id].message_id == mid:
                log = logs[copy.log_id]
                reason = f"a copy Postroom never archived (the message is {log.status})" \
                    if scope.holds(log) else None
            else:
                reason = "a message Postroom never sent" if mid else "no Message-ID"
            if reason is None:
                report.out_of_scope += 1
            else:
                report.unexpected += 1
                report.note("unexpected", location=location, message_id=mid, reason=reason)
        scratch.mark([r[0] for r in rows])
