"""Storage for what comes back: bounce mail, qualification rules, texts to qualify, and the
status of each address (quarantine). Mixed into `SqlStore`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from postroom.storage.schema import (
    address_status,
    bounce_results,
    bounces,
    qualification_rules,
    unqualified_texts,
)

__all__ = ["AddressRow", "InboundStore", "RuleRow", "StoredBounce"]


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


@dataclass(frozen=True, slots=True)
class AddressRow:
    address: str
    status: str
    error_count: int
    first_error_at: datetime | None
    last_error_at: datetime | None
    last_reason: int | None
    last_type: str | None
    last_text: str
    status_since: datetime


def _bounce(row: Any) -> StoredBounce:
    return StoredBounce(row.id, row.data, row.source, row.envelope_to, row.state, row.kind,
                        row.detail, row.received_at)


def _rule(row: Any) -> RuleRow:
    return RuleRow(row.id, row.position, row.pattern, row.status, row.failure_type, row.reason,
                   row.description, bool(row.builtin))


def _address(row: Any) -> AddressRow:
    return AddressRow(row.address, row.status, row.error_count, row.first_error_at,
                      row.last_error_at, row.last_reason, row.last_type, row.last_text,
                      row.status_since)


class InboundStore:
    engine: Engine

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
                        data=data, state="new", kind="", detail="",
                        received_at=now)).inserted_primary_key
            except IntegrityError:  # stored meanwhile by another process
                found = conn.scalar(select(bounces.c.id).where(bounces.c.sha256 == digest))
                return int(found or 0), False
        assert new is not None
        return int(new[0]), True

    def new_bounces(self, limit: int) -> list[StoredBounce]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(bounces).where(bounces.c.state == "new")
                                .order_by(bounces.c.id).limit(limit)).all()
        return [_bounce(row) for row in rows]

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

    def count_unqualified(self, conn: Any, normalized: str, raw: str, now: datetime) -> None:
        key = hashlib.sha256(normalized.encode()).hexdigest()
        changed = conn.execute(update(unqualified_texts).where(unqualified_texts.c.key == key)
                               .values(count=unqualified_texts.c.count + 1,
                                       last_seen=now)).rowcount
        if not changed:
            conn.execute(insert(unqualified_texts).values(
                key=key, normalized=normalized, first_text=raw[:2000], count=1,
                first_seen=now, last_seen=now))

    def list_unqualified(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(unqualified_texts)
                                .order_by(unqualified_texts.c.count.desc(),
                                          unqualified_texts.c.last_seen.desc())
                                .limit(limit)).mappings().all()
        return [dict(row) for row in rows]

    # -- address status -----------------------------------------------------------------------

    def address_rows(self, conn: Any, addresses: Sequence[str]) -> dict[str, AddressRow]:
        if not addresses:
            return {}
        rows = conn.execute(select(address_status)
                            .where(address_status.c.address.in_(list(addresses)))).all()
        return {row.address: _address(row) for row in rows}

    def save_address_rows(self, conn: Any, rows: Sequence[AddressRow], now: datetime) -> None:
        if not rows:
            return
        known = set(self.address_rows(conn, [r.address for r in rows]))
        for row in rows:
            values = {"status": row.status, "error_count": row.error_count,
                      "first_error_at": row.first_error_at, "last_error_at": row.last_error_at,
                      "last_reason": row.last_reason, "last_type": row.last_type,
                      "last_text": row.last_text[:2000], "status_since": row.status_since,
                      "updated_at": now}
            if row.address in known:
                conn.execute(update(address_status)
                             .where(address_status.c.address == row.address).values(**values))
            else:
                conn.execute(insert(address_status).values(
                    address=row.address, domain=row.address.rpartition("@")[2].lower(),
                    **values))

    def address_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(address_status.c.status, func.count())
                                .group_by(address_status.c.status)).all()
        return {str(status): int(count) for status, count in rows}

    def get_address(self, address: str) -> AddressRow | None:
        with self.engine.connect() as conn:
            return self.address_rows(conn, [address]).get(address)

    def list_addresses(self, *, statuses: Sequence[str], domain: str | None = None,
                       since: datetime | None = None, until: datetime | None = None,
                       limit: int = 1000) -> list[AddressRow]:
        query = select(address_status).where(address_status.c.status.in_(list(statuses)))
        if domain:
            query = query.where(address_status.c.domain == domain.lower())
        if since is not None:
            query = query.where(address_status.c.status_since >= since)
        if until is not None:
            query = query.where(address_status.c.status_since < until)
        query = query.order_by(address_status.c.status_since.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_address(row) for row in conn.execute(query)]

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
