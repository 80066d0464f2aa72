"""The hash ledger's pure core: chain faults named at the first broken entry, checkpoints."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.archive.audit import audit
from postroom.archive.ledger import (
    GENESIS,
    Entry,
    canonical,
    chain_hash,
    entry_digest,
    format_time,
    new_entry,
)
from postroom.archive.signing import Signer, new_private_key_hex, verify_checkpoint
from postroom.errors import ConfigError

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)  # a fixed time, no real clock in these tests


def _chain(n: int) -> list[Entry]:
    entries: list[Entry] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        entry = new_entry(seq=seq, prev=prev, delivery=1, log=seq, message_id=f"<{seq}.1.s@x>",
                          sha256=f"{seq:064x}", size=1000 + seq,
                          accepted_at=T0 + timedelta(seconds=seq),
                          acked_at=T0 + timedelta(seconds=seq, microseconds=7), ack="250 ok")
        entries.append(entry)
        prev = entry.hash
    return entries


def _first_fault(entries: list[Entry]) -> int | None:
    report = audit(entries, checkpoints=[], public_key=None)
    return None if report.fault is None else report.fault.seq


def test_an_intact_chain_has_no_fault() -> None:
    assert _first_fault(_chain(10)) is None


def test_an_edited_field_is_named() -> None:
    entries = _chain(10)
    entries[4] = dataclasses.replace(entries[4], sha256="f" * 64)
    assert _first_fault(entries) == 5


def test_an_edited_hash_is_named() -> None:
    entries = _chain(10)
    entries[4] = dataclasses.replace(entries[4], hash="e" * 64)
    assert _first_fault(entries) == 5


def test_a_deleted_entry_names_the_one_after_it() -> None:
    entries = _chain(10)
    del entries[6]
    report = audit(entries, checkpoints=[], public_key=None)
    assert report.fault is not None and report.fault.seq == 8
    assert "missing" in report.fault.problem


def test_a_swapped_pair_is_named_at_the_first() -> None:
    entries = _chain(10)
    a, b = entries[2], entries[3]
    entries[2] = dataclasses.replace(b, seq=3)
    entries[3] = dataclasses.replace(a, seq=4)
    assert _first_fault(entries) == 3


def test_an_inserted_entry_is_named_by_the_link_after_it() -> None:
    entries = _chain(10)
    forged = new_entry(seq=5, prev=entries[3].hash, delivery=1, log=99, message_id="<x>",
                       sha256="a" * 64, size=1, accepted_at=T0, acked_at=T0, ack="250")
    # A well-formed forgery, the entries after it renumbered: the next one no longer links.
    entries = [*entries[:4], forged,
               *(dataclasses.replace(e, seq=e.seq + 1) for e in entries[4:])]
    report = audit(entries, checkpoints=[], public_key=None)
    assert report.fault is not None and report.fault.seq == 6
    assert "inserted" in report.fault.problem


def test_a_deleted_tail_shows_against_the_stored_head() -> None:
    entries = _chain(10)
    report = audit(entries[:8], checkpoints=[], public_key=None,
                   stored_head=(10, entries[-1].hash))
    assert report.fault is None and report.head_problem is not None and not report.ok


def test_checkpoints_verify_with_the_public_key_alone() -> None:
    seed, public = new_private_key_hex()
    signer = Signer(seed)
    entries = _chain(10)
    checkpoint = signer.checkpoint(10, entries[-1].hash, T0)
    assert verify_checkpoint(checkpoint, public)
    assert audit(entries, checkpoints=[checkpoint], public_key=public).ok
    # another key, a changed count, a head that is not the chain's: all refused
    _, other = new_private_key_hex()
    assert not verify_checkpoint(checkpoint, other)
    assert not verify_checkpoint(dataclasses.replace(checkpoint, count=9), public)
    wrong_head = signer.checkpoint(9, entries[-1].hash, T0)
    report = audit(entries, checkpoints=[wrong_head], public_key=public)
    assert report.checkpoint_problems and not report.ok


def test_the_signing_key_is_never_shown_and_bad_keys_are_clear() -> None:
    seed, public = new_private_key_hex()
    signer = Signer(seed)
    assert seed not in repr(signer) and public in repr(signer)
    with pytest.raises(ConfigError, match=r"archive\.ledger_key"):
        Signer("not a key")


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-11))])))
def test_a_time_is_written_as_strftime_writes_it(moment: datetime) -> None:
    assert format_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_times_in_the_ledger_are_utc_with_microseconds() -> None:
    in_paris = timezone(timedelta(hours=1))
    assert format_time(T0.astimezone(in_paris)) == "2026-01-05T09:30:00.000000Z"
    assert format_time(datetime(999, 3, 4, 5, 6, 7, 8, tzinfo=UTC)) == "999-03-04T05:06:07.000008Z"
    assert canonical(_chain(1)[0].body()) == (
        b'{"accepted_at":"2026-01-05T09:30:01.000000Z","ack":"250 ok",'
        b'"acked_at":"2026-01-05T09:30:01.000007Z","delivery":1,"log":1,'
        b'"message_id":"<1.1.s@x>","sha256":"' + b"0" * 63 + b'1","size":1001}')


_TIMES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                      timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3))]))
_INTS = st.integers(min_value=-(2 ** 63), max_value=2 ** 63)


@given(delivery=_INTS, log=_INTS, size=_INTS, message_id=st.text(), sha256=st.text(),
       ack=st.text(), accepted_at=_TIMES, acked_at=_TIMES)
def test_the_written_out_digest_is_the_digest_of_the_canonical_body(
        delivery: int, log: int, size: int, message_id: str, sha256: str, ack: str,
        accepted_at: datetime, acked_at: datetime) -> None:
    """Quotes, backslashes, control characters, non-ASCII and lone surrogates included: the
    hand-written JSON is json.dumps's, byte for byte (or fails as it does)."""
    entry = Entry(1, delivery, log, message_id, sha256, size, accepted_at, acked_at, ack,
                  GENESIS, "")
    try:
        expected = hashlib.sha256(canonical(entry.body())).hexdigest()
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            entry_digest(delivery, log, message_id, sha256, size, accepted_at, acked_at, ack)
        return
    assert entry_digest(delivery, log, message_id, sha256, size, accepted_at,
                        acked_at, ack) == expected
    assert entry.digest() == expected


def test_a_new_entry_links_its_digest_to_the_previous_hash() -> None:
    first, second = _chain(2)
    assert second.prev == first.hash
    assert second.hash == chain_hash(2, first.hash, second.digest())
    assert second.hash == hashlib.sha256(
        f"2:{first.hash}:{hashlib.sha256(canonical(second.body())).hexdigest()}"
        .encode("ascii")).hexdigest()
