"""The ledger commands' work on a store: verify the whole chain, export part of it.

The export is JSON Lines: from the first entry asked for to the chain's end, one line per entry
(in full when asked for, else a stub with its digest, which still links the chain), then the
signed checkpoints at or after the first line. docs/archive.md has the auditor's check.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Protocol

from postroom.archive.audit import LedgerReport, audit
from postroom.archive.ledger import Checkpoint, Entry
from postroom.storage.ledger import LedgerHead

__all__ = ["LedgerSource", "export_ledger", "verify_ledger"]


class LedgerSource(Protocol):
    def ledger_head(self) -> LedgerHead: ...
    def ledger_entries(self, *, start: int = 1, delivery_id: int | None = None,
                       since: datetime | None = None) -> Iterator[Entry]: ...
    def ledger_first_seq(self, *, delivery_id: int | None = None,
                         since: datetime | None = None) -> int | None: ...
    def ledger_checkpoints(self) -> list[Checkpoint]: ...


def verify_ledger(store: LedgerSource, public_key: str | None) -> LedgerReport:
    head = store.ledger_head()
    return audit(store.ledger_entries(), checkpoints=store.ledger_checkpoints(),
                 public_key=public_key, stored_head=(head.count, head.head))




def export_ledger(store: LedgerSource, out: IO[str], *, delivery_id: int | None = None,
                  since: datetime | None = None) -> tuple[int, int, int]:
    """Write the export; returns (entries in full, stubs, checkpoints)."""
    first = store.ledger_first_seq(delivery_id=delivery_id, since=since)
    full = stubs = 0
    if first is None:
        return 0, 0, 0
    for entry in store.ledger_entries(start=first):
        wanted = ((delivery_id is None or entry.delivery == delivery_id)
                  and (since is None or entry.acked_at >= since))
        line = entry.export() if wanted else entry.stub()
        out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        full, stubs = (full + 1, stubs) if wanted else (full, stubs + 1)
    signed = [cp for cp in store.ledger_checkpoints() if cp.count >= first]
    for cp in signed:
        out.write(json.dumps(cp.export(), separators=(",", ":")) + "\n")
    return full, stubs, len(signed)
