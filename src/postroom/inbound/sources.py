"""Where bounce mail comes from: .eml files, a Maildir, an mbox, an IMAP or POP3 mailbox.

Each source yields messages with a way to remove them from the source *after* Postroom has
stored them, so a crash between the two loses nothing (the same mail stored twice counts once:
the store keeps one row per SHA-256).
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import os
import poplib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from postroom.errors import InputError, TransportError

__all__ = ["MAX_MESSAGE_BYTES", "InboundMessage", "from_files", "from_imap", "from_maildir",
           "from_mbox", "from_pop3", "mask_url", "read_capped"]

PASSWORD_ENV = "POSTROOM_MAILBOX_PASSWORD"
_POP3_LIST = re.compile(rb"(\d{1,9}) (\d{1,18})\s*")  # a LIST line: number, size in octets


MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # the largest bounce taken in, from any source


@dataclass(frozen=True)
class InboundMessage:
    """A message read from a source, or (`refused` set, no data) one that was not taken in
    and stays at its source."""

    data: bytes
    source: str
    envelope_to: str = ""
    done: Callable[[], object] = field(default=lambda: None, compare=False)  # remove at source
    refused: str = ""  # why it was not read: too large, unreadable


def _too_large(size: int) -> str:
    return (f"{size:,} bytes or more, over the {MAX_MESSAGE_BYTES:,}-byte limit of a bounce; "
            "not taken in, left at the source")


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def _read_capped(stream: _Readable) -> bytes | None:
    """At most MAX_MESSAGE_BYTES from a stream; None when there is more (never reads it)."""
    data = stream.read(MAX_MESSAGE_BYTES + 1)
    return None if len(data) > MAX_MESSAGE_BYTES else data


def read_capped(path: Path) -> bytes:
    """A bounce file's bytes; InputError (naming the file) if unreadable or too large."""
    try:
        with path.open("rb") as stream:
            data = _read_capped(stream)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file: {exc.strerror}") from None
    if data is None:
        raise InputError(f"{path}: {_too_large(MAX_MESSAGE_BYTES + 1)}")
    return data


def _nothing() -> None:
    return None


def _pop_delete(client: poplib.POP3, number: int) -> None:
    client.dele(number)


def from_files(paths: list[Path]) -> Iterator[InboundMessage]:
    """Each file is one message; an unreadable or too large one is refused alone."""
    for path in paths:
        try:
            data = read_capped(path)
        except InputError as exc:
            yield InboundMessage(b"", f"file:{path}", refused=str(exc))
            continue
        yield InboundMessage(data, f"file:{path}")


def from_maildir(path: Path, *, remove: bool = True) -> Iterator[InboundMessage]:
    if not (path / "cur").is_dir() and not (path / "new").is_dir():
        raise InputError(f"{path}: not a Maildir (no cur/ or new/ folder)")
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in list(box.keys()):
        source = f"maildir:{path}"
        try:
            with contextlib.closing(box.get_file(key)) as stream:
                data = _read_capped(stream)
        except (KeyError, FileNotFoundError):
            continue  # removed meanwhile by another reader
        if data is None:
            yield InboundMessage(b"", source, refused=f"{path} message {key}: "
                                 + _too_large(MAX_MESSAGE_BYTES + 1))
            continue
        yield InboundMessage(data, source,
                             done=partial(box.discard, key) if remove else _nothing)


def from_mbox(path: Path) -> Iterator[InboundMessage]:
    if not path.is_file():
        raise InputError(f"{path}: no such mbox file")
    box = mailbox.mbox(path, create=False)
    try:
        for number, key in enumerate(box.iterkeys(), 1):
            with contextlib.closing(box.get_file(key)) as stream:
                data = _read_capped(stream)
            if data is None:
                yield InboundMessage(b"", f"mbox:{path}", refused=f"{path} message {number}: "
                                     + _too_large(MAX_MESSAGE_BYTES + 1))
                continue
            yield InboundMessage(data, f"mbox:{path}")
    finally:
        box.close()


