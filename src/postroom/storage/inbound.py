"""Storage for what comes back: bounce mail, qualification rules, texts to qualify, and the
status of each address (quarantine). Mixed into `SqlStore`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, bindparam, delete, func, insert, select, true, update
from sqlalchemy.exc import IntegrityError

from postroom.bounces.quarantine import (
    AddressEvent,
    AddressState,
    AddressStatus,
    QuarantinePolicy,
    apply_event,
)
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.states import BounceState, LogStatus
from postroom.storage.common import insert_new
from postroom.storage.moves import move_bounces, move_logs
from postroom.storage.schema import (
    address_status,
    bounce_results,
    bounces,
    qualification_rules,
    unqualified_texts,
)

__all__ = ["InboundStore", "RuleRow", "StoredBounce", "address_row"]


@dataclass(frozen=True, slots=True)
class StoredBounce:
    id: int
    data: bytes
    source: str
    envelope_to: str
    state: str
    kind: str
    detail: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class RuleRow:
    id: str
    position: int
    pattern: str
    status: str
    failure_type: str
    reason: int
    description: str
    builtin: bool


def _bounce(row: Any) -> StoredBounce:
    return StoredBounce(row.id, row.data, row.source, row.envelope_to, row.state, row.kind,
                        row.detail, row.received_at)


def _rule(row: Any) -> RuleRow:
    return RuleRow(row.id, row.position, row.pattern, row.status, row.failure_type, row.reason,
                   row.description, bool(row.builtin))


def address_row(row: Any) -> AddressState:
    return AddressState(
        address=row.address, status=AddressStatus(row.status), status_since=row.status_since,
        error_count=row.error_count, first_error_at=row.first_error_at,
        last_error_at=row.last_error_at,
        last_reason=FailureReason(row.last_reason) if row.last_reason is not None else None,
        last_type=FailureType(row.last_type) if row.last_type else None,
        last_text=row.last_text)


class InboundStore:
    engine: Engine
    policy: QuarantinePolicy | None = None  # set by wiring; None: no quarantine bookkeeping

    def apply_address_events(self, conn: Any, events: Sequence[tuple[str, AddressEvent]],
                             now: datetime, *,
                             states: dict[str, AddressState] | None = None) -> None:
        """Fold events into the addresses' states with the quarantine policy (same commit).
        `states`: the stored states of the events' addresses, when already read."""
        if self.policy is None or not events:
            return
        if states is None:
            states = self.address_rows(conn, sorted({address for address, _ in events}))
        changed: dict[str, AddressState] = {}
        for address, event in events:
            current = changed.get(address) or states.get(address)
            if current is None:
                if event.failure_type is None:
                    continue  # a success for an address with no history: nothing to keep
                current = AddressState.new(address, now)
            following = apply_event(current, event, now=now, policy=self.policy)
            if following != current:
                changed[address] = following
        self.save_address_rows(conn, list(changed.values()), now, known=set(states))

    def denylist_addresses(self, addresses: Sequence[str], text: str, now: datetime) -> int:
        """Put addresses on the denylist (an operator's decision, as a spam complaint does),
        whatever their status; returns how many were not denylisted before."""
        if self.policy is None:
            return 0  # no quarantine bookkeeping: nothing is denylisted
        event = AddressEvent.failure(FailureType.HARD, FailureReason.DENYLISTED, text)
        unique = sorted(set(addresses))  # lock order
        with self.engine.begin() as conn:
            # Each address is given a row first (`insert_new`: a missing one as never seen),
            # so that the states are read under the write lock (SQLite) or their row locks:
            # a failure a send records meanwhile is waited for and counted, not overwritten.
            insert_new(conn, address_status,
                       [_insert_values(AddressState.new(a, now), now) for a in unique],
                       "address")
            before = self.address_rows(conn, unique, lock=True)
            self.apply_address_events(conn, [(a, event) for a in addresses], now,
                                      states=before)
        return sum(1 for a in unique if before[a].status is not AddressStatus.DENYLISTED)

    def sweep_addresses(self, now: datetime) -> tuple[int, int]:
        """Time-based rules: reset error counters after 10 days without error, release
        mailbox-full quarantines after 30 days. Returns (reset, released)."""
        if self.policy is None:
            return 0, 0
        c = address_status.c
        with self.engine.begin() as conn:
            reset = conn.execute(update(address_status).where(
                c.status.in_(["valid", "with_errors"]), c.error_count > 0,
                c.last_error_at <= now - self.policy.counter_reset).values(
                status="valid", error_count=0, first_error_at=None, status_since=now,
                updated_at=now)).rowcount
            released = conn.execute(update(address_status).where(
                c.status == "quarantine", c.last_reason == int(FailureReason.MAILBOX_FULL),
                c.status_since <= now - self.policy.mailbox_full_release).values(
                status="valid", error_count=0, first_error_at=None, status_since=now,
                updated_at=now)).rowcount
        return reset, released

    def apply_bounce(self, bounce_id: int, kind: str, outcomes: Sequence[Any],
                     unqualified: Sequence[tuple[str, str]], now: datetime, *,
                     state: BounceState | str) -> int | None:
        """Record one processed bounce and its effects in one transaction, leaving it in
        `state`; returns how many `sent` logs it turned `failed`. A bounce already taken by
        another processor changes nothing: None."""
        from postroom.storage.schema import delivery_logs

        failed = 0
        with self.engine.begin() as conn:
            if not move_bounces(conn, bounces.c.id == bounce_id, BounceState.NEW,
                                BounceState.PROCESSING):
                return None
            events: list[tuple[str, AddressEvent]] = []
            for o in outcomes:
                q, r = o.qualification, o.recipient
                conn.execute(insert(bounce_results).values(
                    bounce_id=bounce_id, recipient=(r.recipient or "")[:320],
                    log_id=o.log.id if o.attributed else None, status=(r.status or "")[:16],
                    action=(r.action or "")[:16], failure_type=str(q.failure_type),
                    reason=int(q.reason), rule_id=q.rule_id,
                    attributed_by=o.attributed_by, applied=o.applies))  # late: log, not applied
                log = o.log if o.applies else None
                if log is None:
                    continue
                if o.fails_log:
                    failed += move_logs(
                        conn, delivery_logs.c.id == log.id, LogStatus.SENT, LogStatus.FAILED,
                        failure_type=str(q.failure_type), failure_reason=int(q.reason),
                        detail=f"bounce: {r.diagnostic}"[:2000], updated_at=now)
                    events.append((log.email, AddressEvent.failure(
                        q.failure_type, q.reason, r.diagnostic)))
                elif kind == "arf":
                    events.append((log.email, AddressEvent.failure(
                        q.failure_type, q.reason, r.diagnostic)))
            self.count_unqualified_texts(conn, unqualified, now)
            self.apply_address_events(conn, events, now)
            move_bounces(conn, bounces.c.id == bounce_id, BounceState.PROCESSING,
                         BounceState(state), kind=kind, processed_at=now)
        return failed

    # -- bounce mail ----------------------------------------------------------------------------

    def store_bounce(self, data: bytes, *, source: str, envelope_to: str,
                     now: datetime) -> tuple[int, bool]:
        """Keep a received message before anything else happens to it: (id, newly stored).

        The same bytes twice are kept once, so a bounce fetched twice counts once.
        """
        digest = hashlib.sha256(data).hexdigest()
        with self.engine.begin() as conn:
            found = conn.scalar(select(bounces.c.id).where(bounces.c.sha256 == digest))
            if found is not None:
                return int(found), False
            try:
                with conn.begin_nested():
                    new = conn.execute(insert(bounces).values(
                        sha256=digest, source=source[:255], envelope_to=envelope_to[:320],
                        data=data, state=BounceState.NEW, kind="", detail="",
                        received_at=now)).inserted_primary_key
            except IntegrityError:  # stored meanwhile by another process
                found = conn.scalar(select(bounces.c.id).where(bounces.c.sha256 == digest))
                return int(found or 0), False
        assert new is not None
        return int(new[0]), True

    def new_bounces(self, limit: int) -> list[StoredBounce]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(bounces).where(bounces.c.state == BounceState.NEW)
                                .order_by(bounces.c.id).limit(limit)).all()
        return [_bounce(row) for row in rows]

    def new_bounce_ids(self, *, after: int, limit: int) -> list[int]:
        """Ids of bounces still `new` past `after`, oldest first: a backlog is read one raw
        message at a time (`get_bounce`), never a batch of them."""
        with self.engine.connect() as conn:
            return [int(i) for i in conn.scalars(
                select(bounces.c.id).where(bounces.c.state == BounceState.NEW,
                                           bounces.c.id > after)
                .order_by(bounces.c.id).limit(limit))]

    def requeue_failed_bounces(self) -> int:
        """Put bounces set aside as `failed` back to `new` (after a fix); returns how many."""
        with self.engine.begin() as conn:
            return move_bounces(conn, true(), BounceState.FAILED, BounceState.NEW, detail="",
                                processed_at=None)

    def fail_bounce(self, bounce_id: int, reason: str, now: datetime) -> bool:
        """Set a `new` bounce aside as `failed` with the reason its processing stopped, so it
        is not tried first again and again; False when another processor took it."""
        with self.engine.begin() as conn:
            return bool(move_bounces(conn, bounces.c.id == bounce_id, BounceState.NEW,
                                     BounceState.FAILED, detail=reason[:2000],
                                     processed_at=now))

    def get_bounce(self, bounce_id: int) -> StoredBounce | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(bounces).where(bounces.c.id == bounce_id)).first()
        return _bounce(row) if row is not None else None

    def list_bounces(self, *, state: str | None = None, limit: int = 100) -> list[StoredBounce]:
        query = select(bounces).order_by(bounces.c.id.desc()).limit(limit)
        if state:
            query = query.where(bounces.c.state == state)
        with self.engine.connect() as conn:
            return [_bounce(row) for row in conn.execute(query)]

    def bounce_results_of(self, bounce_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(bounce_results)
                                .where(bounce_results.c.bounce_id == bounce_id)
                                .order_by(bounce_results.c.id)).mappings().all()
        return [dict(row) for row in rows]

    def bounce_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(bounces.c.state, func.count())
                                .group_by(bounces.c.state)).all()
        return {str(state): int(count) for state, count in rows}

    # -- qualification rules ------------------------------------------------------------------

    def ensure_rules(self, rules: Sequence[RuleRow]) -> int:
        """Install the shipped rules once (when the table is empty); returns how many."""
        with self.engine.begin() as conn:
            if conn.scalar(select(func.count()).select_from(qualification_rules)):
                return 0
            conn.execute(insert(qualification_rules), [
                {"id": r.id, "position": r.position, "pattern": r.pattern, "status": r.status,
                 "failure_type": r.failure_type, "reason": r.reason,
                 "description": r.description, "builtin": r.builtin} for r in rules])
        return len(rules)

    def list_rules(self) -> list[RuleRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(qualification_rules)
                                .order_by(qualification_rules.c.position,
                                          qualification_rules.c.id)).all()
        return [_rule(row) for row in rows]

    def save_rule(self, rule: RuleRow, *, new: bool) -> None:
        values = {"position": rule.position, "pattern": rule.pattern, "status": rule.status,
                  "failure_type": rule.failure_type, "reason": rule.reason,
                  "description": rule.description, "builtin": rule.builtin}
        with self.engine.begin() as conn:
            if new:
                conn.execute(insert(qualification_rules).values(id=rule.id, **values))
            else:
                conn.execute(update(qualification_rules)
                             .where(qualification_rules.c.id == rule.id).values(**values))

    def delete_rule(self, rule_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(qualification_rules)
                                .where(qualification_rules.c.id == rule_id)).rowcount == 1

    # -- texts to qualify ---------------------------------------------------------------------

    def count_unqualified_texts(self, conn: Any, texts: Sequence[tuple[str, str]],
                                now: datetime) -> None:
        """Count each (normalized, raw) text to qualify once more: one read, one UPDATE for
        the texts seen before and one INSERT for the new ones, however many texts."""
        if not texts:
            return
        u = unqualified_texts.c
        counts: dict[str, int] = {}
        first: dict[str, tuple[str, str]] = {}
        for normalized, raw in texts:
            key = hashlib.sha256(normalized.encode()).hexdigest()
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, (normalized, raw))
        known = set(conn.scalars(select(u.key).where(u.key.in_(sorted(counts)))))
        seen = [{"b_key": key, "b_n": n} for key, n in sorted(counts.items()) if key in known]
        if seen:
            conn.execute(update(unqualified_texts).where(u.key == bindparam("b_key"))
                         .values(count=u.count + bindparam("b_n"), last_seen=now)
                         .execution_options(synchronize_session=False), seen)
        new = [{"key": key, "normalized": first[key][0], "first_text": first[key][1][:2000],
                "count": n, "first_seen": now, "last_seen": now}
               for key, n in sorted(counts.items()) if key not in known]
        if new:
            conn.execute(insert(unqualified_texts), new)

    def list_unqualified(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(unqualified_texts)
                                .order_by(unqualified_texts.c.count.desc(),
                                          unqualified_texts.c.last_seen.desc())
                                .limit(limit)).mappings().all()
        return [dict(row) for row in rows]

    # -- address status -----------------------------------------------------------------------

    def address_rows(self, conn: Any, addresses: Sequence[str], *,
                     lock: bool = False) -> dict[str, AddressState]:
        """The stored states of these addresses; `lock`: with their row locks (PostgreSQL)."""
        if not addresses:
            return {}
        query = select(address_status).where(address_status.c.address.in_(list(addresses)))
        rows = conn.execute(query.with_for_update() if lock else query).all()
        return {row.address: address_row(row) for row in rows}

    def save_address_rows(self, conn: Any, rows: Sequence[AddressState], now: datetime, *,
                          known: set[str] | None = None) -> None:
        """Write address states: one UPDATE for those `known` to be stored (read when not
        given) and one INSERT for the others, however many rows."""
        if not rows:
            return
        if known is None:
            known = set(self.address_rows(conn, [r.address for r in rows]))
        updates: list[dict[str, Any]] = []
        inserts: list[dict[str, Any]] = []
        for row in rows:
            if row.address in known:
                updates.append({"b_address": row.address, **_state_values(row, now)})
            else:
                inserts.append(_insert_values(row, now))
        if updates:
            conn.execute(update(address_status)
                         .where(address_status.c.address == bindparam("b_address"))
                         .values({name: bindparam(name) for name in updates[0]
                                  if name != "b_address"})
                         .execution_options(synchronize_session=False), updates)
        if inserts:
            conn.execute(insert(address_status), inserts)

    def address_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(address_status.c.status, func.count())
                                .group_by(address_status.c.status)).all()
        return {str(status): int(count) for status, count in rows}

    def get_address(self, address: str) -> AddressState | None:
        with self.engine.connect() as conn:
            return self.address_rows(conn, [address]).get(address)

    def list_addresses(self, *, statuses: Sequence[str], domain: str | None = None,
                       since: datetime | None = None, until: datetime | None = None,
                       limit: int = 1000) -> list[AddressState]:
        query = select(address_status).where(address_status.c.status.in_(list(statuses)))
        if domain:
            query = query.where(address_status.c.domain == domain.lower())
        if since is not None:
            query = query.where(address_status.c.status_since >= since)
        if until is not None:
            query = query.where(address_status.c.status_since < until)
        query = query.order_by(address_status.c.status_since.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [address_row(row) for row in conn.execute(query)]

    def release_addresses(self, addresses: Sequence[str], now: datetime) -> int:
        """Make addresses valid again (an operator's decision), error counter reset."""
        if not addresses:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(update(address_status)
                                .where(and_(address_status.c.address.in_(list(addresses)),
                                            address_status.c.status != "valid"))
                                .values(status="valid", error_count=0, status_since=now,
                                        updated_at=now)).rowcount


def _state_values(row: AddressState, now: datetime) -> dict[str, Any]:
    """The columns of an address's state, as stored."""
    return {"status": str(row.status), "error_count": row.error_count,
            "first_error_at": row.first_error_at, "last_error_at": row.last_error_at,
            "last_reason": int(row.last_reason) if row.last_reason is not None else None,
            "last_type": str(row.last_type) if row.last_type else None,
            "last_text": row.last_text[:2000], "status_since": row.status_since,
            "updated_at": now}


def _insert_values(row: AddressState, now: datetime) -> dict[str, Any]:
    """A new address_status row."""
    return {"address": row.address, "domain": row.address.rpartition("@")[2].lower(),
            **_state_values(row, now)}
