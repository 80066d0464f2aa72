"""SQLite writers take turns through `<database>-turn` (storage/write_turn.py): a write
transaction holds the turn from its first write to its end, a writer that finds it taken waits
for it and then goes on, reads never take it, and the turn never stands where SQLite's own lock
decides (a turn not had in time, or one whose holder died, does not stop a writer)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from postroom.storage import write_turn
from postroom.storage.sql import open_store
from postroom.storage.write_turn import (
    CHECKPOINT_FRAMES,
    SAFETY_FRAMES,
    TurnConnection,
    begins_write,
    turn_path,
    wal_backlog,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "postroom.db"


@pytest.fixture
def engine(db: Path) -> Iterator[Engine]:
    store = open_store(f"sqlite:///{db}")
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    yield store.engine
    store.close()


def _taken(db: Path) -> bool:
    """Whether someone holds the turn, seen from a descriptor of our own."""
    fd = os.open(f"{db}-turn", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _notes(db: Path) -> list[str]:
    with sqlite3.connect(db) as plain:  # a plain connection: no turn
        return [body for (body,) in plain.execute("SELECT body FROM notes ORDER BY id")]


# -- which statements begin a write transaction ----------------------------------------------

def test_turn_path_is_beside_the_database_file_and_absent_for_memory_or_uri() -> None:
    assert turn_path("/var/lib/postroom/p.db") == "/var/lib/postroom/p.db-turn"
    assert turn_path(":memory:") is None
    assert turn_path("") is None
    assert turn_path("file:p.db?mode=ro") is None


_BLANKS = st.lists(st.sampled_from([" ", "\t", "\n", "\r", "\f", "-- a comment\n",
                                    "--\n", "/* note */", "/*\n * insert\n */", "/**/"]),
                   max_size=4).map("".join)
_STATEMENTS = st.sampled_from([
    "INSERT INTO t VALUES (1)", "insert into t values (2)", "UPDATE t SET a = 3",
    "update t set a = 4", "DELETE FROM t", "delete from t", "REPLACE INTO t VALUES (5)",
    "SELECT 1", "select a from t", "WITH q AS (SELECT 6) SELECT * FROM q",
    "WITH q AS (SELECT 7) INSERT INTO t SELECT * FROM q", "PRAGMA user_version",
    "VALUES (8)",
])


@settings(max_examples=300, deadline=None)
@given(_BLANKS, _STATEMENTS)
def test_begins_write_says_what_pysqlite_does(blanks: str, statement: str) -> None:
    """The oracle is the driver itself: it opened a transaction before the statement
    exactly when `begins_write` says so (blanks and comments skipped, as it does)."""
    plain = sqlite3.connect(":memory:")
    try:
        plain.execute("CREATE TABLE t (a INTEGER)")
        plain.execute(blanks + statement).fetchall()
        assert begins_write(blanks + statement) is plain.in_transaction
    finally:
        plain.close()


# -- checkpoints after the turn -------------------------------------------------------------

def _header(last: int, copied: int) -> bytes:
    header = bytearray(136)
    struct.pack_into("=I", header, 16, last)
    struct.pack_into("=I", header, 96, copied)
    return bytes(header)


def test_wal_backlog_reads_the_wal_index_header() -> None:
    assert wal_backlog(_header(1300, 300)) == 1000
    assert wal_backlog(_header(7, 7)) == 0
    assert wal_backlog(_header(3, 5)) == 0  # read while a writer restarted the WAL
    assert wal_backlog(_header(1300, 300)[:100]) == 1000  # the 100 bytes it reads
    assert wal_backlog(_header(1300, 300)[:99]) == 0  # no header yet
    assert wal_backlog(b"") == 0


def test_wal_backlog_matches_what_sqlite_reports(db: Path) -> None:
    plain = sqlite3.connect(db, isolation_level=None)
    try:
        plain.execute("PRAGMA journal_mode=WAL")
        plain.execute("PRAGMA wal_autocheckpoint=0")
        plain.execute("CREATE TABLE t (a BLOB)")
        for _ in range(40):
            plain.execute("INSERT INTO t VALUES (?)", (b"x" * 5000,))
        backlog = wal_backlog(Path(f"{db}-shm").read_bytes()[:136])
        _, frames, copied = plain.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert backlog == frames > 40 and copied == frames
        assert wal_backlog(Path(f"{db}-shm").read_bytes()[:136]) == 0
    finally:
        plain.close()


def test_commits_checkpoint_the_wal_after_giving_the_turn_back(engine: Engine, db: Path) -> None:
    """SQLite's own automatic checkpoint is left for a WAL past `SAFETY_FRAMES`; below it, a
    commit that leaves `CHECKPOINT_FRAMES` behind checkpoints, with the turn already free."""
    seen: list[bool] = []  # for each checkpoint: whether the turn was taken while it ran
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, TurnConnection)
        assert raw.execute("PRAGMA wal_autocheckpoint").fetchone() == (SAFETY_FRAMES,)
        raw.set_trace_callback(lambda sql: seen.append(_taken(db))
                               if "wal_checkpoint" in sql else None)
        for _ in range(CHECKPOINT_FRAMES // 2):
            conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": "x" * 5000})
            conn.commit()
        raw.set_trace_callback(None)
    assert seen and not any(seen)
    assert wal_backlog(Path(f"{db}-shm").read_bytes()[:136]) < CHECKPOINT_FRAMES


# -- holding the turn ------------------------------------------------------------------------

def test_a_write_transaction_holds_the_turn_until_it_commits(engine: Engine, db: Path) -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT count(*) FROM notes")).scalar()
        assert not _taken(db)  # a read before the first write: no transaction yet
        conn.execute(text("INSERT INTO notes (body) VALUES ('a')"))
        assert _taken(db)
        conn.execute(text("UPDATE notes SET body = 'b'"))
        assert _taken(db)
    assert not _taken(db)
    assert _notes(db) == ["b"]


def test_a_rolled_back_transaction_gives_its_turn_back(engine: Engine, db: Path) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text("INSERT INTO notes (body) VALUES ('lost')"))
        assert _taken(db)
        raise RuntimeError("the caller gave up")
    assert not _taken(db)
    assert _notes(db) == []


def test_a_failed_first_write_gives_its_turn_back(engine: Engine, db: Path) -> None:
    """The statement that began the transaction failed: the transaction is rolled back."""
    with pytest.raises(Exception, match="no such table"), engine.begin() as conn:
        conn.execute(text("INSERT INTO missing (body) VALUES ('x')"))
    assert not _taken(db)


def test_reads_never_take_the_turn(engine: Engine, db: Path) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT * FROM notes")).all()
        assert not _taken(db)


def test_closing_a_connection_in_a_write_transaction_gives_the_turn_back(db: Path) -> None:
    connection = sqlite3.connect(db, factory=TurnConnection)
    connection.execute("CREATE TABLE t (a INTEGER)")
    connection.execute("INSERT INTO t VALUES (1)")
    assert _taken(db)
    connection.close()
    assert not _taken(db)


def test_a_database_in_memory_has_no_turn_and_still_writes() -> None:
    store = open_store("sqlite://")
    try:
        with store.engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (a INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
            assert conn.execute(text("SELECT a FROM t")).scalar() == 1
    finally:
        store.close()


# -- waiting for it --------------------------------------------------------------------------

class _Holder:
    """The turn held from a descriptor of the test's own (another writer, as a writer sees
    it), while SQLite's own lock is free."""

    def __init__(self, db: Path):
        self._fd = os.open(f"{db}-turn", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_in_thread(engine: Engine, body: str) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO notes (body) VALUES (:body)"), {"body": body})
        except BaseException as exc:  # seen by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    return thread, errors


def test_a_writer_waits_for_the_turn_then_writes(engine: Engine, db: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(write_turn, "TURN_WAIT", 120.0)
    holder = _Holder(db)
    try:
        thread, errors = _write_in_thread(engine, "waited")
        thread.join(0.5)
        # SQLite's lock is free: without the turn the row would be in by now.
        assert thread.is_alive()
        assert _notes(db) == []
    finally:
        holder.release()
    thread.join(30)
    assert not thread.is_alive()
    assert errors == []
    assert _notes(db) == ["waited"]


def test_a_turn_not_had_in_time_leaves_the_write_to_sqlite(engine: Engine, db: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The turn orders writers; it is never the lock that decides. Held forever elsewhere
    (a stuck process), it delays a write by `TURN_WAIT`, and does not stop it."""
    monkeypatch.setattr(write_turn, "TURN_WAIT", 0.2)
    holder = _Holder(db)
    try:
        thread, errors = _write_in_thread(engine, "went on")
        thread.join(30)
        assert not thread.is_alive()
        assert errors == []
        assert _notes(db) == ["went on"]
    finally:
        holder.release()


_DIE_HOLDING = """
import sys, time
from sqlalchemy import text
from postroom.storage.sql import open_store
store = open_store(sys.argv[1])
conn = store.engine.connect()
conn.begin()
conn.execute(text("INSERT INTO notes (body) VALUES ('never committed')"))
print("holding", flush=True)
time.sleep(600)
"""


def test_a_process_killed_in_its_write_transaction_frees_the_turn(
        engine: Engine, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(write_turn, "TURN_WAIT", 600.0)  # only the kill can end the wait
    child = subprocess.Popen([sys.executable, "-c", _DIE_HOLDING, f"sqlite:///{db}"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "holding"
        assert _taken(db)
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    thread, errors = _write_in_thread(engine, "after the kill")
    thread.join(30)
    assert not thread.is_alive()
    assert errors == []
    assert _notes(db) == ["after the kill"]


_WRITER = """
import sys
from sqlalchemy import text
from postroom.storage.sql import open_store
store = open_store(sys.argv[1])
for n in range(int(sys.argv[3])):
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": f"{sys.argv[2]}-{n}"})
        conn.execute(text("UPDATE notes SET body = body WHERE id = (SELECT max(id) FROM notes)"))
store.close()
"""


def test_processes_writing_at_once_all_commit(engine: Engine, db: Path) -> None:
    """Three processes, small write transactions as fast as they can: every row is in, none
    twice, and no writer was turned away (`database is locked`)."""
    children = [subprocess.Popen([sys.executable, "-c", _WRITER, f"sqlite:///{db}",
                                  name, "150"], stderr=subprocess.PIPE, text=True)
                for name in ("a", "b", "c")]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    assert sorted(_notes(db)) == sorted(f"{name}-{n}" for name in "abc" for n in range(150))
    assert not _taken(db)
