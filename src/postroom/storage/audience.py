"""Storage for analysis: the audience in keyset batches, the held addresses, the logs in bulk;
and the audience as records (`iter_audience`, for proofs) and a list audience's members
(`set_audience_list`). Mixed into `SqlStore`.

Analysis reads every target once and writes one log per target, a million of each for a large
audience, so these two paths run close to the driver: the statements are built and compiled by
SQLAlchemy once, then executed on the DBAPI cursor, whose plain tuples skip the per-row
processing of SQLAlchemy results (half the reading time). The logs go in with `executemany` in
large batches inside the one transaction, in audience order; the values every log shares (the
delivery, the timestamps, the defaults) are written into the statement as literals where the
driver would receive a plain int or str anyway, because binding parameters is most of the
writing time. A pending log without detail, the common case, binds three values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Dialect,
    Engine,
    Select,
    Text,
    bindparam,
    cast,
    delete,
    insert,
    select,
    tuple_,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.compiler import SQLCompiler

from postroom.domain.models import Delivery, Recipient
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.states import LogStatus
from postroom.storage.common import CHUNK, chunks, to_recipient
from postroom.storage.schema import address_status, audience_members, delivery_logs, recipients

__all__ = ["AudienceStore"]

_HELD = ("denylisted", "quarantine")
_LOG_BATCH = 20_000
_PENDING = LogStatus.PENDING
# The row types of analysis's AnalysisStore protocol (delivery/analysis.py), spelled out here.
# (recipient_id, email, status, failure_reason, detail, failure_type): NewLog's fields, in order.
LogRow = tuple[int | None, str, LogStatus, FailureReason | None, str, FailureType | None]
# id, email, first_name, last_name, email_format, opted_out, fields (JSON text), then the two
# sort keys (email_key, position), which the reader ignores.
AudienceRow = tuple[int, str, str, str, str, Any, Any, str, int]


class AudienceStore:
    engine: Engine

    def _audience_query(self, delivery: Delivery, *columns: Any) -> tuple[
            Select[Any], ColumnElement[Any]]:
        """The select of the delivery's targets (`columns`, then `k`) and its position column
        `k`: ordered by (email_key, k), equal addresses are next to each other."""
        if delivery.audience.kind == "list":
            key_col: ColumnElement[Any] = audience_members.c.position
            base = select(*columns, key_col.label("k")).join(
                audience_members, audience_members.c.recipient_id == recipients.c.id
            ).where(audience_members.c.delivery_id == delivery.id)
        else:
            key_col = recipients.c.id
            base = select(*columns, key_col.label("k"))
        return base, key_col

    def audience_rows(self, delivery: Delivery, batch_size: int = 10_000) -> Iterator[
            list[AudienceRow]]:
        """The targets in (email_key, position) order, read in keyset batches, a connection
        each (no read transaction stays open); rows as `AudienceRow`."""
        c = recipients.c
        base, key_col = self._audience_query(
            delivery, c.id, c.email, c.first_name, c.last_name, c.email_format, c.opted_out,
            cast(c.fields, Text), c.email_key)
        base = base.order_by(c.email_key, key_col).limit(batch_size)
        after = base.where(tuple_(c.email_key, key_col) > tuple_(bindparam("after_key"),
                                                                  bindparam("after_k")))
        dialect = self.engine.dialect
        first, rest = (_compiled(base.compile(dialect=dialect)),
                       _compiled(after.compile(dialect=dialect)))
        last: dict[str, Any] | None = None
        while True:
            with self.engine.connect() as conn:
                rows = _fetch(conn, first if last is None else rest, last or {})
            if not rows:
                return
            yield rows
            last = {"after_key": rows[-1][7], "after_k": rows[-1][8]}

    def held_addresses(self) -> dict[str, str]:
        """Address → status, for the addresses that are denylisted or in quarantine."""
        query = select(address_status.c.address, address_status.c.status).where(
            address_status.c.status.in_(_HELD))
        with self.engine.connect() as conn:
            return {address: status for address, status in conn.execute(query)}

    def replace_logs(self, delivery_id: int, logs: Iterable[LogRow], now: datetime) -> None:
        """Write the delivery's logs afresh in one transaction: all of them, or none.

        `logs` are `LogRow`s (NewLog's fields; `NewLog(*row)` is the record). They may
        raise (a template error for some recipient): nothing is then written.
        """
        with self.engine.begin() as conn:
            conn.execute(delete(delivery_logs).where(delivery_logs.c.delivery_id == delivery_id))
            writer = _LogWriter(conn.dialect, delivery_id, now)
            cursor = conn.connection.cursor()
            try:
                writer.write(cursor, logs)
            finally:
                cursor.close()

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
                yield to_recipient(row, row.address_status or "valid")
            last = (rows[-1].email_key, rows[-1].k)

    def set_audience_list(self, delivery_id: int, recipient_ids: Sequence[int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(audience_members).where(audience_members.c.delivery_id ==
                                                        delivery_id))
            for start, batch in enumerate(chunks(recipient_ids)):
                conn.execute(
                    insert(audience_members),
                    [
                        {"delivery_id": delivery_id, "position": start * CHUNK + i,
                         "recipient_id": rid}
                        for i, rid in enumerate(batch)
                    ],
                )


def _compiled(compiled: Any) -> SQLCompiler:
    assert isinstance(compiled, SQLCompiler)
    return compiled


def _fetch(conn: Connection, compiled: SQLCompiler, values: dict[str, Any]) -> list[Any]:
    """The rows of a compiled select, as the driver's tuples."""
    params = compiled.construct_params(values)
    positions = compiled.positiontup if compiled.positional else None
    cursor = conn.connection.cursor()
    try:
        cursor.execute(compiled.string, [params[name] for name in positions]
                       if positions is not None else params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _bound(column: Column[Any], value: Any, dialect: Dialect) -> Any:
    """`value` as SQLAlchemy would hand it to the driver for `column`."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process(value) if process is not None else value


def _literal(value: Any) -> str | None:
    """`value` as an SQL literal, when it is one the driver would bind as is."""
    if value is None:
        return "NULL"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return "'" + value.replace("'", "''") + "'"
    return None


class _LogWriter:
    """The INSERTs of analysis logs, and the driver parameters of each log.

    A column analysis does not set gets its scalar default, or NULL: what the Core insert
    gave it. `write` keeps the logs' order (their ids follow the audience).
    """

    def __init__(self, dialect: Dialect, delivery_id: int, now: datetime):
        fixed: dict[str, Any] = {"delivery_id": delivery_id, "attempts": 0, "smtp_reply": "",
                                 "updated_at": now}
        varying = ("recipient_id", "email", "domain", "status", "failure_type",
                   "failure_reason", "detail", "next_attempt_at")
        for column in delivery_logs.c:
            default = column.default
            if column.primary_key or column.name in fixed or column.name in varying or (
                    default is None and column.server_default is not None):
                continue  # the id, set here, or left to the database
            if default is not None and not default.is_scalar:
                raise TypeError(f"delivery_logs.{column.name}: the bulk log writer needs a "
                                "constant default")
            fixed[column.name] = getattr(default, "arg", None)
        self.due = _bound(delivery_logs.c.next_attempt_at, now, dialect)
        pending = {"status": str(LogStatus.PENDING), "failure_type": None,
                   "failure_reason": None, "detail": "", "next_attempt_at": now}
        self.pending_sql, self.pending_bound = self._statement(
            dialect, varying[:3], {**pending, **fixed})
        self.other_sql, self.other_bound = self._statement(dialect, varying, fixed)

    @staticmethod
    def _statement(dialect: Dialect, varying: tuple[str, ...],
                   fixed: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """The INSERT binding `varying` then the fixed values that are no literal, and those
        values (bound as SQLAlchemy binds them)."""
        style = dialect.paramstyle
        if style not in ("qmark", "format", "pyformat"):
            raise NotImplementedError(f"bulk log writer: parameter style {style}")
        mark = "?" if style == "qmark" else "%s"
        names, values, bound = list(varying), [mark] * len(varying), []
        for name, value in fixed.items():
            column = delivery_logs.c[name]
            processed = _bound(column, value, dialect)
            if processed is None and column.server_default is None:
                continue  # NULL without being named
            literal = _literal(processed)
            names.append(name)
            values.append(mark if literal is None else literal)
            if literal is None:
                bound.append(processed)
        quote = dialect.identifier_preparer.quote
        sql = (f"INSERT INTO {quote(delivery_logs.name)} ({', '.join(map(quote, names))}) "
               f"VALUES ({', '.join(values)})")
        return sql, tuple(bound)

    def write(self, cursor: Any, logs: Iterable[LogRow]) -> None:
        """Insert `logs` in their order: runs of plain pending logs with the short statement,
        the others with the full one."""
        pending_bound, other_bound, due = self.pending_bound, self.other_bound, self.due
        ignored = str(FailureType.IGNORED)
        batch: list[tuple[Any, ...]] = []
        plain_run = True  # whether `batch` holds plain pending logs
        for recipient_id, email, status, reason, detail, failure_type in logs:
            domain = email.rpartition("@")[2].lower()
            if status is _PENDING and reason is None and failure_type is None and not detail:
                if not plain_run or len(batch) >= _LOG_BATCH:
                    self._flush(cursor, plain_run, batch)
                    plain_run, batch = True, []
                row: tuple[Any, ...] = (recipient_id, email, domain)
                batch.append(row + pending_bound if pending_bound else row)
                continue
            if plain_run or len(batch) >= _LOG_BATCH:
                self._flush(cursor, plain_run, batch)
                plain_run, batch = False, []
            row = (recipient_id, email, domain, str(status),
                   str(failure_type) if failure_type is not None else (
                       ignored if status is LogStatus.IGNORED else None),
                   None if reason is None else int(reason), detail,
                   due if status is _PENDING else None)
            batch.append(row + other_bound if other_bound else row)
        self._flush(cursor, plain_run, batch)

    def _flush(self, cursor: Any, plain_run: bool, batch: list[tuple[Any, ...]]) -> None:
        if batch:
            cursor.executemany(self.pending_sql if plain_run else self.other_sql, batch)
