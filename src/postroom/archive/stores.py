"""Reading an archive store back, one copy at a time: a Maildir, a directory sink, IMAP.

Each reader yields `(location, bytes)` and keeps at most one copy (IMAP: one fetch batch) in
memory. A copy larger than `max_bytes` is yielded as `None` data, to be reported, not read.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from postroom.errors import InputError, TransportError

__all__ = ["ArchiveReader", "ImapLocation", "imap_copies", "parse_imap_url", "tree_copies"]

ArchiveReader = Iterator[tuple[str, bytes | None]]
_FETCH_BATCH = 100


def _read(path: Path, max_bytes: int) -> bytes | None:
    try:
        if path.stat().st_size > max_bytes:
            return None
        return path.read_bytes()
    except FileNotFoundError:  # removed while we read (a Maildir client moved it): skip
        return b""


def tree_copies(root: Path, *, max_bytes: int) -> ArchiveReader:
    """Every message of a Maildir folder (its `new/` and `cur/`; not `tmp/`, not sub-folders),
    or every `*.eml` under a directory sink (temporary `.name` files skipped), in a stable
    order."""
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    if (root / "cur").is_dir() or (root / "new").is_dir():
        for sub in ("new", "cur"):
            folder = root / sub
            names = sorted(os.listdir(folder)) if folder.is_dir() else []
            for name in names:
                if not name.startswith("."):
                    yield from _one(root, folder / name, max_bytes)
        return
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".eml") and not name.startswith("."):
                yield from _one(root, Path(base) / name, max_bytes)


def _one(root: Path, path: Path, max_bytes: int) -> ArchiveReader:
    data = _read(path, max_bytes)
    if data != b"":
        yield str(path.relative_to(root)), data


@dataclass(frozen=True, slots=True)
class ImapLocation:
    tls: bool
    user: str
    host: str
    port: int
    folder: str

    def __str__(self) -> str:
        scheme = "imaps" if self.tls else "imap"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.folder}"


def parse_imap_url(url: str) -> ImapLocation:
    """`imaps://user@host[:port]/folder` (or `imap://` on a trusted network); no password."""
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps"):
        raise InputError(f"{url!r}: expected imaps://user@host/folder")
    if parts.password is not None:
        raise InputError("the IMAP URL may not hold a password: set POSTROOM_ARCHIVE_IMAP_"
                         "PASSWORD in the environment")
    if not parts.hostname or not parts.username:
        raise InputError(f"{url!r}: expected imaps://user@host/folder (user and host needed)")
    tls = parts.scheme == "imaps"
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return ImapLocation(tls, unquote(parts.username), parts.hostname,
                        parts.port or (993 if tls else 143), folder)


_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID = re.compile(rb"UID (\d+)")


def imap_copies(location: ImapLocation, password: str, *, max_bytes: int,
                timeout: float = 30.0) -> ArchiveReader:
    """Every message of the folder, read-only (`EXAMINE`; flags untouched, BODY.PEEK)."""
    try:
        client: imaplib.IMAP4 = (
            imaplib.IMAP4_SSL(location.host, location.port, timeout=timeout) if location.tls
            else imaplib.IMAP4(location.host, location.port, timeout=timeout))
    except OSError as exc:
        raise TransportError(f"{location}: cannot connect: {exc}") from None
    try:
        try:
            client.login(location.user, password)
        except imaplib.IMAP4.error as exc:
            raise TransportError(f"{location}: login refused: {exc}") from None
        status, _ = client.select(_quote(location.folder), readonly=True)
        if status != "OK":
            raise InputError(f"{location}: no such folder")
        status, found = client.uid("SEARCH", "ALL")
        uids = found[0].split() if status == "OK" and found and found[0] else []
        for start in range(0, len(uids), _FETCH_BATCH):
            batch = b",".join(uids[start:start + _FETCH_BATCH]).decode("ascii")
            status, sizes = client.uid("FETCH", batch, "(RFC822.SIZE)")
            small: list[bytes] = []
            for item in sizes:
                raw = item if isinstance(item, bytes) else b""
                uid, size = _UID.search(raw), _SIZE.search(raw)
                if uid is None or size is None:
                    continue
                if int(size.group(1)) > max_bytes:
                    yield f"{location} UID {uid.group(1).decode()}", None
                else:
                    small.append(uid.group(1))
            if not small:
                continue
            status, fetched = client.uid("FETCH", b",".join(small).decode("ascii"),
                                         "(BODY.PEEK[])")
            for item in fetched:
                if isinstance(item, tuple):
                    uid = _UID.search(item[0])
                    name = uid.group(1).decode() if uid else "?"
                    yield f"{location} UID {name}", item[1]
    except TransportError:
        raise
    except (imaplib.IMAP4.error, OSError) as exc:
        raise TransportError(f"{location}: {exc}") from None
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
