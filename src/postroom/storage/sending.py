"""Storage of the send path: claim due logs, record outcomes, release, next due, expire.
Mixed into `SqlStore`.

`record()` writes, in one commit: the logs' outcomes, the archive copies owed (the outbox),
the mirror pages, and what each outcome says about its address (`InboundStore`, which this
part builds on for that reason).
"""

from __future__ import annotations

import contextlib
import hashlib
import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, case, func, insert, or_, select, update

from postroom.bounces.normalize import normalize_text
from postroom.bounces.quarantine import AddressEvent, AddressState, AddressStatus
from postroom.domain.models import ArchiveState, EmailFormat, LogUpdate, Recipient, Target
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.states import LogStatus, can_log_move
from postroom.errors import StateError
from postroom.storage.common import chunks, unclaimed
from postroom.storage.inbound import InboundStore, address_row
from postroom.storage.prepared import Prepared
from postroom.storage.schema import (
    address_status,
    archive_copy_data,
    archive_outbox,
    as_utc,
    delivery_logs,
    mirror_pages,
    recipients,
)

__all__ = ["SendingStore"]


class SendingStore(InboundStore):
    engine: Engine
    _dialect: str

    def claim_due(self, delivery_id: int, now: datetime, limit: int,
                  lease: timedelta, *, worker: str = "") -> list[Target]:
        """Take up to `limit` due pending logs; they are `worker`'s until `now + lease`.

        Only rows this call's UPDATE changed are returned, so two senders never get one log.
        Taking over a log whose lease ran out while it was being attempted counts it in doubt.
        """
        c = delivery_logs.c
        due = and_(c.delivery_id == delivery_id, c.status == LogStatus.PENDING,
                   c.next_attempt_at <= now, unclaimed(c.claimed_until, now))
        with self.engine.begin() as conn:
            candidates = (select(c.id).where(due).order_by(c.next_attempt_at, c.id)
                          .limit(limit).with_for_update(skip_locked=True))
            # SQLite: one statement under the write lock, so the subquery's `due` holds for the
            # UPDATE, which then finds its rows by id (checking `due` again made it walk every
            # due row of the delivery: O(audience) per claim). PostgreSQL: rows locked by
            # SKIP LOCKED first, `due` checked again under the lock.
            chosen = (c.id.in_(candidates.scalar_subquery()) if self._dialect == "sqlite"
                      else and_(due, c.id.in_(list(conn.scalars(candidates)))))
            ids = list(conn.scalars(update(delivery_logs)
                                    .where(chosen)
                                    .values(claimed_until=now + lease, claimed_by=worker,
                                            attempting=False,
                                            in_doubt=c.in_doubt + case(
                                                (c.attempting.is_(True), 1), else_=0))
                                    .returning(c.id)))
            if not ids:
                return []
            ids = self._fail_held(conn, ids, now)
            if self._dialect != "sqlite":
                return _targets(conn, ids)
        # SQLite: read after the claim's commit, out of the write lock (ADR 0033); the logs are
        # this sender's until the lease runs out. A read that fails gives them back first.
        try:
            with self.engine.connect() as conn:
                return _targets(conn, ids)
        except BaseException:
            with contextlib.suppress(Exception):
                self.release(ids)
            raise

    def _fail_held(self, conn: Any, ids: list[int], now: datetime) -> list[int]:
        """Fail the claimed logs whose address went into quarantine or onto the denylist since
        the delivery was analysed (a hard bounce meanwhile, say): they are not sent, and not
        retried. Returns the ids still to send."""
        if self.policy is None:
            return ids
        c = delivery_logs.c
        held = conn.execute(_HELD_OF, {"b_ids": ids}).all()
        if not held:
            return ids
        for status, reason, words in (
                (AddressStatus.QUARANTINE, FailureReason.QUARANTINE, "in quarantine"),
                (AddressStatus.DENYLISTED, FailureReason.DENYLISTED, "denylisted")):
            batch = [log_id for log_id, held_as in held if held_as == str(status)]
            if batch:
                conn.execute(update(delivery_logs).where(c.id.in_(batch)).values(
                    status=LogStatus.FAILED, failure_type=str(FailureType.HARD),
                    failure_reason=int(reason), next_attempt_at=None, claimed_until=None,
                    claimed_by=None, attempting=False, updated_at=now,
                    detail=f"not sent: the address is {words} since the analysis"))
        failed = {log_id for log_id, _ in held}
        return [log_id for log_id in ids if log_id not in failed]

    def release(self, log_ids: Sequence[int]) -> None:
        """Give claimed logs back unsent (a pause or stop came between claim and send)."""
        with self.engine.begin() as conn:
            for batch in chunks(log_ids):
                conn.execute(update(delivery_logs).where(delivery_logs.c.id.in_(batch))
                             .values(claimed_until=None, claimed_by=None, attempting=False))

    def record(self, updates: Sequence[LogUpdate], now: datetime) -> None:
        """Record send outcomes; a sent log's archive copy enters the outbox in the same commit."""
        if not updates:
            return
        updates = sorted(updates, key=lambda u: u.log_id)  # lock order: by id
        with self.engine.begin() as conn:
            for moves, rows in _by_source_states(updates, now):
                _log_update(moves).run(conn, rows)
            copies = {u.log_id: u for u in updates if u.archive_data is not None}
            if copies:
                # Only logs this very update made `sent`, never a second copy (`_OWED_OF`).
                owed = conn.execute(_OWED_OF, {"b_ids": list(copies)}).all()
                if owed:
                    _INSERT_COPY.run(conn, [
                        {"log_id": log_id, "delivery_id": delivery_id,
                         "state": ArchiveState.PENDING, "attempts": 0, "next_attempt_at": now,
                         "sha256": copies[log_id].sha256 or _sha(copies[log_id].archive_data),
                         "reply": "", "created_at": now}
                        for log_id, delivery_id in owed])
                    _INSERT_COPY_DATA.run(conn, [
                        {"log_id": log_id, "data": copies[log_id].archive_data}
                        for log_id, _ in owed])
            self._record_mirrors(conn, updates, now)
            events, states = self._address_events(conn, updates)
            self.apply_address_events(conn, events, now, states=states)
            self.count_unqualified_texts(conn, [(normalize_text(u.smtp_reply), u.smtp_reply)
                                                for u in updates
                                                if u.to_qualify and u.smtp_reply], now)

    def _address_events(self, conn: Any, updates: Sequence[LogUpdate]) -> tuple[
        list[tuple[str, AddressEvent]], dict[str, AddressState]
    ]:
        """What each synchronous outcome says about its address (DESIGN.md §5), and the
        addresses' stored states, read together (one statement).

        A connection fault says nothing about the address, so it is no event.
        """
        if self.policy is None:
            return [], {}
        rows = conn.execute(_ADDRESSES_OF, {"b_ids": [u.log_id for u in updates]}).all()
        email_of = {row.log_id: row.email for row in rows}
        states = {row.address: address_row(row) for row in rows if row.address is not None}
        events: list[tuple[str, AddressEvent]] = []
        for u in updates:
            address = email_of.get(u.log_id)
            if address is None:
                continue
            if u.status is LogStatus.SENT:
                events.append((address, AddressEvent.success()))
            elif u.smtp_reply and u.failure_type in (FailureType.HARD, FailureType.SOFT):
                events.append((address, AddressEvent.failure(
                    u.failure_type, u.failure_reason or FailureReason.UNDEFINED,
                    u.smtp_reply)))
        return events, states

    def _record_mirrors(self, conn: Any, updates: Sequence[LogUpdate], now: datetime) -> None:
        pages = [u for u in updates if u.mirror_html is not None and u.mirror_until is not None
                 and u.status is LogStatus.SENT]
        if not pages:
            return
        sent = dict(conn.execute(
            select(delivery_logs.c.id, delivery_logs.c.delivery_id)
            .where(delivery_logs.c.id.in_([u.log_id for u in pages]),
                   delivery_logs.c.status == LogStatus.SENT,
                   ~select(mirror_pages.c.log_id)
                   .where(mirror_pages.c.log_id == delivery_logs.c.id).exists())).all())
        rows = [{"log_id": u.log_id, "delivery_id": sent[u.log_id],
                 "html": zlib.compress(u.mirror_html or b""), "created_at": now,
                 "expires_at": u.mirror_until} for u in pages if u.log_id in sent]
        if rows:
            conn.execute(insert(mirror_pages), rows)

    def next_due(self, delivery_id: int, now: datetime | None = None) -> datetime | None:
        """When the delivery's next pending log can be sent (None: nothing is pending).

        Given `now`, a log another sender holds counts as due when its lease runs out.
        """
        c = delivery_logs.c
        when: Any = c.next_attempt_at if now is None else case(
            (c.claimed_until > now, c.claimed_until), else_=c.next_attempt_at)
        with self.engine.connect() as conn:
            value = conn.scalar(select(func.min(when)).where(
                c.delivery_id == delivery_id, c.status == LogStatus.PENDING))
        return as_utc(value)

    def expire_pending(self, delivery_id: int, now: datetime, *, status: LogStatus,
                       reason: FailureReason | None, detail: str) -> int:
        """Close every pending log of a delivery (validity over, or the delivery stopped)."""
        if not can_log_move(LogStatus.PENDING, status):
            raise StateError(f"a pending log cannot become {status}")
        with self.engine.begin() as conn:
            return conn.execute(
                update(delivery_logs)
                .where(delivery_logs.c.delivery_id == delivery_id,
                       delivery_logs.c.status == LogStatus.PENDING)
                .values(status=status, next_attempt_at=None, detail=detail,
                        failure_reason=reason,
                        failure_type=FailureType.SOFT if reason is not None else None,
                        updated_at=now)).rowcount


