"""Hot statements compiled once per dialect and run with plain values (ADR 0031).

SQLAlchemy Core builds a statement's cache key, parameter dict and bound values again on every
execution: for an `executemany` of 50 rows of 13 columns that is 650 values through each
column's bind processor, plus a dict per row. On the send and archive paths (a log's outcome,
its archive copy, the copy's result, its ledger entry: four rows per message) that was the
largest part of the store's CPU time (bench/RESULTS.md, issue 16).

A `Prepared` statement is still written in Core, once, with `bindparam`s for what varies per
row. It is compiled on first use for the connection's dialect; the constants' values are bound
then, and each row supplies only its own values, converted here: a time becomes what the
`UtcDateTime` column would have written (a naive UTC text on SQLite, the aware datetime on
PostgreSQL), an enum its plain value. The statement runs through the driver in the caller's
transaction (`exec_driver_sql`), so it commits or rolls back with the rest.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Boolean, Connection, Integer, LargeBinary, Row, String
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql.expression import Executable

from postroom.storage.schema import UtcDateTime

__all__ = ["Prepared", "sqlite_time"]

Convert = Callable[[Any], Any]
_PLAIN_TYPES = (String, Integer, Boolean, LargeBinary)  # Text is a String


def sqlite_time(value: datetime | None) -> str | None:
    """A time as SQLAlchemy's SQLite `DateTime` stores a `UtcDateTime`: naive UTC text with
    microseconds (so that text comparison orders times)."""
    if value is None:
        return None
    last = _last_time[0]
    if value is last[0]:  # a batch's rows mostly carry one `now`: format it once
        return last[1]
    _check_aware(value)
    t = value.astimezone(UTC)
    text = "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 - 3.1 µs, 5.7 as f-string
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond)
    _last_time[0] = (value, text)
    return text


# The last time formatted, with its text, as one tuple in a one-item list: threads read and
# replace the pair as a whole. Matched by identity: an aware datetime is immutable, so the same
# object always has the same text.
_last_time: list[tuple[datetime | None, str]] = [(None, "")]


def _aware_time(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    _check_aware(value)
    return value.astimezone(UTC)


def _check_aware(value: Any) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"timestamps must be timezone-aware datetimes, got {value!r}")


def _plain(value: Any) -> Any:
    """An enum's value (drivers differ on enums; `str` and `int` are the same everywhere)."""
    return value.value if isinstance(value, enum.Enum) else value


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    params: Callable[[Mapping[str, Any]], Any]  # one row's values -> the driver's parameters


class Prepared:
    """One Core statement, compiled on first use per dialect; `run` executes it for rows of
    per-row values (a mapping per row, keyed by the statement's `bindparam` names)."""

    def __init__(self, statement: Executable, columns: Sequence[str] = ()):
        self._statement = statement
        self._columns = tuple(columns)  # an INSERT's columns, each bound by its own name
        self._by_dialect: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Execute once per row; the rows the statement changed, summed over all of them."""
        if not rows:
            return 0
        compiled = self._compiled(conn.dialect)
        params = compiled.params
        return int(conn.exec_driver_sql(compiled.sql, [params(row) for row in rows]).rowcount)

    def fetch(self, conn: Connection, values: Mapping[str, Any]) -> list[Row[Any]]:
        """Execute once, for one set of values, and return the rows it produced (a SELECT, or
        a statement with RETURNING), as the driver gives them (no result-type processing)."""
        compiled = self._compiled(conn.dialect)
        return list(conn.exec_driver_sql(compiled.sql, compiled.params(values)).all())

    def _compiled(self, dialect: Dialect) -> _Compiled:
        key = f"{dialect.name}+{dialect.driver}"  # the driver decides placeholders and casts
        found = self._by_dialect.get(key)
        if found is None:
            with self._lock:
                found = self._by_dialect.setdefault(
                    key, _compile(self._statement, self._columns, dialect))
        return found


def _row_params(order: tuple[str, ...], constants: Mapping[str, Any],
                converters: Mapping[str, Convert]) -> Callable[[Mapping[str, Any]], Any]:
    """The function that turns one row's values into the driver's parameters: a tuple in the
    statement's `order` (positional dialects; empty for named ones), else a mapping; constants
    filled in, values converted. Built once per compiled statement: a row costs one C-level
    lookup of all its values and a loop over them, not a dict and a generator per row (the hot
    path of ADR 0031's `executemany`s)."""
    positional = bool(order)
    names = tuple(name for name in (order if positional else converters) if name in converters)
    if not names:
        fixed = tuple(constants[name] for name in order) if positional else dict(constants)
        return lambda row: fixed
    pick = itemgetter(*names)
    one = len(names) == 1
    convert = tuple(converters[name] for name in names)
    if positional:
        template = [constants.get(name) for name in order]
        places = tuple(i for i, name in enumerate(order) if name in converters)

        def positional_params(row: Mapping[str, Any]) -> tuple[Any, ...]:
            picked = (pick(row),) if one else pick(row)
            out = template.copy()
            for place, conv, value in zip(places, convert, picked, strict=True):
                if conv is not _plain:
                    out[place] = conv(value)
                elif isinstance(value, enum.Enum):  # `_plain`, inlined
                    out[place] = value.value
                else:
                    out[place] = value
            return tuple(out)
        return positional_params

    def named_params(row: Mapping[str, Any]) -> dict[str, Any]:
        picked = (pick(row),) if one else pick(row)
        out = dict(constants)
        for name, conv, value in zip(names, convert, picked, strict=True):
            out[name] = conv(value)
        return out
    return named_params


def _compile(statement: Executable, columns: tuple[str, ...], dialect: Dialect) -> _Compiled:
    compiled = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=list(columns) or None)
    constants: dict[str, Any] = {}
    converters: dict[str, Convert] = {}
    for bind, name in compiled.bind_names.items():
        convert = _converter(bind.type, dialect)
        if bind.required:
            converters[name] = convert
        else:
            constants[name] = convert(bind.value)
    if compiled.update_prefetch:
        raise TypeError("a prepared statement cannot run Python-side `onupdate` defaults")
    for column in compiled.insert_prefetch:  # an INSERT's columns left to their default
        default = column.default
        if default is None or not default.is_scalar:
            raise TypeError(f"a prepared INSERT needs a value for {column.key}")
        constants[column.key] = _converter(column.type, dialect)(default.arg)
    order = tuple(compiled.positiontup or ())  # every bind in the statement's order, if positional
    return _Compiled(str(compiled), _row_params(order, constants, converters))


def _converter(kind: Any, dialect: Dialect) -> Convert:
    if isinstance(kind, UtcDateTime):
        return sqlite_time if dialect.name == "sqlite" else _aware_time
    if not isinstance(kind, _PLAIN_TYPES):  # JSON and the like need their bind processor
        raise TypeError(f"a prepared statement cannot bind a {type(kind).__name__} column")
    return _plain
