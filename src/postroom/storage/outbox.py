"""Storage of the archive outbox: claim due copies, record results (and enter archived ones in
the hash ledger in the same commit), retry, reschedule, count. Mixed into `SqlStore`."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    and_,
    bindparam,
    case,
    delete,
    func,
    select,
    update,
)

from postroom.domain.models import ArchiveCopy, ArchiveResult, ArchiveState
from postroom.errors import StateError
from postroom.storage.common import CHUNK, unclaimed
from postroom.storage.ledger import LedgerConfig, enter_archived
from postroom.storage.prepared import Prepared
from postroom.storage.schema import archive_copy_data, archive_outbox

__all__ = ["OutboxStore"]

_ARCHIVED = Prepared(
    update(archive_outbox)
    .where(archive_outbox.c.id == bindparam("b_id"),
           archive_outbox.c.state == ArchiveState.PENDING)
    .values(state=ArchiveState.ARCHIVED, claimed_until=None, claimed_by=None,
            reply=bindparam("b_reply"), attempts=archive_outbox.c.attempts + 1,
            archived_at=bindparam("b_now"), next_attempt_at=bindparam("b_now")))
_DROP_DATA = delete(archive_copy_data).where(
    archive_copy_data.c.log_id.in_(bindparam("b_logs", expanding=True)))
_DATA_OF = (select(archive_copy_data.c.log_id, archive_copy_data.c.data)
            .where(archive_copy_data.c.log_id.in_(bindparam("b_logs", expanding=True))))


_CLAIMS_ON_SQLITE: dict[bool, Prepared] = {}


def _claim_on_sqlite(by_delivery: bool) -> Prepared:
    """The claim on SQLite, one prepared statement that returns the claimed copies: one
    UPDATE under the write lock, so the subquery's `due` holds for it. The subquery reads
    ix_archive_due in its order, so the LIMIT reads `limit` index entries (ordering by id alone
    sorted every pending copy per claim); the UPDATE finds its rows by id, as in claim_due.
    Built per call, the claim and the read-back of its rows were a tenth of a send's CPU time
    with Email BCC on (bench/RESULTS.md, issue 16)."""
    found = _CLAIMS_ON_SQLITE.get(by_delivery)
    if found is None:
        c = archive_outbox.c
        now = bindparam("b_now", type_=c.next_attempt_at.type)
        due = and_(c.state == ArchiveState.PENDING, c.next_attempt_at <= now,
                   unclaimed(c.claimed_until, now))
        if by_delivery:
            due = and_(due, c.delivery_id == bindparam("b_delivery", type_=Integer))
        candidates = (select(c.id).where(due).order_by(c.next_attempt_at, c.id)
                      .limit(bindparam("b_limit", type_=Integer)))
        found = _CLAIMS_ON_SQLITE.setdefault(by_delivery, Prepared(
            update(archive_outbox)
            .where(c.id.in_(candidates.scalar_subquery()))
            .values(claimed_until=bindparam("b_until", type_=c.claimed_until.type),
                    claimed_by=bindparam("b_worker", type_=String),
                    in_doubt=c.in_doubt + case((c.claimed_until.is_not(None), 1), else_=0))
            .returning(c.id, c.log_id, c.delivery_id, c.attempts, c.sha256)))
    return found


def _bytes_of(conn: Connection, log_ids: list[int]) -> dict[int, bytes]:
    """The bytes of these logs' copies; a claimed copy without them is an error, never an empty
    message sent to the archive."""
    data: dict[int, bytes] = dict(conn.execute(_DATA_OF, {"b_logs": log_ids}).all())
    missing = [log_id for log_id in log_ids if log_id not in data]
    if missing:
        raise StateError(f"archive copies of logs {missing[:10]} have no bytes in the outbox")
    return data


class OutboxStore:
    engine: Engine
    _dialect: str
    ledger: LedgerConfig

    def claim_archive(self, now: datetime, limit: int, lease: timedelta, *,
                      delivery_id: int | None = None, worker: str = "") -> list[ArchiveCopy]:
        """Take up to `limit` due copies for `worker` until `now + lease`.

        Copies are sent as soon as they are claimed, so one whose lease ran out (its sender
        died) may already be in the archive: the takeover counts it in doubt.
        """
        if self._dialect == "sqlite":
            with self.engine.begin() as conn:
                claimed = _claim_on_sqlite(delivery_id is not None).fetch(conn, {
                    "b_now": now, "b_limit": limit, "b_until": now + lease,
                    "b_worker": worker, "b_delivery": delivery_id})
            if not claimed:
                return []
            # The bytes are read after the claim's commit, out of the write lock: only the
            # claimer changes a claimed copy. A read that fails gives the copies back first.
            try:
                with self.engine.connect() as conn:
                    data = _bytes_of(conn, [r.log_id for r in claimed])
            except BaseException:
                with contextlib.suppress(Exception):
                    self._unclaim([r.id for r in claimed])
                raise
            return sorted((ArchiveCopy(r.id, r.log_id, r.delivery_id, r.attempts,
                                       data[r.log_id], r.sha256) for r in claimed),
                          key=lambda copy: copy.id)
        c = archive_outbox.c
        due = and_(c.state == ArchiveState.PENDING, c.next_attempt_at <= now,
                   unclaimed(c.claimed_until, now))
        if delivery_id is not None:
            due = and_(due, c.delivery_id == delivery_id)
        with self.engine.begin() as conn:
            # PostgreSQL: rows locked by SKIP LOCKED first, `due` checked again under the lock.
            candidates = (select(c.id).where(due).order_by(c.next_attempt_at, c.id)
                          .limit(limit).with_for_update(skip_locked=True))
            chosen = and_(due, c.id.in_(list(conn.scalars(candidates))))
            ids = list(conn.scalars(update(archive_outbox)
                                    .where(chosen)
                                    .values(claimed_until=now + lease, claimed_by=worker,
                                            in_doubt=c.in_doubt + case(
                                                (c.claimed_until.is_not(None), 1), else_=0))
                                    .returning(c.id)))
            if not ids:
                return []
            rows = conn.execute(select(archive_outbox).where(c.id.in_(ids))
                                .order_by(c.id)).all()
            data = _bytes_of(conn, [r.log_id for r in rows])
        return [ArchiveCopy(r.id, r.log_id, r.delivery_id, r.attempts, data[r.log_id],
                            r.sha256) for r in rows]

    def _unclaim(self, copy_ids: list[int]) -> None:
        """Give claimed copies back untouched: never sent, so no attempt and no doubt."""
        with self.engine.begin() as conn:
            conn.execute(update(archive_outbox).where(archive_outbox.c.id.in_(copy_ids))
                         .values(claimed_until=None, claimed_by=None))

    def record_archive(self, results: Sequence[ArchiveResult], now: datetime) -> None:
        if not results:
            return
        results = sorted(results, key=lambda r: r.copy_id)  # lock order: by id
        archived = [r for r in results if r.state is ArchiveState.ARCHIVED
                    and r.attempted and not r.in_doubt]
        with self.engine.begin() as conn:
            if archived:  # the common case, in one statement
                _ARCHIVED.run(conn, [{"b_id": r.copy_id, "b_reply": r.reply, "b_now": now}
                                     for r in archived])
            done = {r.copy_id for r in archived}
            for result in results:
                if result.copy_id in done:
                    continue
                values: dict[str, Any] = {"state": result.state, "claimed_until": None,
                                          "claimed_by": None}
                if result.attempted or result.reply:  # "not attempted" says why
                    values["reply"] = result.reply
                if result.attempted:
                    values["attempts"] = archive_outbox.c.attempts + 1
                if result.in_doubt:
                    values["in_doubt"] = archive_outbox.c.in_doubt + 1
                if result.state is ArchiveState.ARCHIVED:
                    values.update(archived_at=now, next_attempt_at=now)
                elif result.next_attempt_at is not None:
                    values["next_attempt_at"] = result.next_attempt_at
                conn.execute(update(archive_outbox)
                             .where(archive_outbox.c.id == result.copy_id,
                                    archive_outbox.c.state == ArchiveState.PENDING)
                             .values(**values))
            # The hash ledger, in the same commit (storage/ledger.py); an archived copy's
            # bytes are no longer kept (a copy whose result did not apply keeps them).
            dropped = enter_archived(conn, [r.copy_id for r in results
                                            if r.state is ArchiveState.ARCHIVED],
                                     now, self.ledger)
            if dropped:
                conn.execute(_DROP_DATA, {"b_logs": dropped})

    def retry_failed_archive(self, now: datetime, delivery_id: int | None = None) -> int:
        """Put failed copies back in the queue (after the archive side was fixed)."""
        where = archive_outbox.c.state == ArchiveState.FAILED
        if delivery_id is not None:
            where = and_(where, archive_outbox.c.delivery_id == delivery_id)
        with self.engine.begin() as conn:
            return conn.execute(update(archive_outbox).where(where).values(
                state=ArchiveState.PENDING, next_attempt_at=now)).rowcount

    def reset_archive_schedule(self, now: datetime, delivery_id: int | None = None) -> int:
        """Make every pending copy due now (an operator asked to flush the outbox).

        In id order, `CHUNK` rows per transaction, skipping rows a worker is recording at this
        moment (it sets their schedule itself): one statement over the whole outbox deadlocked
        with workers recording copies (issue 11).
        """
        c = archive_outbox.c
        where = c.state == ArchiveState.PENDING
        if delivery_id is not None:
            where = and_(where, c.delivery_id == delivery_id)
        changed, after = 0, 0
        while True:
            with self.engine.begin() as conn:
                ids = list(conn.scalars(select(c.id).where(where, c.id > after).order_by(c.id)
                                        .limit(CHUNK).with_for_update(skip_locked=True)))
                if not ids:
                    return changed
                changed += conn.execute(update(archive_outbox).where(c.id.in_(ids), where)
                                        .values(next_attempt_at=now)).rowcount
            after = ids[-1]

    def archive_pending(self, delivery_id: int | None = None) -> int:
        """Copies still pending (of one delivery), read from ix_archive_due's pending range."""
        query = (select(func.count()).select_from(archive_outbox)
                 .where(archive_outbox.c.state == ArchiveState.PENDING))
        if delivery_id is not None:
            query = query.where(archive_outbox.c.delivery_id == delivery_id)
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    def archive_counts(self, delivery_id: int | None = None) -> dict[int, dict[str, int]]:
        query = (select(archive_outbox.c.delivery_id, archive_outbox.c.state, func.count())
                 .group_by(archive_outbox.c.delivery_id, archive_outbox.c.state))
        if delivery_id is not None:
            query = query.where(archive_outbox.c.delivery_id == delivery_id)
        counts: dict[int, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for did, state, count in conn.execute(query):
                counts.setdefault(did, {})[state] = count
        return counts

    def archive_replies(self, delivery_id: int, limit: int = 20) -> list[tuple[int, str, str]]:
        """Recent (log id, state, reply) rows of one delivery's copies, failures first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(archive_outbox.c.log_id, archive_outbox.c.state, archive_outbox.c.reply)
                .where(archive_outbox.c.delivery_id == delivery_id)
                .order_by((archive_outbox.c.state == ArchiveState.ARCHIVED),
                          archive_outbox.c.id.desc())
                .limit(limit)).all()
        return [(int(a), str(b), str(c)) for a, b, c in rows]
