"""Archive sinks beside SMTP, behind the archiver's `Transport` interface (`send`, `close`).

The archiver gives each copy's exact bytes to `send()` as it would to the archive relay, so the
outbox, the retries, exactly-once per sent log and the ledger are the same for every sink; the
`Outcome` text (the ledger's `ack`) says where the copy went.

- `DirectorySink`: one file per copy, `YYYY/MM/DD/<delivery>-<log>.eml` (the day it was
  archived, UTC; the identity read from the Message-ID Postroom wrote), written to a temporary
  `.name` in the same directory, fsynced, renamed, and the directory fsynced. A copy written
  again (its first attempt in doubt after a crash) replaces its own file the same day.
- `ImapSink`: `APPEND` to a folder (imaplib in a thread), one connection per archiver worker.

A failure to write is a temporary fault (no reply): the archiver backs off and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import imaplib
import os
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from postroom.archive.journal import journal_report
from postroom.archive.reconcile import Kind, fingerprint, parse_message_id
from postroom.archive.stores import ImapLocation
from postroom.domain.outcomes import Outcome, Verdict, connection_fault
from postroom.transport.routed import Batch, Transport, send_all

__all__ = ["DirectorySink", "ImapSink", "JournalTransport", "copy_name"]


def copy_name(data: bytes) -> str:
    """`<delivery>-<log>.eml` from the copy's Message-ID, else its hash (not expected)."""
    ident = parse_message_id(fingerprint(data).message_id)
    if ident.kind is Kind.LOG:
        return f"{ident.delivery_id}-{ident.log_id}.eml"
    return f"unknown-{hashlib.sha256(data).hexdigest()[:24]}.eml"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectorySink:
    def __init__(self, root: Path, *, clock: Callable[[], datetime]):
        self._root = root
        self._clock = clock

    def _write(self, data: bytes) -> str:
        day = self._clock().strftime("%Y/%m/%d")
        folder = self._root / day
        folder.mkdir(parents=True, exist_ok=True)
        name = copy_name(data)
        temporary = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, folder / name)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        _fsync_dir(folder)
        return f"file {day}/{name}"

    async def send(self, sender: str, recipient: str, data: bytes, *,
                   smtputf8: bool = False) -> Outcome:
        try:
            where = await asyncio.to_thread(self._write, data)
        except OSError as exc:
            return connection_fault(f"archive directory {self._root}: {exc}")
        return Outcome(Verdict.SENT, None, detail=where)

    async def close(self) -> None:
        return None


class ImapSink:
    def __init__(self, location: ImapLocation, password: str, *, timeout: float = 30.0):
        self._location = location
        self._password = password
        self._timeout = timeout
        self._client: imaplib.IMAP4 | None = None

    def _connect(self) -> imaplib.IMAP4:
        loc = self._location
        client = (imaplib.IMAP4_SSL(loc.host, loc.port, timeout=self._timeout) if loc.tls
                  else imaplib.IMAP4(loc.host, loc.port, timeout=self._timeout))
        try:
            client.login(loc.user, self._password)
        except BaseException:  # refused (bad password, the server's connection limit): the
            with contextlib.suppress(OSError):  # socket goes now, not at garbage collection,
                client.shutdown()  # or it counts against that limit meanwhile
            raise
        return client

    def _append(self, data: bytes) -> str:
        if self._client is None:
            self._client = self._connect()
        folder = '"' + self._location.folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
        status, answer = self._client.append(folder, "", imaplib.Time2Internaldate(time.time()),
                                             data)
        text = b" ".join(a for a in answer if isinstance(a, bytes)).decode("utf-8", "replace")
        if status != "OK":
            raise imaplib.IMAP4.error(f"APPEND refused: {text}")
        return f"imap {self._location.folder} {text}".strip()

    async def send(self, sender: str, recipient: str, data: bytes, *,
                   smtputf8: bool = False) -> Outcome:
        try:
            where = await asyncio.to_thread(self._append, data)
        except (imaplib.IMAP4.error, OSError) as exc:
            await self.close()
            return connection_fault(f"archive IMAP {self._location}: {exc}")
        return Outcome(Verdict.SENT, None, detail=where)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                await asyncio.to_thread(client.logout)


class JournalTransport:
    """`archive.format = "journal"`: each copy goes out as a journal report around the original
    (archive/journal.py), through any sink; pipelining kept where the sink has it."""

    def __init__(self, inner: Transport):
        self._inner = inner

    @staticmethod
    def _wrap(sender: str, recipient: str, data: bytes) -> bytes:
        return journal_report(data, sender=sender, archive=recipient)

    async def send(self, sender: str, recipient: str, data: bytes, *,
                   smtputf8: bool = False) -> Outcome:
        return await self._inner.send(sender, recipient, self._wrap(sender, recipient, data),
                                      smtputf8=smtputf8)

    async def send_batch(self, items: Batch) -> list[Outcome]:
        return await send_all(self._inner, [(s, r, self._wrap(s, r, d), u)
                                            for s, r, d, u in items])

    async def close(self) -> None:
        await self._inner.close()
