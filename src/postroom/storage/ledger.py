"""Storage of the archive hash ledger (archive/ledger.py). Mixed into `SqlStore`.

Entries are appended in the transaction that records copies `archived`, so a copy is archived
and entered in the ledger together, or neither. Appenders first update the single head row
(`archive_ledger_head`, id 1): on PostgreSQL that row lock, on SQLite the database write lock,
makes concurrent workers append one after the other, so there is one chain, with no gap and no
fork. A checkpoint is written in the same transaction when one is due.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    String,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)

from postroom.archive.ledger import Checkpoint, Entry, body_digest, chain_hash, format_time
from postroom.archive.signing import Signer
from postroom.archive.status import SinkCount
from postroom.domain.models import ArchiveState
from postroom.storage.prepared import Prepared
from postroom.storage.schema import (
    archive_checkpoints,
    archive_ledger,
    archive_ledger_head,
    archive_outbox,
    as_utc,
    delivery_logs,
)

__all__ = [
    "ArchiveProofStore",
    "ExpectedCopy",
    "LedgerConfig",
    "LedgerHead",
    "LedgerStore",
    "LogIdentity",
    "enter_archived",
]

_READ_BATCH = 2000
_INSERT_ENTRY = Prepared(insert(archive_ledger), columns=[c.name for c in archive_ledger.columns])
# The append's statements are built once (SQLAlchemy caches their compiled form): building them
# per append was a tenth of its time with Email BCC on (bench/RESULTS.md, issue 16).
_head = archive_ledger_head.c
_LOCK_HEAD = (update(archive_ledger_head).where(_head.id == 1).values(count=_head.count)
              .returning(_head.count, _head.head, _head.checkpoint_count, _head.checkpoint_at))
_SET_HEAD = (update(archive_ledger_head).where(_head.id == 1)
             .values(count=bindparam("b_count"), head=bindparam("b_head")))
_o, _log = archive_outbox.c, delivery_logs.c
# One read of the copies a result call recorded `archived` serves the outbox (whose bytes to
# drop) and the ledger (the facts of those without an entry yet). The state is checked in
# Python, not in the WHERE: with `state = 'archived'` there, SQLite (no statistics) walked
# ix_archive_due's range of every archived copy instead of looking the ids up, which made each
# append cost O(archive) (bench/RESULTS.md, issue 16). The state and the times are read
# without their column types (`as_utc` converts the times): SQLAlchemy's result processing
# was half the read's cost, under the write lock.
_RECORDED = (
    select(_o.id, type_coerce(_o.state, String).label("state"), _o.delivery_id, _o.log_id,
           _o.sha256, _o.reply, type_coerce(_o.archived_at, String).label("archived_at"),
           type_coerce(_o.created_at, String).label("created_at"), _log.message_id, _log.size,
           type_coerce(_log.sent_at, String).label("sent_at"),
           select(archive_ledger.c.seq).where(archive_ledger.c.copy_id == _o.id).exists()
           .label("entered"))
    .join(delivery_logs, _log.id == _o.log_id)
    .where(_o.id.in_(bindparam("b_ids", expanding=True)))
    .order_by(_o.id))


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """Whether copies are entered, and when a checkpoint is due (with a signer only)."""

    enabled: bool = True
    signer: Signer | None = field(default=None, repr=False)
    checkpoint_every: int = 1000  # entries
    checkpoint_interval: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class LedgerHead:
    count: int
    head: str
    checkpoint_count: int
    checkpoint_at: datetime | None


def _lock_head(conn: Connection) -> LedgerHead:
    """Take the chain head for this transaction (a no-op write: a row lock on PostgreSQL, the
    write lock on SQLite) and read it, in one statement."""
    row = conn.execute(_LOCK_HEAD).one()
    return LedgerHead(row._mapping["count"], row.head, row.checkpoint_count, row.checkpoint_at)


def _write_checkpoint(conn: Connection, signer: Signer, head: LedgerHead,
                      now: datetime) -> Checkpoint:
    checkpoint = signer.checkpoint(head.count, head.head, now)
    conn.execute(insert(archive_checkpoints).values(
        count=checkpoint.count, head=checkpoint.head, time=now,
        public_key=checkpoint.public_key, signature=checkpoint.signature))
    conn.execute(update(archive_ledger_head).where(archive_ledger_head.c.id == 1)
                 .values(checkpoint_count=head.count, checkpoint_at=now))
    return checkpoint


def enter_archived(conn: Connection, copy_ids: Sequence[int], now: datetime,
                   config: LedgerConfig) -> list[int]:
    """Enter in the ledger the copies among `copy_ids` that are archived and have no entry
    yet; returns the log ids of all the archived ones (their bytes can go).

    The head is taken before the copies are read, so that concurrent appenders (PostgreSQL)
    see each other's entries and never enter a copy twice.
    """
    if not copy_ids:
        return []
    head = _lock_head(conn) if config.enabled else None
    rows = [row for row in conn.execute(_RECORDED, {"b_ids": list(copy_ids)})
            if row.state == ArchiveState.ARCHIVED]
    if head is not None:
        _append(conn, head, [row for row in rows if not row.entered], now, config)
    return [row.log_id for row in rows]


def _append(conn: Connection, head: LedgerHead, rows: list[Row[Any]], now: datetime,
            config: LedgerConfig) -> None:
    if not rows:
        return
    values: list[dict[str, Any]] = []
    count, prev = head.count, head.head
    times: dict[Any, tuple[datetime, str]] = {}
    for row in rows:
        count += 1
        accepted_at, accepted = _time(times, row.sent_at or row.created_at, now)
        acked_at, acked = _time(times, row.archived_at, now)  # one for a whole result batch
        message_id, size = row.message_id or "", row.size or 0
        entry_hash = chain_hash(count, prev, body_digest(
            row.delivery_id, row.log_id, message_id, row.sha256, size, accepted, acked,
            row.reply))
        values.append({"seq": count, "copy_id": row.id, "delivery_id": row.delivery_id,
                       "log_id": row.log_id, "message_id": message_id, "sha256": row.sha256,
                       "size": size, "accepted_at": accepted_at, "acked_at": acked_at,
                       "ack": row.reply, "prev": prev, "hash": entry_hash})
        prev = entry_hash
    _INSERT_ENTRY.run(conn, values)
    conn.execute(_SET_HEAD, {"b_count": count, "b_head": prev})
    if config.signer is not None and (
            count - head.checkpoint_count >= config.checkpoint_every
            or head.checkpoint_at is None
            or now - head.checkpoint_at >= config.checkpoint_interval):
        _write_checkpoint(conn, config.signer,
                          LedgerHead(count, prev, head.checkpoint_count, head.checkpoint_at), now)


def _time(known: dict[Any, tuple[datetime, str]], stored: Any,
          now: datetime) -> tuple[datetime, str]:
    """A stored time (`now` if none) as a datetime and as the ledger writes it, each made
    once per value: the copies of a result batch share their archive time (and the same
    object is then formatted once by `sqlite_time` too)."""
    found = known.get(stored)
    if found is None:
        moment = as_utc(stored) or now
        found = known[stored] = (moment, format_time(moment))
    return found


def _entry(row: Any) -> Entry:
    return Entry(row.seq, row.delivery_id, row.log_id, row.message_id, row.sha256, row.size,
                 row.accepted_at, row.acked_at, row.ack, row.prev, row.hash)


class LedgerStore:
    engine: Engine
    ledger: LedgerConfig = LedgerConfig()

    def ledger_head(self) -> LedgerHead:
        with self.engine.connect() as conn:
            row = conn.execute(select(archive_ledger_head)
                               .where(archive_ledger_head.c.id == 1)).one()
        return LedgerHead(row._mapping["count"], row.head, row.checkpoint_count, row.checkpoint_at)

    def ledger_entries(self, *, start: int = 1, delivery_id: int | None = None,
                       since: datetime | None = None) -> Iterator[Entry]:
        """Entries in `seq` order from `start`, read in batches (streaming)."""
        c = archive_ledger.c
        after = start - 1
        while True:
            query = select(archive_ledger).where(c.seq > after)
            if delivery_id is not None:
                query = query.where(c.delivery_id == delivery_id)
            if since is not None:
                query = query.where(c.acked_at >= since)
            with self.engine.connect() as conn:
                rows = conn.execute(query.order_by(c.seq).limit(_READ_BATCH)).all()
            for row in rows:
                yield _entry(row)
            if len(rows) < _READ_BATCH:
                return
            after = rows[-1].seq

    def ledger_first_seq(self, *, delivery_id: int | None = None,
                         since: datetime | None = None) -> int | None:
        c = archive_ledger.c
        where = [c.seq > 0]
        if delivery_id is not None:
            where.append(c.delivery_id == delivery_id)
        if since is not None:
            where.append(c.acked_at >= since)
        with self.engine.connect() as conn:
            first: int | None = conn.scalar(select(func.min(c.seq)).where(and_(*where)))
        return first

    def ledger_checkpoints(self) -> list[Checkpoint]:
        c = archive_checkpoints.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(archive_checkpoints).order_by(c.count, c.id)).all()
        return [Checkpoint(r._mapping["count"], r.head, r.time, r.public_key, r.signature)
                for r in rows]

    def ledger_checkpoint(self, signer: Signer, now: datetime) -> Checkpoint:
        """Sign the current head now (whatever is due)."""
        with self.engine.begin() as conn:
            return _write_checkpoint(conn, signer, _lock_head(conn), now)


@dataclass(frozen=True, slots=True)
class ExpectedCopy:
    """A log that owes the archive a copy (its outbox row was made when it became sent)."""

    log_id: int
    delivery_id: int
    message_id: str
    sha256: str
    sent_at: datetime | None
    state: str  # the copy's outbox state: pending | archived | failed


@dataclass(frozen=True, slots=True)
class LogIdentity:
    log_id: int
    delivery_id: int
    status: str
    message_id: str
    when: datetime  # sent_at, else the last update


class ArchiveProofStore:
    """Reads for `archive verify` (archive/verify.py). Mixed into `SqlStore`."""

    engine: Engine

    @staticmethod
    def _scope(query: Any, delivery_id: int | None, since: datetime | None,
               until: datetime | None) -> Any:
        log = delivery_logs.c
        if delivery_id is not None:
            query = query.where(log.delivery_id == delivery_id)
        if since is not None:
            query = query.where(log.sent_at >= since)
        if until is not None:
            query = query.where(log.sent_at < until)
        return query

    def expected_copies(self, *, delivery_id: int | None, since: datetime | None,
                        until: datetime | None, after: int,
                        limit: int) -> list[ExpectedCopy]:
        """The next `limit` logs owing a copy, by log id after `after` (keyset batches)."""
        log, o = delivery_logs.c, archive_outbox.c
        query = (select(log.id, log.delivery_id, log.message_id, o.sha256, log.sent_at, o.state)
                 .join(archive_outbox, o.log_id == log.id).where(log.id > after))
        query = self._scope(query, delivery_id, since, until).order_by(log.id).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [ExpectedCopy(r.id, r.delivery_id, r.message_id or "", r.sha256, r.sent_at,
                             r.state) for r in rows]

    def oldest_unarchived(self, *, delivery_id: int | None, since: datetime | None,
                          until: datetime | None) -> datetime | None:
        """Sent time of the oldest log whose copy the archive has not acknowledged."""
        log, o = delivery_logs.c, archive_outbox.c
        query = (select(func.min(log.sent_at)).join(archive_outbox, o.log_id == log.id)
                 .where(o.state != ArchiveState.ARCHIVED))
        with self.engine.connect() as conn:
            oldest: datetime | None = conn.scalar(self._scope(query, delivery_id, since, until))
        if oldest is not None and oldest.tzinfo is None:  # min() skips the column type
            oldest = oldest.replace(tzinfo=UTC)
        return oldest

    def archive_sink_counts(self, delivery_id: int | None, marks: Mapping[str, Sequence[str]],
                            other: str) -> tuple[list[SinkCount], dict[str, str]]:
        """Copies by the sink their last reply marks (archive/status.py's `SINK_MARKS`: LIKE
        patterns; `other` for a reply with no mark, "" for no reply yet) and state, and each
        sink's latest reply of a copy not archived."""
        o = archive_outbox.c
        sink = case((o.reply == "", literal("")),
                    *[(or_(*[o.reply.like(p) for p in patterns]), literal(name))
                      for name, patterns in marks.items()],
                    else_=literal(other))
        inner = select(sink.label("sink"), o.id, o.state, o.in_doubt, o.reply)
        if delivery_id is not None:
            inner = inner.where(o.delivery_id == delivery_id)
        c = inner.subquery().c  # grouped by a column: PostgreSQL would not match the CASE's binds
        counts = (select(c.sink, c.state, func.count(), func.sum(case((c.in_doubt > 0, 1),
                                                                      else_=0)))
                  .group_by(c.sink, c.state))
        latest = (select(c.sink, func.max(c.id))
                  .where(c.state != ArchiveState.ARCHIVED, c.reply != "").group_by(c.sink))
        with self.engine.connect() as conn:
            rows = [SinkCount(str(s), str(st), int(n), int(d or 0))
                    for s, st, n, d in conn.execute(counts)]
            ids = {int(i): str(s) for s, i in conn.execute(latest)}
            replies = conn.execute(select(o.id, o.reply).where(o.id.in_(list(ids)))).all()
        return rows, {ids[i]: str(reply) for i, reply in replies}

    def log_identities(self, log_ids: Sequence[int]) -> dict[int, LogIdentity]:
        log = delivery_logs.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(log.id, log.delivery_id, log.status, log.message_id,
                                       log.sent_at, log.updated_at)
                                .where(log.id.in_(list(log_ids)))).all()
        return {r.id: LogIdentity(r.id, r.delivery_id, r.status, r.message_id or "",
                                  r.sent_at or r.updated_at) for r in rows}