def mask_url(url: str) -> str:
    """A mailbox URL fit to print: no password."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a bad port or IPv6 address: nothing of it is printed
        return "(unparsable mailbox URL)"
    host = parts.hostname or ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _credentials(url: str) -> tuple[str, str, str, int | None, str]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise InputError(f"bad mailbox URL ({exc}): expected "
                         "SCHEME://USER@HOST[:PORT][/FOLDER]") from None
    if not parts.hostname or not parts.username:
        raise InputError(f"{mask_url(url)}: expected SCHEME://USER@HOST[:PORT][/FOLDER]")
    password = unquote(parts.password or "") or os.environ.get(PASSWORD_ENV, "")
    return (parts.scheme, unquote(parts.username), password, parts.port,
            parts.hostname)


def from_imap(url: str, *, remove: bool = True, timeout: float = 30) -> Iterator[InboundMessage]:
    """imap://user@host[:port]/FOLDER or imaps://...; the password from the URL or from
    $POSTROOM_MAILBOX_PASSWORD. Messages are deleted (expunged) once stored, unless `remove`
    is off, in which case they are only marked seen."""
    scheme, user, password, port, host = _credentials(url)
    folder = unquote(urlsplit(url).path.lstrip("/")) or "INBOX"
    try:
        client: imaplib.IMAP4 = (imaplib.IMAP4_SSL(host, port or 993, timeout=timeout)
                                 if scheme == "imaps" else
                                 imaplib.IMAP4(host, port or 143, timeout=timeout))
        client.login(user, password)
        client.select(folder)
        _, found = client.uid("SEARCH", "ALL")
    except (OSError, imaplib.IMAP4.error) as exc:
        raise TransportError(f"{mask_url(url)}: {exc}") from None
    try:
        for uid in (found[0] or b"").split():
            _, fetched = client.uid("FETCH", uid.decode(), "(RFC822)")
            payload = next((part[1] for part in fetched
                            if isinstance(part, tuple) and len(part) > 1), None)
            if not isinstance(payload, bytes):
                continue

            def done(uid: bytes = uid) -> None:
                flag = "\\Deleted" if remove else "\\Seen"
                client.uid("STORE", uid.decode(), "+FLAGS", f"({flag})")

            yield InboundMessage(payload, mask_url(url), done=done)
        if remove:
            client.expunge()
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()


def from_pop3(url: str, *, remove: bool = True, timeout: float = 30) -> Iterator[InboundMessage]:
    """pop3://user@host[:port] or pop3s://...; deletions take effect when the session ends."""
    scheme, user, password, port, host = _credentials(url)
    try:
        client: poplib.POP3 = (poplib.POP3_SSL(host, port or 995, timeout=timeout)
                               if scheme == "pop3s" else poplib.POP3(host, port or 110,
                                                                     timeout=timeout))
        client.user(user)
        client.pass_(password)
        listing = client.list()[1]
    except (OSError, poplib.error_proto) as exc:
        raise TransportError(f"{mask_url(url)}: {exc}") from None
    try:
        for entry in listing:
            listed = _POP3_LIST.fullmatch(entry)
            if listed is None:
                yield InboundMessage(b"", mask_url(url), refused=f"{mask_url(url)}: unreadable "
                                     f"LIST line {entry[:80]!r}")
                continue
            number, size = int(listed[1]), int(listed[2])
            if size > MAX_MESSAGE_BYTES:  # the size the server gives: never retrieved
                yield InboundMessage(b"", mask_url(url), refused=f"{mask_url(url)} message "
                                     f"{number}: {_too_large(size)}")
                continue
            lines = client.retr(number)[1]
            data = b"\r\n".join(lines) + b"\r\n"
            yield InboundMessage(data, mask_url(url),
                                 done=partial(_pop_delete, client, number) if remove
                                 else _nothing)
    finally:
        with contextlib.suppress(OSError, poplib.error_proto):
            client.quit()