# The reads `claim_due` and `record()` run per batch, built once with the ids as one expanding
# parameter: `in_(ids)` per call made SQLAlchemy coerce each of a claim's 200 ids into a bound
# parameter (most of the claim's Python time).
_r = recipients.c
_FORMATS = {str(f): f for f in EmailFormat}  # a dict lookup: EmailFormat(x) is 2.5 µs a row
# Of the logs a `record()` made sent, those that owe an archive copy: only logs this very
# update made `sent`, and never a second copy for a log.
_OWED_OF = (select(delivery_logs.c.id, delivery_logs.c.delivery_id)
            .where(delivery_logs.c.id.in_(bindparam("b_ids", expanding=True)),
                   delivery_logs.c.status == LogStatus.SENT,
                   ~select(archive_outbox.c.id)
                   .where(archive_outbox.c.log_id == delivery_logs.c.id).exists()))
# The recorded logs' addresses with their stored states (`_address_events`).
_ADDRESSES_OF = (select(delivery_logs.c.id.label("log_id"), delivery_logs.c.email,
                        address_status)
                 .outerjoin(address_status,
                            address_status.c.address == delivery_logs.c.email)
                 .where(delivery_logs.c.id.in_(bindparam("b_ids", expanding=True))))
# The claimed logs whose address is now held (`_fail_held`).
_HELD_OF = (select(delivery_logs.c.id, address_status.c.status)
            .join(address_status, address_status.c.address == delivery_logs.c.email)
            .where(delivery_logs.c.id.in_(bindparam("b_ids", expanding=True)),
                   address_status.c.status.in_((str(AddressStatus.QUARANTINE),
                                                str(AddressStatus.DENYLISTED)))))
