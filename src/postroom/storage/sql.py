"""The SQL store: every read and write Postroom makes, on SQLite or (later) PostgreSQL.

Plain SQLAlchemy Core. Writes that belong together share one transaction: a log turning `sent`
and its archive copy entering the outbox commit together, or not at all.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from postroom.bounces.normalize import normalize_text
from postroom.bounces.quarantine import AddressEvent, AddressState, AddressStatus
from postroom.domain.models import (
    ArchiveCopy,
    ArchiveResult,
    ArchiveState,
    Audience,
    Delivery,
    DeliveryLog,
    EmailFormat,
    LogUpdate,
    Recipient,
    RecipientRow,
    Target,
    Template,
    UpsertCounts,
)
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.properties import Properties
from postroom.domain.states import DeliveryState, LogStatus, can_log_move, transition
from postroom.errors import InputError, NotFoundError, ReadOnlyError, StateError
from postroom.storage import migrate
from postroom.storage.audience import AudienceStore
from postroom.storage.inbound import InboundStore, address_row
from postroom.storage.ledger import ArchiveProofStore, LedgerStore, append_entries
from postroom.storage.schema import (
    address_status,
    archive_outbox,
    as_utc,
    audience_members,
    deliveries,
    delivery_logs,
    instance_secrets,
    mirror_pages,
    recipients,
    templates,
)
from postroom.storage.workers import WorkerStore

__all__ = ["SqlStore", "open_store"]

_CHUNK = 500
T = TypeVar("T")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_store(url: str) -> SqlStore:
    """Open (and migrate to the newest schema) the database at `url`."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate.upgrade(engine)
    return SqlStore(engine)


