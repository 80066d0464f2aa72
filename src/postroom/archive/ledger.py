"""The archive hash ledger, pure: entries, their chain, checkpoints and the export format.

Each archive copy the archive acknowledged becomes one entry. An entry's *body* is the canonical
JSON of its facts (sorted keys, no spaces, UTF-8); its *digest* is the SHA-256 of the body; its
*hash* is ``sha256("<seq>:<prev>:<digest>")`` where ``prev`` is the hash of the entry before it
(64 zeros for the first). So an edited, deleted, reordered or inserted entry breaks the chain at
that place, and a checkpoint (the head hash and the count, signed with Ed25519) fixes the whole
chain up to it. The digest lets an export show an entry it leaves out (another delivery's) as a
stub that still links the chain. docs/archive.md gives the auditor's procedure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring  # json.dumps's string writer (ensure_ascii=False)
from typing import Any

__all__ = [
    "GENESIS",
    "Checkpoint",
    "Entry",
    "Fault",
    "body_digest",
    "canonical",
    "chain_hash",
    "check_chain",
    "entry_digest",
    "format_time",
]

GENESIS = "0" * 64


def format_time(moment: datetime) -> str:
    """UTC, microseconds, `Z`: the one text form of a time in the ledger (`strftime`'s
    `%Y-%m-%dT%H:%M:%S.%fZ`, written out with `%`: twice per archived copy, 2.9 µs against
    5.8 for strftime and 5.2 for an f-string with format specs, on the bench machine)."""
    t = moment.astimezone(UTC)
    if t.year < 1000:  # strftime's %Y does not pad these; keep its text exactly
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "%d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 - the fastest writer here
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond)


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def chain_hash(seq: int, prev: str, digest: str) -> str:
    return hashlib.sha256(f"{seq}:{prev}:{digest}".encode("ascii")).hexdigest()


def entry_digest(delivery: int, log: int, message_id: str, sha256: str, size: int,
                 accepted_at: datetime, acked_at: datetime, ack: str) -> str:
    """The SHA-256 of an entry's canonical body (`canonical(entry.body())`)."""
    return body_digest(delivery, log, message_id, sha256, size, format_time(accepted_at),
                       format_time(acked_at), ack)


def body_digest(delivery: int, log: int, message_id: str, sha256: str, size: int,
                accepted: str, acked: str, ack: str) -> str:
    """`entry_digest` with both times already written by `format_time`. The JSON is written
    out in its sorted key order by json's own string and integer writers: a `json.dumps` with
    `sort_keys` of a fresh dict was most of an append's Python time, under the database's
    write lock (bench/RESULTS.md, issue 16). A property test holds it equal to `canonical`."""
    text = "".join((
        '{"accepted_at":"', accepted, '","ack":', encode_basestring(ack),
        ',"acked_at":"', acked, '","delivery":', int.__repr__(delivery),
        ',"log":', int.__repr__(log), ',"message_id":', encode_basestring(message_id),
        ',"sha256":', encode_basestring(sha256), ',"size":', int.__repr__(size), "}"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Entry:
    """One archive copy as the ledger keeps it (times are aware UTC datetimes)."""

    seq: int
    delivery: int
    log: int
    message_id: str
    sha256: str
    size: int
    accepted_at: datetime  # when the recipient's server accepted the message
    acked_at: datetime  # when the archive acknowledged the copy
    ack: str  # how: the archive relay's reply, or the file or folder the copy went to
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        return {"delivery": self.delivery, "log": self.log, "message_id": self.message_id,
                "sha256": self.sha256, "size": self.size,
                "accepted_at": format_time(self.accepted_at),
                "acked_at": format_time(self.acked_at), "ack": self.ack}

    def digest(self) -> str:
        return entry_digest(self.delivery, self.log, self.message_id, self.sha256, self.size,
                            self.accepted_at, self.acked_at, self.ack)

    def expected_hash(self) -> str:
        return chain_hash(self.seq, self.prev, self.digest())

    def export(self) -> dict[str, Any]:
        return {"seq": self.seq, **self.body(), "prev": self.prev, "hash": self.hash}

    def stub(self) -> dict[str, Any]:
        """The entry left out of an export, still linking the chain."""
        return {"seq": self.seq, "digest": self.digest(), "prev": self.prev, "hash": self.hash}


def new_entry(*, seq: int, prev: str, delivery: int, log: int, message_id: str, sha256: str,
              size: int, accepted_at: datetime, acked_at: datetime, ack: str) -> Entry:
    digest = entry_digest(delivery, log, message_id, sha256, size, accepted_at, acked_at, ack)
    return Entry(seq, delivery, log, message_id, sha256, size, accepted_at, acked_at, ack,
                 prev, chain_hash(seq, prev, digest))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain head after `count` entries, at `time`, signed by `public_key` (hex)."""

    count: int
    head: str
    time: datetime
    public_key: str
    signature: str  # hex Ed25519 signature of `payload()`

    def payload(self) -> bytes:
        return canonical({"count": self.count, "head": self.head,
                          "time": format_time(self.time)})

    def export(self) -> dict[str, Any]:
        return {"checkpoint": {"count": self.count, "head": self.head,
                               "time": format_time(self.time)},
                "public_key": self.public_key, "signature": self.signature}


@dataclass(frozen=True, slots=True)
class Fault:
    """The first place where the chain is not what it should be."""

    seq: int
    problem: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.problem}"


def check_chain(entries: Iterable[Entry]) -> Iterator[tuple[int, str, Fault | None]]:
    """Walk the whole chain from its start in `seq` order.

    Yields `(seq, hash, fault)` for every entry; the first fault names the first entry that an
    edit, deletion, reordering or insertion broke. Streaming: one entry in memory at a time.
    """
    prev = GENESIS
    expected_seq = 1
    for entry in entries:
        fault: Fault | None = None
        if entry.seq != expected_seq:
            fault = Fault(entry.seq, f"sequence number {entry.seq} where {expected_seq} was "
                          "expected: an entry is missing, inserted or moved")
        elif entry.prev != prev:
            fault = Fault(entry.seq, "its link to the previous entry is broken: the entry "
                          "before it was deleted, inserted, moved or edited")
        elif entry.expected_hash() != entry.hash:
            fault = Fault(entry.seq, "its content does not match its hash: the entry "
                          "was edited")
        yield entry.seq, entry.hash, fault
        prev = entry.hash
        expected_seq = entry.seq + 1