# What rendering needs of a claimed log, and no more (the recipient's two times were converted
# for nothing); the rows are unpacked by position, which Row does at C speed.
_TARGET_COLUMNS = (delivery_logs.c.id, delivery_logs.c.attempts, _r.id, _r.email, _r.first_name,
                   _r.last_name, _r.email_format, _r.opted_out, _r.fields)
_TARGETS_OF = (select(*_TARGET_COLUMNS)
               .join(recipients, _r.id == delivery_logs.c.recipient_id)
               .where(delivery_logs.c.id.in_(bindparam("b_ids", expanding=True)))
               .order_by(delivery_logs.c.id))


def _targets(conn: Any, ids: list[int]) -> list[Target]:
    rows = conn.execute(_TARGETS_OF, {"b_ids": ids}).all()
    return [Target(log_id, attempts, Recipient(
                recipient_id, email, first_name, last_name, _FORMATS[email_format],
                bool(opted_out), dict(fields or {})))
            for (log_id, attempts, recipient_id, email, first_name, last_name, email_format,
                 opted_out, fields) in rows]


_UPDATE_COLUMNS = ("status", "attempts", "next_attempt_at", "failure_type", "failure_reason",
                   "detail", "smtp_reply", "message_id", "sent_at", "size", "sha256",
                   "updated_at", "claimed_until")


_INSERT_COPY = Prepared(insert(archive_outbox), columns=[
    "log_id", "delivery_id", "state", "attempts", "next_attempt_at", "sha256", "reply",
    "created_at"])
_INSERT_COPY_DATA = Prepared(insert(archive_copy_data), columns=["log_id", "data"])
_LOG_UPDATES: dict[tuple[LogStatus, ...], Prepared] = {}


def _log_update(moves: Sequence[LogStatus]) -> Prepared:
    """The UPDATE of logs that may move from one of `moves` to their recorded status."""
    key = tuple(moves)
    found = _LOG_UPDATES.get(key)
    if found is None:
        found = _LOG_UPDATES.setdefault(key, Prepared(
            update(delivery_logs)
            .where(delivery_logs.c.id == bindparam("b_id"),
                   or_(*(delivery_logs.c.status == status for status in key)))
            .values({**{name: bindparam(name) for name in _UPDATE_COLUMNS},
                     "claimed_by": None, "attempting": False,
                     "in_doubt": delivery_logs.c.in_doubt + bindparam("b_doubt")})))
    return found


def _update_values(u: LogUpdate, now: datetime) -> dict[str, Any]:
    return {"b_id": u.log_id, "status": u.status, "attempts": u.attempts,
            "next_attempt_at": u.next_attempt_at, "failure_type": u.failure_type,
            "failure_reason": u.failure_reason, "detail": u.detail,
            "smtp_reply": u.smtp_reply, "message_id": u.message_id, "sent_at": u.sent_at,
            "size": u.size, "sha256": u.sha256, "updated_at": now, "claimed_until": None,
            "b_doubt": int(u.in_doubt)}


def _by_source_states(updates: Sequence[LogUpdate], now: datetime) -> Iterator[
    tuple[list[LogStatus], list[dict[str, Any]]]
]:
    """Group updates by the statuses a log may have for the update to apply (LOG_MOVES)."""
    groups: dict[tuple[LogStatus, ...], list[dict[str, Any]]] = {}
    for u in updates:
        sources = tuple(s for s in (LogStatus.PENDING, LogStatus.CANCELLED)
                        if can_log_move(s, u.status))
        groups.setdefault(sources, []).append(_update_values(u, now))
    for sources, rows in groups.items():
        yield list(sources), rows


def _sha(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()