def _recipient(row: Any, address_status: str = "valid") -> Recipient:
    """`address_status`: the row's own column when it has one (the audience query joins it)."""
    return Recipient(
        id=row.id,
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        email_format=EmailFormat(row.email_format),
        opted_out=bool(row.opted_out),
        fields=dict(row.fields or {}),
        address_status=address_status,
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        name=row.name,
        template_name=row.template_name,
        state=DeliveryState(row.state),
        properties=Properties.model_validate(row.properties),
        audience=Audience.from_json(row.audience),
        salt=row.salt,
        last_error=row.last_error,
        created_at=row.created_at,
        analyzed_at=row.analyzed_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _log(row: Any) -> DeliveryLog:
    return DeliveryLog(
        id=row.id,
        delivery_id=row.delivery_id,
        recipient_id=row.recipient_id,
        email=row.email,
        status=LogStatus(row.status),
        failure_type=FailureType(row.failure_type) if row.failure_type else None,
        failure_reason=(
            FailureReason(row.failure_reason) if row.failure_reason is not None else None
        ),
        detail=row.detail,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        smtp_reply=row.smtp_reply,
        message_id=row.message_id,
        sent_at=row.sent_at,
        size=row.size,
        sha256=row.sha256,
        archive_state=ArchiveState(row.archive_state) if row.archive_state else None,
    )


def _chunks(items: Iterable[T], size: int = _CHUNK) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class SqlStore(InboundStore, WorkerStore, AudienceStore, LedgerStore, ArchiveProofStore):
    """Postroom's storage on one SQLAlchemy engine."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._dialect = engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # -- recipients ---------------------------------------------------------------------------

    def upsert_recipients(self, rows: Sequence[RecipientRow], now: datetime) -> UpsertCounts:
        """Insert new recipients and update existing ones (matched by email), in one transaction.

        An update changes only the columns the row was given and merges custom fields.
        """
        latest = {row.email: row for row in rows}  # the last row for an address wins
        with self.engine.begin() as conn:
            existing = {
                row.email: row.fields or {}
                for row in conn.execute(select(recipients.c.email, recipients.c.fields)
                                        .where(recipients.c.email.in_(latest)))
            }
            fresh = [row for email, row in latest.items() if email not in existing]
            if fresh:
                conn.execute(insert(recipients), [
                    {"email": row.email, "email_key": row.email.lower(),
                     "first_name": row.first_name, "last_name": row.last_name,
                     "email_format": str(row.email_format), "opted_out": row.opted_out,
                     "fields": row.fields or {}, "created_at": now, "updated_at": now}
                    for row in fresh])
            for email, fields in existing.items():
                row = latest[email]
                values: dict[str, Any] = {"fields": {**fields, **(row.fields or {})},
                                          "updated_at": now}
                for column in row.given:
                    value = getattr(row, column)
                    values[column] = str(value) if column == "email_format" else value
                conn.execute(update(recipients).where(recipients.c.email == email)
                             .values(**values))
        return UpsertCounts(inserted=len(fresh), updated=len(existing))

    def recipient_ids(self, emails: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        with self.engine.connect() as conn:
            for batch in _chunks(emails):
                query = select(recipients.c.email, recipients.c.id).where(
                    recipients.c.email.in_(batch)
                )
                found.update({row.email: row.id for row in conn.execute(query)})
        return found

    def count_recipients(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(recipients)) or 0)

    def iter_audience(self, delivery: Delivery, batch_size: int = 1000) -> Iterator[Recipient]:
        """The delivery's targets in (email_key, position) order, read in keyset batches.

        Equal addresses come out next to each other, so duplicates are found with O(1) memory.
        """
        status = address_status.c.status.label("address_status")
        base, key_col = self._audience_query(delivery, recipients, status)
        base = base.outerjoin(address_status, address_status.c.address == recipients.c.email)
        last: tuple[str, int] | None = None
        while True:
            query = base.order_by(recipients.c.email_key, key_col).limit(batch_size)
            if last is not None:
                query = query.where(tuple_(recipients.c.email_key, key_col) > tuple_(*last))
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            for row in rows:
                yield _recipient(row, row.address_status or "valid")
            last = (rows[-1].email_key, rows[-1].k)

    def set_audience_list(self, delivery_id: int, recipient_ids: Sequence[int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(audience_members).where(audience_members.c.delivery_id ==
                                                        delivery_id))
            for start, batch in enumerate(_chunks(recipient_ids)):
                conn.execute(
                    insert(audience_members),
                    [
                        {"delivery_id": delivery_id, "position": start * _CHUNK + i,
                         "recipient_id": rid}
                        for i, rid in enumerate(batch)
                    ],
                )

    # -- templates ----------------------------------------------------------------------------

    def ensure_template(self, name: str, props: Properties, *, builtin: bool,
                        now: datetime) -> None:
        """Create the template if it does not exist (used for the built-in default)."""
        with self.engine.begin() as conn:
            if conn.scalar(select(templates.c.id).where(templates.c.name == name)) is None:
                conn.execute(insert(templates).values(
                    name=name, builtin=builtin, properties=props.model_dump(mode="json"),
                    created_at=now, updated_at=now))

    def create_template(self, name: str, props: Properties, now: datetime) -> Template:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(templates).values(
                    name=name, builtin=False, properties=props.model_dump(mode="json"),
                    created_at=now, updated_at=now))
        except IntegrityError:
            raise InputError(f"a template named {name!r} already exists") from None
        return self.get_template(name)

    def get_template(self, name: str) -> Template:
        with self.engine.connect() as conn:
            row = conn.execute(select(templates).where(templates.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no template named {name!r} (see `postroom templates list`)")
        return Template(row.id, row.name, bool(row.builtin),
                        Properties.model_validate(row.properties), row.updated_at)

    def list_templates(self) -> list[Template]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(templates).order_by(templates.c.name)).all()
        return [Template(r.id, r.name, bool(r.builtin), Properties.model_validate(r.properties),
                         r.updated_at) for r in rows]

    def update_template(self, name: str, props: Properties, now: datetime) -> Template:
        self._writable(name)
        with self.engine.begin() as conn:
            conn.execute(update(templates).where(templates.c.name == name).values(
                properties=props.model_dump(mode="json"), updated_at=now))
        return self.get_template(name)

    def delete_template(self, name: str) -> None:
        self._writable(name)
        with self.engine.begin() as conn:
            conn.execute(delete(templates).where(templates.c.name == name))

    def _writable(self, name: str) -> None:
        if self.get_template(name).builtin:
            raise ReadOnlyError(
                f"{name!r} is the built-in template and cannot be changed; "
                f"duplicate it (`postroom templates duplicate {name} NEW`) and edit the copy"
            )

    # -- deliveries ---------------------------------------------------------------------------

    def create_delivery(self, *, name: str, template_name: str, props: Properties,
                        audience: Audience, salt: str, now: datetime) -> Delivery:
        with self.engine.begin() as conn:
            new_id = conn.execute(insert(deliveries).values(
                name=name, template_name=template_name, state=DeliveryState.EDITING,
                properties=props.model_dump(mode="json"), audience=audience.to_json(),
                salt=salt, last_error="", slowdowns=[], created_at=now)).inserted_primary_key
        assert new_id is not None
        return self.get_delivery(int(new_id[0]))

    def get_delivery(self, delivery_id: int) -> Delivery:
        with self.engine.connect() as conn:
            row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
        if row is None:
            raise NotFoundError(f"no delivery #{delivery_id} (see `postroom deliveries list`)")
        return _delivery(row)

    def list_deliveries(self) -> list[Delivery]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(deliveries).order_by(deliveries.c.id)).all()
        return [_delivery(r) for r in rows]

    def move_delivery(self, delivery_id: int, target: DeliveryState, now: datetime, *,
                      error: str | None = None) -> Delivery:
        """Change a delivery's state through the transition table (compare-and-set)."""
        current = self.get_delivery(delivery_id).state
        transition(current, target)
        values: dict[str, Any] = {"state": target}
        if error is not None:
            values["last_error"] = error
        if target is DeliveryState.READY:
            values["analyzed_at"] = now
        if target is DeliveryState.SENDING and self.get_delivery(delivery_id).started_at is None:
            values["started_at"] = now
        if target in (DeliveryState.FINISHED, DeliveryState.STOPPED):
            values["finished_at"] = now
        statement = (update(deliveries)
                     .where(deliveries.c.id == delivery_id, deliveries.c.state == current)
                     .values(**values))
        with self.engine.begin() as conn:
            changed = conn.execute(statement).rowcount
        if changed != 1:
            raise StateError(f"delivery #{delivery_id} changed state meanwhile; try again")
        return self.get_delivery(delivery_id)

    # -- analysis: audience_rows, held_addresses, replace_logs (AudienceStore) ----------------

    # -- sending ------------------------------------------------------------------------------

    def claim_due(self, delivery_id: int, now: datetime, limit: int,
                  lease: timedelta, *, worker: str = "") -> list[Target]:
        """Take up to `limit` due pending logs; they are `worker`'s until `now + lease`.

        Only rows this call's UPDATE changed are returned, so two senders never get one log.
        Taking over a log whose lease ran out while it was being attempted counts it in doubt.
        """
        c = delivery_logs.c
        due = and_(c.delivery_id == delivery_id, c.status == LogStatus.PENDING,
                   c.next_attempt_at <= now, _unclaimed(c.claimed_until, now))
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
            rows = conn.execute(
                select(c.id.label("log_id"), c.attempts, recipients)
                .join(recipients, recipients.c.id == c.recipient_id)
                .where(c.id.in_(ids)).order_by(c.id)).all()
        return [Target(row.log_id, row.attempts, _recipient(row)) for row in rows]

    def _fail_held(self, conn: Any, ids: list[int], now: datetime) -> list[int]:
        """Fail the claimed logs whose address went into quarantine or onto the denylist since
        the delivery was analysed (a hard bounce meanwhile, say): they are not sent, and not
        retried. Returns the ids still to send."""
        if self.policy is None:
            return ids
        c, a = delivery_logs.c, address_status.c
        held = conn.execute(
            select(c.id, a.status).join(address_status, a.address == c.email)
            .where(c.id.in_(ids), a.status.in_((str(AddressStatus.QUARANTINE),
                                               str(AddressStatus.DENYLISTED))))).all()
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
            for batch in _chunks(log_ids):
                conn.execute(update(delivery_logs).where(delivery_logs.c.id.in_(batch))
                             .values(claimed_until=None, claimed_by=None, attempting=False))

    def record(self, updates: Sequence[LogUpdate], now: datetime) -> None:
        """Record send outcomes; a sent log's archive copy enters the outbox in the same commit."""
        if not updates:
            return
        updates = sorted(updates, key=lambda u: u.log_id)  # lock order: by id
        with self.engine.begin() as conn:
            for moves, rows in _by_source_states(updates, now):
                conn.execute(
                    update(delivery_logs)
                    .where(delivery_logs.c.id == bindparam("b_id"),
                           or_(*(delivery_logs.c.status == status for status in moves)))
                    .values({**{name: bindparam(name) for name in _UPDATE_COLUMNS},
                             "claimed_by": None, "attempting": False,
                             "in_doubt": delivery_logs.c.in_doubt + bindparam("b_doubt")})
                    .execution_options(synchronize_session=False),
                    rows)
            copies = {u.log_id: u for u in updates if u.archive_data is not None}
            if copies:
                # Only logs this very update made `sent`, and never a second copy for a log.
                owed = conn.execute(
                    select(delivery_logs.c.id, delivery_logs.c.delivery_id)
                    .where(delivery_logs.c.id.in_(copies),
                           delivery_logs.c.status == LogStatus.SENT,
                           ~select(archive_outbox.c.id)
                           .where(archive_outbox.c.log_id == delivery_logs.c.id).exists())
                ).all()
                if owed:
                    conn.execute(insert(archive_outbox), [
                        {"log_id": log_id, "delivery_id": delivery_id,
                         "state": ArchiveState.PENDING, "attempts": 0, "next_attempt_at": now,
                         "data": copies[log_id].archive_data,
                         "sha256": copies[log_id].sha256 or _sha(copies[log_id].archive_data),
                         "reply": "", "created_at": now}
                        for log_id, delivery_id in owed])
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
        rows = conn.execute(
            select(delivery_logs.c.id.label("log_id"), delivery_logs.c.email, address_status)
            .outerjoin(address_status, address_status.c.address == delivery_logs.c.email)
            .where(delivery_logs.c.id.in_([u.log_id for u in updates]))).all()
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

    # -- archive outbox -----------------------------------------------------------------------

    def claim_archive(self, now: datetime, limit: int, lease: timedelta, *,
                      delivery_id: int | None = None, worker: str = "") -> list[ArchiveCopy]:
        """Take up to `limit` due copies for `worker` until `now + lease`.

        Copies are sent as soon as they are claimed, so one whose lease ran out (its sender
        died) may already be in the archive: the takeover counts it in doubt.
        """
        c = archive_outbox.c
        due = and_(c.state == ArchiveState.PENDING, c.next_attempt_at <= now,
                   _unclaimed(c.claimed_until, now))
        if delivery_id is not None:
            due = and_(due, c.delivery_id == delivery_id)
        with self.engine.begin() as conn:
            # In ix_archive_due's order, so the LIMIT reads `limit` index entries (ordering by
            # id alone sorted every pending copy per claim); by id in the UPDATE on SQLite, as
            # in claim_due.
            candidates = (select(c.id).where(due).order_by(c.next_attempt_at, c.id)
                          .limit(limit).with_for_update(skip_locked=True))
            chosen = (c.id.in_(candidates.scalar_subquery()) if self._dialect == "sqlite"
                      else and_(due, c.id.in_(list(conn.scalars(candidates)))))
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
        return [ArchiveCopy(r.id, r.log_id, r.delivery_id, r.attempts, r.data, r.sha256)
                for r in rows]

    def record_archive(self, results: Sequence[ArchiveResult], now: datetime) -> None:
        if not results:
            return
        results = sorted(results, key=lambda r: r.copy_id)  # lock order: by id
        archived = [r for r in results if r.state is ArchiveState.ARCHIVED
                    and r.attempted and not r.in_doubt]
        with self.engine.begin() as conn:
            if archived:  # the common case, in one statement
                conn.execute(
                    update(archive_outbox)
                    .where(archive_outbox.c.id == bindparam("b_id"),
                           archive_outbox.c.state == ArchiveState.PENDING)
                    .values(state=ArchiveState.ARCHIVED, claimed_until=None, claimed_by=None,
                            reply=bindparam("b_reply"), attempts=archive_outbox.c.attempts + 1,
                            archived_at=now, data=None, next_attempt_at=now)
                    .execution_options(synchronize_session=False),
                    [{"b_id": r.copy_id, "b_reply": r.reply} for r in archived])
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
                    values.update(archived_at=now, data=None, next_attempt_at=now)
                elif result.next_attempt_at is not None:
                    values["next_attempt_at"] = result.next_attempt_at
                conn.execute(update(archive_outbox)
                             .where(archive_outbox.c.id == result.copy_id,
                                    archive_outbox.c.state == ArchiveState.PENDING)
                             .values(**values))
            # The hash ledger, in the same commit (storage/ledger.py).
            append_entries(conn, [r.copy_id for r in results
                                  if r.state is ArchiveState.ARCHIVED], now, self.ledger)

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

        In id order, `_CHUNK` rows per transaction, skipping rows a worker is recording at this
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
                                        .limit(_CHUNK).with_for_update(skip_locked=True)))
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

    # -- mirror pages, unsubscribe, proofs, secrets --------------------------------------------

    def mirror_page(self, log_id: int) -> tuple[bytes, datetime, Delivery] | None:
        """(HTML bytes, expiry, delivery) of one message's mirror page, if it has one."""
        with self.engine.connect() as conn:
            row = conn.execute(select(mirror_pages, deliveries.c.id.label("d"))
                               .join(deliveries, deliveries.c.id == mirror_pages.c.delivery_id)
                               .where(mirror_pages.c.log_id == log_id)).first()
        if row is None:
            return None
        return zlib.decompress(row.html), row.expires_at, self.get_delivery(row.d)

    def purge_mirror_pages(self, now: datetime) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(mirror_pages)
                                .where(mirror_pages.c.expires_at <= now)).rowcount

    def log_recipient(self, log_id: int) -> Recipient | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(recipients).join(
                delivery_logs, delivery_logs.c.recipient_id == recipients.c.id)
                .where(delivery_logs.c.id == log_id)).first()
        return _recipient(row) if row is not None else None

    def log_delivery_salt(self, log_id: int) -> tuple[int, str] | None:
        """(delivery id, salt) of a log: what a returned Message-ID must carry."""
        with self.engine.connect() as conn:
            row = conn.execute(select(deliveries.c.id, deliveries.c.salt)
                               .join(delivery_logs, delivery_logs.c.delivery_id ==
                                     deliveries.c.id)
                               .where(delivery_logs.c.id == log_id)).first()
        return (int(row[0]), str(row[1])) if row is not None else None

    def get_log(self, log_id: int) -> DeliveryLog:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(delivery_logs, archive_outbox.c.state.label("archive_state"))
                .outerjoin(archive_outbox, archive_outbox.c.log_id == delivery_logs.c.id)
                .where(delivery_logs.c.id == log_id)).first()
        if row is None:
            raise NotFoundError(f"no delivery log #{log_id}")
        return _log(row)

    def opt_out(self, recipient_id: int, now: datetime) -> bool:
        """Opt a recipient out; False when they already were."""
        with self.engine.begin() as conn:
            return conn.execute(update(recipients)
                                .where(recipients.c.id == recipient_id,
                                       recipients.c.opted_out.is_(False))
                                .values(opted_out=True, updated_at=now)).rowcount == 1

    def next_proof_number(self, delivery_id: int) -> int:
        with self.engine.begin() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id)
                         .values(proofs=deliveries.c.proofs + 1))
            return int(conn.scalar(select(deliveries.c.proofs)
                                   .where(deliveries.c.id == delivery_id)) or 0)

    def recipient_by_email(self, email: str) -> Recipient | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(recipients).where(
                or_(recipients.c.email == email,
                    recipients.c.email_key == email.lower()))
                .order_by(recipients.c.id).limit(1)).first()
        return _recipient(row) if row is not None else None

    def instance_secret(self, name: str, make: Callable[[], str]) -> str:
        """A secret kept in the database, made once (by `make`) on first use."""
        with self.engine.begin() as conn:
            value = conn.scalar(select(instance_secrets.c.value)
                                .where(instance_secrets.c.name == name))
            if value is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(instance_secrets).values(name=name, value=make()))
                except IntegrityError:
                    pass  # another process made it first
                value = conn.scalar(select(instance_secrets.c.value)
                                    .where(instance_secrets.c.name == name))
        return str(value)

    # -- reports ------------------------------------------------------------------------------

    def log_counts(self, delivery_id: int) -> list[tuple[str, str | None, int | None, int]]:
        """(status, failure type, reason, count) for one delivery."""
        c = delivery_logs.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.status, c.failure_type, c.failure_reason, func.count())
                .where(c.delivery_id == delivery_id)
                .group_by(c.status, c.failure_type, c.failure_reason)).all()
        return [(str(s), t, r, int(n)) for s, t, r, n in rows]

    def domain_counts(self, delivery_id: int | None, limit: int = 20) -> list[
        tuple[str, str, int]
    ]:
        """(recipient domain, status, count), the domains with most logs first."""
        c = delivery_logs.c
        query = select(c.domain, c.status, func.count()).group_by(c.domain, c.status)
        if delivery_id is not None:
            query = query.where(c.delivery_id == delivery_id)
        with self.engine.connect() as conn:
            rows = [(str(d or ""), str(s), int(n)) for d, s, n in conn.execute(query)]
        totals: dict[str, int] = {}
        for domain, _, count in rows:
            totals[domain] = totals.get(domain, 0) + count
        top = set(sorted(totals, key=lambda d: -totals[d])[:limit])
        return [row for row in rows if row[0] in top]

    def failure_counts(self, *, since: datetime | None = None) -> list[
        tuple[str | None, int | None, str, int]
    ]:
        """Failed logs across deliveries: (failure type, reason, recipient domain, count)."""
        c = delivery_logs.c
        query = (select(c.failure_type, c.failure_reason, c.domain, func.count())
                 .where(c.status == LogStatus.FAILED)
                 .group_by(c.failure_type, c.failure_reason, c.domain))
        if since is not None:
            query = query.where(c.updated_at >= since)
        with self.engine.connect() as conn:
            return [(t, r, str(d or ""), int(n)) for t, r, d, n in conn.execute(query)]

    def send_window(self, delivery_id: int) -> tuple[datetime | None, datetime | None, int]:
        c = delivery_logs.c
        with self.engine.connect() as conn:
            first, last, count = conn.execute(
                select(func.min(c.sent_at), func.max(c.sent_at), func.count(c.sent_at))
                .where(c.delivery_id == delivery_id, c.sent_at.is_not(None))).one()
        return as_utc(first), as_utc(last), int(count)

    def failed_recipients(self, delivery_id: int, reasons: Sequence[int] | None) -> list[int]:
        """Recipients whose logs failed (with one of `reasons`) and whose address is not in
        quarantine or on the denylist now."""
        c = delivery_logs.c
        query = (select(c.recipient_id)
                 .outerjoin(address_status, address_status.c.address == c.email)
                 .where(c.delivery_id == delivery_id, c.status == LogStatus.FAILED,
                        c.recipient_id.is_not(None),
                        or_(address_status.c.status.is_(None),
                            address_status.c.status.not_in(["quarantine", "denylisted"])))
                 .order_by(c.id))
        if reasons:
            query = query.where(c.failure_reason.in_(list(reasons)))
        with self.engine.connect() as conn:
            return [int(r) for r in conn.scalars(query)]

    def list_logs(self, delivery_id: int, *, status: str | None = None,
                  reason: int | None = None, email: str | None = None,
                  archive: str | None = None, limit: int = 100,
                  offset: int = 0) -> list[DeliveryLog]:
        query = (select(delivery_logs, archive_outbox.c.state.label("archive_state"))
                 .outerjoin(archive_outbox, archive_outbox.c.log_id == delivery_logs.c.id)
                 .where(delivery_logs.c.delivery_id == delivery_id))
        if status:
            query = query.where(delivery_logs.c.status == status)
        if reason is not None:
            query = query.where(delivery_logs.c.failure_reason == reason)
        if email:
            query = query.where(delivery_logs.c.email.contains(email, autoescape=True))
        if archive == "none":
            query = query.where(archive_outbox.c.id.is_(None))
        elif archive:
            query = query.where(archive_outbox.c.state == archive)
        query = query.order_by(delivery_logs.c.id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [_log(row) for row in conn.execute(query)]


_UPDATE_COLUMNS = ("status", "attempts", "next_attempt_at", "failure_type", "failure_reason",
                   "detail", "smtp_reply", "message_id", "sent_at", "size", "sha256",
                   "updated_at", "claimed_until")


def _update_values(u: LogUpdate, now: datetime) -> dict[str, Any]:
    return {"b_id": u.log_id, "status": u.status, "attempts": u.attempts,
            "next_attempt_at": u.next_attempt_at, "failure_type": u.failure_type,
            "failure_reason": u.failure_reason, "detail": u.detail,
            "smtp_reply": u.smtp_reply, "message_id": u.message_id, "sent_at": u.sent_at,
            "size": u.size, "sha256": u.sha256, "updated_at": now, "claimed_until": None,
            "b_doubt": int(u.in_doubt)}



def _unclaimed(claimed_until: Any, now: datetime) -> Any:
    return or_(claimed_until.is_(None), claimed_until <= now)


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


def _without(values: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in keys}


def _sha(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()

