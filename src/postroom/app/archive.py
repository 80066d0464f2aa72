"""The Email BCC archive: flush the outbox (async IO), its status, verify the archive store,
and the hash ledger (head, checkpoints, verify, export)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from postroom.app.context import AppContext
from postroom.archive.audit import LedgerReport
from postroom.archive.ledger import Checkpoint
from postroom.archive.ledger_ops import export_ledger, verify_ledger
from postroom.archive.signing import Signer
from postroom.archive.stores import ArchiveReader
from postroom.archive.verify import Scope, VerifyReport, verify_archive
from postroom.errors import ConfigError, StateError
from postroom.storage.ledger import LedgerHead

__all__ = ["ArchiveService", "ArchiveStatus"]


@dataclass(frozen=True)
class ArchiveStatus:
    enabled: bool
    sink: str  # smtp, directory, imap
    target: str  # where copies go: "archive relay", a folder, an IMAP URL
    ledger_entries: int
    deliveries: list[dict[str, Any]]  # per delivery: pending, archived, failed, recent replies

    def to_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "sink": self.sink, "target": self.target,
                "ledger_entries": self.ledger_entries, "deliveries": self.deliveries}


class ArchiveService:
    def __init__(self, ctx: AppContext):
        self._ctx = ctx

    async def flush(self, *, delivery_id: int | None = None, wait_seconds: float = 30.0,
                    retry_failed: bool = False) -> int:
        """Send pending archive copies now; returns how many are still pending afterwards."""
        ctx = self._ctx
        archiver = ctx.archiver()
        if archiver is None:
            raise StateError("Email BCC is not enabled on this instance (archive.enabled)")
        if retry_failed:
            ctx.store.retry_failed_archive(ctx.now(), delivery_id)
        ctx.store.reset_archive_schedule(ctx.now(), delivery_id)
        finish = asyncio.Event()
        finish.set()
        await archiver.run(delivery_id=delivery_id, finish=finish, drain_seconds=wait_seconds)
        return archiver.pending(delivery_id)

    def status(self, delivery_id: int | None = None) -> ArchiveStatus:
        """Pending / archived / failed copies per delivery, with the latest replies."""
        store = self._ctx.store
        counts = store.archive_counts(delivery_id)
        rows: list[dict[str, Any]] = []
        for key in sorted(counts):
            states = counts[key]
            rows.append({"delivery": key, "pending": states.get("pending", 0),
                         "archived": states.get("archived", 0),
                         "failed": states.get("failed", 0),
                         "recent": [{"log": log, "state": st, "reply": reply} for log, st, reply
                                    in store.archive_replies(key, limit=5)]})
        settings = self._ctx.settings.archive
        target = {"smtp": "archive relay", "directory": str(settings.directory),
                  "imap": str(settings.imap_url)}[settings.sink]
        return ArchiveStatus(settings.enabled, settings.sink, target,
                             store.ledger_head().count, rows)

    def verify(self, reader: ArchiveReader, scope: Scope, *,
               progress: Callable[[int], None] = lambda n: None) -> VerifyReport:
        """Reconcile what was sent with what the archive store `reader` holds."""
        return verify_archive(self._ctx.store, reader, scope, now=self._ctx.now(),
                              progress=progress)

    def ledger_head(self) -> LedgerHead:
        return self._ctx.store.ledger_head()

    def ledger_checkpoints(self) -> list[Checkpoint]:
        return self._ctx.store.ledger_checkpoints()

    def _signer(self) -> Signer | None:
        """The checkpoint signer of archive.ledger_key, None when the key is not set."""
        key = self._ctx.settings.archive.ledger_key.get_secret_value()
        return Signer(key) if key else None

    def ledger_checkpoint(self) -> Checkpoint:
        """Sign the chain head now (archive.ledger_key must be set)."""
        signer = self._signer()
        if signer is None:
            raise ConfigError("archive.ledger_key is not set (POSTROOM_ARCHIVE__LEDGER_KEY): "
                              "nothing can be signed")
        return self._ctx.store.ledger_checkpoint(signer, self._ctx.now())

    def verify_ledger(self, public_key: str | None = None) -> LedgerReport:
        """Check the whole chain, its head and every signed checkpoint, with `public_key`
        (default: the key of archive.ledger_key; none: each checkpoint with the key it names)."""
        signer = self._signer()
        key = public_key or (signer.public_key if signer else None)
        return verify_ledger(self._ctx.store, key)

    def export_ledger(self, out: IO[str], *, delivery_id: int | None = None,
                      since: datetime | None = None) -> tuple[int, int, int]:
        """Write the ledger for an auditor; returns (entries in full, stubs, checkpoints)."""
        return export_ledger(self._ctx.store, out, delivery_id=delivery_id, since=since)
