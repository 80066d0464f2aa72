"""Storage for the processes that send: the workers registry, lease renewal, and the
accounting of messages "in doubt" after a crash. Mixed into `SqlStore`.

A worker claims logs (and archive copies) for a lease; its heartbeat renews the lease of what
it still holds, as long as the loop working on them makes progress. A worker that dies stops
renewing, its leases run out, and another worker takes its batch over. A log that was handed
to an SMTP connection (`attempting`) when that happened may have reached the relay: the
takeover counts it `in_doubt`.

Lock order: statements that change many outbox or log rows take them in id order (PostgreSQL:
`SELECT … ORDER BY id FOR UPDATE`, SKIP LOCKED where a row someone else is changing can be left
alone), so two of them cannot wait for each other (docs/operations.md, ADR 0016).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from postroom.domain.models import ArchiveState
from postroom.domain.outcomes import (
    ARCHIVE_RELAY_FAULT,
    RELAY_FAULT,
    FailureReason,
    FailureType,
)
from postroom.domain.states import DeliveryState, LogStatus
from postroom.storage.moves import move_logs
from postroom.storage.prepared import Prepared
from postroom.storage.schema import archive_outbox, deliveries, delivery_logs, workers

__all__ = ["DoubtCounts", "WorkerRow", "WorkerStore"]

_logs = delivery_logs.c
# `mark_attempting` on the send path, one row per log (an `executemany`, ADR 0031): built per
# call with an IN list, SQLAlchemy's statement building and caching was most of its cost.
_MARK_HELD = Prepared(
    update(delivery_logs)
    .where(_logs.id == bindparam("b_id", type_=Integer),
           _logs.claimed_by == bindparam("b_worker", type_=String),
           _logs.claimed_until > bindparam("b_now", type_=_logs.claimed_until.type),
           _logs.status == LogStatus.PENDING)
    .values(attempting=True,
            claimed_until=bindparam("b_until", type_=_logs.claimed_until.type)))


@dataclass(frozen=True, slots=True)
class WorkerRow:
    id: str
    kind: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    delivery_id: int | None
    sent: int
    leases: int  # logs and archive copies it holds now
    error: str | None = None  # why it ended, when one of its loops died

    def alive(self, now: datetime, stale_after: timedelta) -> bool:
        return self.stopped_at is None and now - self.heartbeat_at <= stale_after

    def state(self, now: datetime, lease: timedelta, *, running: bool | None) -> str:
        """stopped | failed (a loop died) | alive | silent | dead.

        It beats every quarter lease: alive while the last beat is at most half a lease old.
        `running` is whether its process exists (None: another host, unknown). A silent
        process that still runs is stuck; with no process, or (elsewhere) no beat for two
        leases, it is dead: its claims have run out or will at once.
        """
        if self.stopped_at is not None:
            return "failed" if self.error else "stopped"
        if running is False:
            return "dead"
        age = now - self.heartbeat_at
        if age <= lease / 2:
            return "alive"
        return "silent" if running or age <= 2 * lease else "dead"


@dataclass(frozen=True, slots=True)
class DoubtCounts:
    """What crashes and dropped connections left uncertain, for one delivery."""

    logs: int  # logs that were in doubt at least once (each may have been received twice)
    events: int  # in-doubt episodes in all
    review: int  # logs waiting for an operator (at-most-once policy)
    archive: int  # archive copies a dead sender held (each may be in the archive twice)


class WorkerStore:
    engine: Engine

    def register_worker(self, worker_id: str, *, kind: str, host: str, pid: int,
                        now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(workers).values(id=worker_id, kind=kind, host=host, pid=pid,
                                                started_at=now, heartbeat_at=now, sent=0))

    def heartbeat(self, worker_id: str, now: datetime, lease: timedelta, *,
                  delivery_id: int | None = None, sent: int | None = None,
                  alive: bool = True, logs: bool = True, copies: bool = True) -> int:
        """Say the worker is alive and renew the leases it still holds; returns how many.

        `alive=False` (one of its loops is stalled) leaves the beat as it was, so the worker
        shows silent; `logs`/`copies` False leave the leases of a stalled loop to run out.
        Only unexpired leases are renewed: one that ran out may already be someone else's; and
        rows another transaction is changing now (being recorded) are skipped.
        """
        values: dict[str, Any] = {"delivery_id": delivery_id}
        if alive:
            values["heartbeat_at"] = now
        if sent is not None:
            values["sent"] = sent
        until = now + lease
        log, copy = delivery_logs.c, archive_outbox.c
        with self.engine.begin() as conn:
            conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))
            renewed = 0
            if delivery_id is not None and logs:
                # Only logs handed to a connection: one claimed and not handed over within a
                # lease (or claimed by a commit whose answer a database fault lost) is left to
                # run out; `mark_attempting` then refuses it to this worker, so nothing is held
                # forever and nothing is sent twice.
                renewed += self._in_id_order(conn, delivery_logs, and_(
                    log.delivery_id == delivery_id, log.status == LogStatus.PENDING,
                    log.claimed_by == worker_id, log.claimed_until > now,
                    log.attempting.is_(True)),
                    {"claimed_until": until}, skip_locked=True)
            if copies:
                renewed += self._in_id_order(conn, archive_outbox, and_(
                    copy.state == ArchiveState.PENDING, copy.claimed_by == worker_id,
                    copy.claimed_until > now), {"claimed_until": until}, skip_locked=True)
        return renewed

    @staticmethod
    def _in_id_order(conn: Any, table: Table, where: ColumnElement[bool],
                     values: dict[str, Any], *, skip_locked: bool) -> int:
        """UPDATE the rows matching `where`, locked in id order (see the module doc)."""
        ident = table.c.id
        ids = list(conn.scalars(select(ident).where(where).order_by(ident)
                                .with_for_update(skip_locked=skip_locked)))
        if not ids:
            return 0
        return int(conn.execute(update(table).where(ident.in_(ids), where)
                                .values(**values)).rowcount)

    def release_claims(self, worker_id: str, now: datetime) -> int:
        """A sender whose loop died gives its claims back at once: their leases end now.

        Logs it was attempting keep that mark and archive copies stay marked as held, so the
        next claim counts them in doubt, as after a crash.
        """
        with self.engine.begin() as conn:
            return (self._in_id_order(conn, delivery_logs, and_(
                        delivery_logs.c.claimed_by == worker_id,
                        delivery_logs.c.status == LogStatus.PENDING,
                        delivery_logs.c.claimed_until > now),
                        {"claimed_until": now}, skip_locked=False)
                    + self._in_id_order(conn, archive_outbox, and_(
                        archive_outbox.c.claimed_by == worker_id,
                        archive_outbox.c.state == ArchiveState.PENDING,
                        archive_outbox.c.claimed_until > now),
                        {"claimed_until": now}, skip_locked=False))

    def stuck_archive(self, now: datetime, live: set[str]) -> int:
        """Pending copies whose lease ran out while held by a sender that is not alive (it
        died, or its loop did): nobody has taken them over yet."""
        c = archive_outbox.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.claimed_by, func.count())
                                .where(c.state == ArchiveState.PENDING,
                                       c.claimed_by.is_not(None), c.claimed_until <= now)
                                .group_by(c.claimed_by)).all()
        return sum(int(count) for holder, count in rows if holder not in live)

    def deregister_worker(self, worker_id: str, now: datetime, *, sent: int | None = None,
                          error: str | None = None) -> None:
        values: dict[str, Any] = {"stopped_at": now, "heartbeat_at": now, "delivery_id": None,
                                  "error": error}
        if sent is not None:
            values["sent"] = sent
        with self.engine.begin() as conn:
            conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))

    def list_workers(self, now: datetime, *, include_stopped_since: datetime | None = None
                     ) -> list[WorkerRow]:
        """Workers not stopped (and those stopped after `include_stopped_since`), newest first."""
        held_logs = (select(func.count()).where(delivery_logs.c.claimed_by == workers.c.id,
                                                delivery_logs.c.status == LogStatus.PENDING,
                                                delivery_logs.c.claimed_until > now)
                     .scalar_subquery())
        held_copies = (select(func.count()).where(archive_outbox.c.claimed_by == workers.c.id,
                                                  archive_outbox.c.state == ArchiveState.PENDING,
                                                  archive_outbox.c.claimed_until > now)
                       .scalar_subquery())
        shown: ColumnElement[bool] = workers.c.stopped_at.is_(None)
        if include_stopped_since is not None:
            shown = or_(shown, workers.c.stopped_at >= include_stopped_since)
        with self.engine.connect() as conn:
            rows = conn.execute(select(workers, held_logs.label("held_logs"),
                                       held_copies.label("held_copies"))
                                .where(shown).order_by(workers.c.started_at.desc())).all()
        return [WorkerRow(r.id, r.kind, r.host, r.pid, r.started_at, r.heartbeat_at,
                          r.stopped_at, r.delivery_id, r.sent,
                          int(r.held_logs) + int(r.held_copies), r.error) for r in rows]

    def forget_workers(self, before: datetime) -> int:
        """Drop registry rows of workers stopped, or silent, since before `before`."""
        with self.engine.begin() as conn:
            return conn.execute(delete(workers).where(or_(
                workers.c.stopped_at < before,
                and_(workers.c.stopped_at.is_(None), workers.c.heartbeat_at < before)))).rowcount

    def next_sending_delivery(self, now: datetime) -> int | None:
        """A delivery in state `sending` with a log that can be claimed now, or with no log
        left to send nor to review (oldest first).

        The second kind is one whose sender died between recording its last log and moving it
        to `finished`: a run over it sends nothing and finishes it. Without it such a delivery
        would stay `sending` for good, since no claimable log would ever bring a worker to it.
        """
        logs = delivery_logs.c
        claimable = (select(logs.id).where(
            logs.delivery_id == deliveries.c.id, logs.status == LogStatus.PENDING,
            logs.next_attempt_at <= now,
            or_(logs.claimed_until.is_(None), logs.claimed_until <= now)))
        left = select(logs.id).where(logs.delivery_id == deliveries.c.id,
                                     logs.status.in_((LogStatus.PENDING, LogStatus.REVIEW)))
        with self.engine.connect() as conn:
            found: int | None = conn.scalar(
                select(deliveries.c.id)
                .where(deliveries.c.state == DeliveryState.SENDING,
                       or_(exists(claimable), ~exists(left)))
                .order_by(deliveries.c.id).limit(1))
        return found

    def mark_attempting(self, log_ids: list[int], *, worker: str | None = None,
                        now: datetime | None = None,
                        lease: timedelta | None = None) -> list[int]:
        """These claimed logs are being handed to SMTP connections (see the module doc).

        Given `worker` and `now`, only logs it still holds (its lease not run out: a database
        outage may have outlasted it, and another sender taken them) are marked; returns the
        ids marked, the only ones the caller may send. Given `lease` too, their lease is
        renewed from `now` in the same write: a batch claimed near the end of its lease (a slow
        render, a long wait for a connection) must not run out between this mark and the
        sender's next heartbeat, or another sender takes it over while it is on the wire and
        the recipient gets it twice.
        """
        if not log_ids:
            return []
        c = delivery_logs.c
        if worker is not None and now is not None and lease is not None:  # the send path
            rows = [{"b_id": log_id, "b_worker": worker, "b_now": now, "b_until": now + lease}
                    for log_id in log_ids]
            with self.engine.begin() as conn:
                if _MARK_HELD.run(conn, rows) == len(rows):
                    return list(log_ids)
                # Some lease ran out: the logs this worker still holds, read under the lock.
                return list(conn.scalars(select(c.id).where(
                    c.id.in_(log_ids), c.claimed_by == worker, c.claimed_until > now,
                    c.attempting.is_(True), c.status == LogStatus.PENDING)))
        where: ColumnElement[bool] = c.id.in_(log_ids)
        values: dict[str, Any] = {"attempting": True}
        if worker is not None and now is not None:
            where = and_(where, c.claimed_by == worker, c.claimed_until > now,
                         c.status == LogStatus.PENDING)
            if lease is not None:
                values["claimed_until"] = now + lease
        with self.engine.begin() as conn:
            return list(conn.scalars(update(delivery_logs).where(where)
                                     .values(**values).returning(c.id)))

    def abandon(self, log_ids: list[int], now: datetime, *, review: bool) -> None:
        """Claimed logs whose messages were on the wire when the sender stopped at once: the
        relay may have them. Counted in doubt now, as a takeover would count them, and given
        back for a resend, or set aside for an operator (`review`)."""
        if not log_ids:
            return
        logs = delivery_logs.c
        values: dict[str, Any] = {"attempting": False, "claimed_until": None,
                                  "claimed_by": None, "in_doubt": logs.in_doubt + 1,
                                  "updated_at": now}
        target = LogStatus.PENDING
        if review:
            target = LogStatus.REVIEW
            values.update(detail="in doubt: the send was stopped while the relay had it, "
                          "before its answer; resend or count it failed")
        with self.engine.begin() as conn:
            move_logs(conn, logs.id.in_(log_ids), LogStatus.PENDING, target, **values)

    def retry_now(self, delivery_id: int, now: datetime, *, relay_only: bool = False) -> int:
        """Make due now the pending logs that wait for a later attempt because no connection
        could be had: held for a relay fault, deferred for a connection fault, postponed for a
        domain's hourly limit (`relay_only`: the first kind alone). Never a log that is sent,
        failed, cancelled or in review, none a live sender holds, and none deferred by a
        recipient's reply (its server asked for the wait)."""
        logs = delivery_logs.c
        kinds: ColumnElement[bool] = logs.detail.like(f"{RELAY_FAULT}%")
        if not relay_only:
            kinds = or_(kinds, logs.detail.like("waiting for the hourly limit%"),
                        and_(logs.failure_reason == int(FailureReason.UNREACHABLE),
                             logs.smtp_reply == ""))
        with self.engine.begin() as conn:
            return conn.execute(
                update(delivery_logs)
                .where(logs.delivery_id == delivery_id, logs.status == LogStatus.PENDING,
                       logs.next_attempt_at > now,
                       or_(logs.claimed_until.is_(None), logs.claimed_until <= now), kinds)
                .values(next_attempt_at=now)).rowcount

    def relay_waiting(self, delivery_id: int) -> tuple[int, str]:
        """How many pending logs of a delivery wait for the relay, and the latest fault."""
        logs = delivery_logs.c
        waiting = and_(logs.delivery_id == delivery_id, logs.status == LogStatus.PENDING,
                       logs.detail.like(f"{RELAY_FAULT}%"))
        with self.engine.connect() as conn:
            count = int(conn.scalar(select(func.count()).where(waiting)) or 0)
            detail = conn.scalar(select(logs.detail).where(waiting)
                                 .order_by(logs.updated_at.desc(), logs.id.desc()).limit(1))
        return count, str(detail or "")

    def archive_relay_waiting(self) -> tuple[int, str]:
        """How many pending archive copies the archive relay's fault held back, and the
        latest such reply."""
        copies = archive_outbox.c
        waiting = and_(copies.state == ArchiveState.PENDING,
                       copies.reply.like(f"%{ARCHIVE_RELAY_FAULT}%"))
        with self.engine.connect() as conn:
            count = int(conn.scalar(select(func.count()).where(waiting)) or 0)
            reply = conn.scalar(select(copies.reply).where(waiting)
                                .order_by(copies.id.desc()).limit(1))
        return count, str(reply or "")

    def postpone(self, log_ids: list[int], until: datetime, *, detail: str) -> None:
        """Give claimed logs back unsent, due at `until` (a domain's hourly limit): no attempt
        is counted, and nothing about them is in doubt."""
        if not log_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(update(delivery_logs)
                         .where(delivery_logs.c.id.in_(log_ids),
                                delivery_logs.c.status == LogStatus.PENDING)
                         .values(next_attempt_at=until, claimed_until=None, claimed_by=None,
                                 attempting=False, detail=detail))

    def record_slowdowns(self, delivery_id: int, slowdowns: list[dict[str, Any]]) -> None:
        """Keep the domains a run slowed down (by domain and start) for the delivery's report."""
        if not slowdowns:
            return
        with self.engine.begin() as conn:
            # Read by a write that changes nothing: it takes the row's lock (SQLite: the write
            # lock) first, so the send processes finishing together each add theirs.
            known = conn.scalar(update(deliveries).where(deliveries.c.id == delivery_id)
                                .values(slowdowns=deliveries.c.slowdowns)
                                .returning(deliveries.c.slowdowns)) or []
            merged = {(s["domain"], s["since"]): s for s in [*known, *slowdowns]}
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id)
                         .values(slowdowns=sorted(merged.values(),
                                                  key=lambda s: (s["since"], s["domain"]))))

    def slowdowns(self, delivery_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            found: list[dict[str, Any]] = conn.scalar(
                select(deliveries.c.slowdowns).where(deliveries.c.id == delivery_id)) or []
        return found

    def review_doubtful(self, delivery_id: int, now: datetime) -> int:
        """At-most-once: logs a dead worker held while attempting go to `review`, unsent."""
        logs = delivery_logs.c
        with self.engine.begin() as conn:
            return move_logs(
                conn, and_(logs.delivery_id == delivery_id, logs.attempting.is_(True),
                           logs.claimed_until <= now),
                LogStatus.PENDING, LogStatus.REVIEW, attempting=False, claimed_until=None,
                claimed_by=None, in_doubt=logs.in_doubt + 1, updated_at=now,
                detail="in doubt: the worker sending it stopped before recording the relay's "
                       "answer; resend or count it failed")

    def resolve_review(self, delivery_id: int, *, resend: bool, now: datetime) -> int:
        """An operator's decision on logs in `review`: send again, or count them failed."""
        values: dict[str, Any] = {"updated_at": now}
        if resend:
            target = LogStatus.PENDING
            values.update(next_attempt_at=now)
        else:
            target = LogStatus.FAILED
            values.update(failure_type=FailureType.UNDEFINED,
                          failure_reason=FailureReason.UNDEFINED,
                          detail="in doubt: counted failed by an operator, not resent")
        with self.engine.begin() as conn:
            return move_logs(conn, delivery_logs.c.delivery_id == delivery_id,
                             LogStatus.REVIEW, target, **values)

    def review_waiting(self, delivery_id: int) -> int:
        """How many of the delivery's logs wait for an operator's decision."""
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).where(
                delivery_logs.c.delivery_id == delivery_id,
                delivery_logs.c.status == LogStatus.REVIEW)) or 0)

    def doubt_counts(self, delivery_id: int) -> DoubtCounts:
        logs = delivery_logs.c
        with self.engine.connect() as conn:
            row = conn.execute(select(
                func.count().filter(logs.in_doubt > 0),
                func.coalesce(func.sum(logs.in_doubt), 0),
                func.count().filter(logs.status == LogStatus.REVIEW),
            ).where(logs.delivery_id == delivery_id)).one()
            archive = conn.scalar(select(func.count()).where(
                archive_outbox.c.delivery_id == delivery_id, archive_outbox.c.in_doubt > 0))
        return DoubtCounts(int(row[0]), int(row[1]), int(row[2]), int(archive or 0))
