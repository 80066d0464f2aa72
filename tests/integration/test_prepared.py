"""Prepared statements (storage/prepared.py) write what SQLAlchemy Core would have written, on
SQLite and PostgreSQL: same stored text for times (SQLite compares times as text), values read
back equal, constants and column defaults bound, and types it cannot convert refused."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    insert,
    select,
    text,
    update,
)

from postroom.domain.models import ArchiveState
from postroom.domain.outcomes import FailureReason
from postroom.storage.prepared import Prepared, sqlite_time
from postroom.storage.schema import UtcDateTime

metadata = MetaData()
things = Table(
    "things", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("reason", Integer),
    Column("at", UtcDateTime()),
    Column("count", Integer, nullable=False, default=7),
)
T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


_MEMORY = create_engine("sqlite://")
metadata.create_all(_MEMORY)


def _core_text(moment: datetime) -> str:
    """The text SQLAlchemy Core stores for a UtcDateTime on SQLite, read back raw."""
    with _MEMORY.begin() as conn:
        conn.execute(things.delete())
        conn.execute(insert(things).values(id=1, state="s", at=moment))
        return str(conn.exec_driver_sql("SELECT at FROM things").scalar())


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9998, 12, 31),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))])))
def test_a_time_is_stored_as_the_same_text_as_sqlalchemy_stores_it(moment: datetime) -> None:
    assert sqlite_time(moment) == _core_text(moment)


def test_whole_seconds_keep_their_microseconds_so_text_order_is_time_order() -> None:
    assert sqlite_time(T0) == "2026-11-27 12:00:00.000000"
    assert sqlite_time(T0 + timedelta(microseconds=1)) == "2026-11-27 12:00:00.000001"
    assert sqlite_time(None) is None


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sqlite_time(datetime(2026, 1, 1))


def test_rows_written_by_a_prepared_insert_and_update_read_back_as_core_wrote_them(
        engine: Engine) -> None:
    add = Prepared(insert(things), columns=["id", "state", "reason", "at"])
    later = T0 + timedelta(minutes=5)
    with engine.begin() as conn:
        add.run(conn, [{"id": 1, "state": ArchiveState.PENDING, "reason": FailureReason.REFUSED,
                        "at": T0.astimezone(timezone(timedelta(hours=2)))},
                       {"id": 2, "state": "pending", "reason": None, "at": None}])
        conn.execute(insert(things).values(id=3, state="pending", reason=None, at=T0))
    move = Prepared(update(things).where(things.c.id == bindparam("b_id"),
                                         things.c.state == ArchiveState.PENDING)
                    .values(state=ArchiveState.ARCHIVED, at=bindparam("b_at"),
                            count=things.c.count + 1))
    with engine.begin() as conn:
        move.run(conn, [{"b_id": 1, "b_at": later}, {"b_id": 3, "b_at": later}])
        move.run(conn, [{"b_id": 3, "b_at": T0}])  # no longer pending: no change
        move.run(conn, [])
    with engine.connect() as conn:
        rows: dict[int, Any] = {r.id: r for r in conn.execute(select(things))}
        # A prepared time compares with one Core bound (text order on SQLite).
        after = conn.scalars(select(things.c.id).where(things.c.at >= later)
                             .order_by(things.c.id)).all()
    assert (rows[1].state, rows[1].reason, rows[1].at, rows[1].count) == (
        "archived", int(FailureReason.REFUSED), later, 8)
    assert (rows[2].state, rows[2].reason, rows[2].at, rows[2].count) == ("pending", None,
                                                                          None, 7)
    assert (rows[3].state, rows[3].at, rows[3].count) == ("archived", later, 8)
    assert after == [1, 3]


def test_a_prepared_statement_runs_in_the_callers_transaction(engine: Engine) -> None:
    add = Prepared(insert(things), columns=["id", "state", "reason", "at"])
    with pytest.raises(RuntimeError), engine.begin() as conn:
        add.run(conn, [{"id": 9, "state": "pending", "reason": None, "at": T0}])
        raise RuntimeError("roll back")
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM things")) == 0


def test_types_it_cannot_convert_are_refused_when_compiled(engine: Engine) -> None:
    table = Table("docs", MetaData(), Column("id", Integer, primary_key=True),
                  Column("body", JSON))
    with engine.begin() as conn, pytest.raises(TypeError, match="JSON"):
        Prepared(insert(table), columns=["id", "body"]).run(conn, [{"id": 1, "body": {}}])


def test_an_insert_needs_a_value_for_a_column_whose_default_is_computed(
        engine: Engine) -> None:
    table = Table("stamped", MetaData(), Column("id", Integer, primary_key=True),
                  Column("n", Integer, default=lambda: 1))
    with engine.begin() as conn, pytest.raises(TypeError, match="needs a value for n"):
        Prepared(insert(table), columns=["id"]).run(conn, [{"id": 1}])


def test_a_time_formatted_again_gets_its_own_text_whichever_came_between() -> None:
    first, second = T0, T0 + timedelta(hours=1, microseconds=3)
    in_delhi = second.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert [sqlite_time(first), sqlite_time(first), sqlite_time(second), sqlite_time(in_delhi),
            sqlite_time(first)] == ["2026-11-27 12:00:00.000000", "2026-11-27 12:00:00.000000",
                                    "2026-11-27 13:00:00.000003", "2026-11-27 13:00:00.000003",
                                    "2026-11-27 12:00:00.000000"]
    with pytest.raises(ValueError, match="timezone-aware"):
        sqlite_time(datetime(2026, 11, 27, 12))  # the same wall time, naive: still refused


def test_statements_with_one_per_row_value_none_or_one_used_twice(engine: Engine) -> None:
    add = Prepared(insert(things), columns=["id", "state", "reason", "at"])
    with engine.begin() as conn:
        add.run(conn, [{"id": i, "state": "pending", "reason": None, "at": T0}
                       for i in (1, 2, 3)])
    one = Prepared(update(things).where(things.c.id == bindparam("b_id")).values(count=5))
    every = Prepared(update(things).values(state=ArchiveState.FAILED))
    twice = Prepared(update(things).where(things.c.id == bindparam("b_n"))
                     .values(reason=bindparam("b_n"), at=bindparam("b_at")))
    with engine.begin() as conn:
        every.run(conn, [{}])
        one.run(conn, [{"b_id": 1}, {"b_id": 3}])
        twice.run(conn, [{"b_n": 2, "b_at": T0 + timedelta(days=1)}])
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(
            select(things.c.id, things.c.state, things.c.reason, things.c.at, things.c.count)
            .order_by(things.c.id))]
    assert rows == [(1, "failed", None, T0, 5), (2, "failed", 2, T0 + timedelta(days=1), 7),
                    (3, "failed", None, T0, 5)]


class _Shade(enum.Enum):  # neither str nor int: the driver takes only its value
    DARK = "dark"
    CODE = 3


def test_a_plain_enum_is_written_as_its_value(engine: Engine) -> None:
    add = Prepared(insert(things), columns=["id", "state", "reason", "at"])
    with engine.begin() as conn:
        add.run(conn, [{"id": 1, "state": _Shade.DARK, "reason": _Shade.CODE, "at": None}])
    with engine.connect() as conn:
        assert tuple(conn.execute(select(things.c.state, things.c.reason)).one()) == ("dark", 3)
