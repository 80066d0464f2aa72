"""Writers on one SQLite database take turns through a lock file, not SQLite's busy sleeps.

SQLite admits one writer at a time. A connection that finds the write lock taken waits in
SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ms ... between its tries, however
soon the lock is free. Postroom's writers commit every few milliseconds and hold the lock for
about one: with the archive copies drained in a second process (ADR 0030) or two send
processes (ADR 0031), each process slept about a tenth of a send in that handler (ADR 0032).

So each SQLite connection of a file database opens `<database>-turn`, beside the WAL, and
takes an exclusive `flock` on it just before the statement that begins its write transaction
(pysqlite begins one before the first INSERT, UPDATE, DELETE or REPLACE), and gives it back when
the transaction ends (commit, rollback, close). A connection that finds the turn taken tries
again after 50 µs, doubling up to 1 ms: a wait ends within a fraction of a millisecond of the
other writer's commit.

A commit that leaves at least `CHECKPOINT_FRAMES` pages in the WAL not yet copied into the
database (SQLite's own threshold) runs a PASSIVE checkpoint after it has given its turn back:
SQLite's automatic checkpoint runs inside the commit, two fsyncs while the turn is held, which
was half of a commit's time with the archive copies' 5 KB rows. The backlog is read from the
wal-index header in `<database>-shm` (https://sqlite.org/walformat.html). SQLite's own
automatic checkpoint stays on, at `SAFETY_FRAMES`, for a WAL that would grow anyway.

The turn only orders writers; SQLite's own lock still decides. A connection that has not had
its turn after `TURN_WAIT` seconds (another writer's long transaction, or one of its own
thread's connections holding it) goes on without it, to SQLite's busy timeout as before. A
process that dies holding the turn releases it with its file descriptor.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import struct
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["CHECKPOINT_FRAMES", "SAFETY_FRAMES", "TURN_WAIT", "TurnConnection", "begins_write",
           "turn_path", "wal_backlog"]

log = logging.getLogger(__name__)

TURN_WAIT = 2.0  # seconds a connection waits for its turn before leaving it to SQLite
CHECKPOINT_FRAMES = 1000  # WAL pages not yet in the database that call for a checkpoint
SAFETY_FRAMES = 10 * CHECKPOINT_FRAMES  # SQLite's own automatic checkpoint, as a safety net
_SHM_HEADER = 100
_FIRST_PAUSE, _LONGEST_PAUSE = 50e-6, 1e-3
# What makes pysqlite issue BEGIN: one of these words first, after blanks and comments
# (CPython's Modules/_sqlite/statement.c, `lstrip_sql` and `is_dml`).
_BEGINS = re.compile(r"(?:[ \t\f\n\r]|--[^\n]*\n|/\*.*?\*/)*(?:insert|update|delete|replace)",
                     re.IGNORECASE | re.DOTALL)


def turn_path(database: str) -> str | None:
    """The turn file of a database given as sqlite3.connect's `database`; None for a database
    that has no file of its own (in memory, or named by a URI)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return f"{database}-turn"


def wal_backlog(header: bytes) -> int:
    """Pages in the WAL not yet copied into the database, from the first 100 bytes of the
    `-shm` file: the wal-index header's mxFrame (offset 16) less the checkpoint's nBackfill
    (offset 96), both 32-bit in the machine's byte order. 0 for a header not (yet) there."""
    if len(header) < _SHM_HEADER:
        return 0
    last = int(struct.unpack_from("=I", header, 16)[0])
    copied = int(struct.unpack_from("=I", header, 96)[0])
    return max(0, last - copied)


def begins_write(sql: str) -> bool:
    """Whether pysqlite opens a transaction before `sql` (it looks at the first keyword)."""
    return _BEGINS.match(sql) is not None


class TurnConnection(sqlite3.Connection):
    """A `sqlite3.Connection` (given as `factory=`) that takes its turn before writing."""

    def __init__(self, database: str | bytes | os.PathLike[Any], *args: Any,
                 **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        path = turn_path(os.fsdecode(database))
        self._turn_fd = -1
        if path is not None:
            try:
                self._turn_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:  # a folder it cannot write in: SQLite's lock alone
                log.warning("no write turns on %s: %s", path, exc.strerror)
        self._shm = f"{os.fsdecode(database)}-shm" if path is not None else ""
        self._shm_fd = -1
        self._has_turn = False
        if path is not None:
            self.execute(f"PRAGMA wal_autocheckpoint = {SAFETY_FRAMES}").close()

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or _TurnCursor)

    # sqlite3's own shortcuts make their cursor without calling `cursor()`
    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        return self.cursor().executemany(sql, parameters)

    def commit(self) -> None:
        wrote = self._has_turn
        try:
            super().commit()
        finally:
            self._end_turn()
        if wrote and self._backlog() >= CHECKPOINT_FRAMES:
            try:
                self.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
            except sqlite3.Error as exc:  # the commit stands; a later one checkpoints
                log.debug("checkpoint after commit: %s", exc)

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._end_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._end_turn()
            for fd in (self._turn_fd, self._shm_fd):
                if fd >= 0:
                    os.close(fd)
            self._turn_fd = self._shm_fd = -1

    def _backlog(self) -> int:
        if self._shm_fd < 0:
            try:
                self._shm_fd = os.open(self._shm, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:  # not in WAL mode: nothing to checkpoint
                return 0
        return wal_backlog(os.pread(self._shm_fd, _SHM_HEADER, 0))

    def _take_turn(self) -> None:
        if self._turn_fd < 0 or self._has_turn:
            return
        pause, deadline = _FIRST_PAUSE, 0.0
        while True:
            try:
                fcntl.flock(self._turn_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                now = time.monotonic()
                if not deadline:
                    deadline = now + TURN_WAIT
                elif now >= deadline:
                    return  # SQLite's own lock decides
                time.sleep(pause)
                pause = min(pause * 2, _LONGEST_PAUSE)
                continue
            self._has_turn = True
            return

    def _end_turn(self) -> None:
        if self._has_turn:
            self._has_turn = False
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)


class _TurnCursor(sqlite3.Cursor):
    connection: TurnConnection

    def execute(self, sql: str, parameters: Any = (), /) -> _TurnCursor:
        self._before(sql)
        try:
            return super().execute(sql, parameters)
        finally:
            self._after()

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> _TurnCursor:
        self._before(sql)
        try:
            return super().executemany(sql, seq_of_parameters)
        finally:
            self._after()

    def _before(self, sql: str) -> None:
        connection = self.connection
        if not connection.in_transaction and begins_write(sql):
            connection._take_turn()

    def _after(self) -> None:
        connection = self.connection
        if not connection.in_transaction:  # no transaction began (autocommit, or it failed)
            connection._end_turn()
