"""The storage contract the senders rely on, run against SQLite and PostgreSQL alike:
exclusive claims, leases and their renewal, takeover and in-doubt accounting, the workers
registry, one archive copy per log."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from postroom.app import Postroom
from postroom.domain.models import ArchiveResult, ArchiveState, LogUpdate
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.states import LOG_MOVES, BounceState, DeliveryState, LogStatus
from postroom.errors import StateError
from postroom.storage.sql import SqlStore, open_store
from postroom.testing.smtp_server import CaptureServer
from tests.conftest import write_csv

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def sending(capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
            database_url: str, tmp_path: Path) -> tuple[Postroom, int]:
    """A delivery in state `sending` with 50 pending logs."""
    postroom = make_postroom(database_url, capture(), archive=capture(), clock=lambda: T0)
    rows = [{"email": f"c{i:02d}@example.com"} for i in range(50)]
    postroom.recipients.import_recipients(write_csv(tmp_path / "c.csv", rows))
    postroom.templates.create_template("t", {"subject": "Hi", "text": "Hello\n", "email_bcc": True})
    delivery, _ = postroom.deliveries.create_delivery("t")
    assert postroom.deliveries.analyze(delivery.id).ok
    postroom.store.move_delivery(delivery.id, DeliveryState.SENDING, T0)
    return postroom, delivery.id


def _sent(log_id: int, attempts: int = 1) -> LogUpdate:
    return LogUpdate(log_id=log_id, status=LogStatus.SENT, attempts=attempts,
                     next_attempt_at=None, smtp_reply="250 OK", sent_at=T0,
                     archive_data=b"Subject: x\r\n\r\nbody\r\n", sha256=None)


def _bounce_state(store: SqlStore, bounce_id: int) -> str:
    bounce = store.get_bounce(bounce_id)
    assert bounce is not None, f"bounce {bounce_id} is not stored"
    return bounce.state


def _log(store: SqlStore, log_id: int) -> dict[str, object]:
    from sqlalchemy import select

    from postroom.storage.schema import delivery_logs
    with store.engine.connect() as conn:
        row = conn.execute(select(delivery_logs).where(delivery_logs.c.id == log_id)).one()
    return dict(row._mapping)


def test_concurrent_claims_never_share_a_log(sending: tuple[Postroom, int],
                                             database_url: str) -> None:
    delivery_id = sending[1]
    stores = [open_store(database_url) for _ in range(4)]
    got: list[list[int]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def claim(index: int) -> None:
        start.wait()
        while batch := stores[index].claim_due(delivery_id, T0, 3, LEASE, worker=f"w{index}"):
            got[index].extend(t.log_id for t in batch)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    claimed = [log_id for ids in got for log_id in ids]
    assert len(claimed) == 50 == len(set(claimed))


def test_a_lease_keeps_a_log_until_it_runs_out(sending: tuple[Postroom, int]) -> None:
    store = sending[0].store
    delivery_id = sending[1]
    first = store.claim_due(delivery_id, T0, 50, LEASE, worker="a")
    assert len(first) == 50
    assert store.claim_due(delivery_id, T0 + LEASE - timedelta(seconds=1), 50, LEASE,
                           worker="b") == []
    taken = store.claim_due(delivery_id, T0 + LEASE, 50, LEASE, worker="b")
    assert len(taken) == 50
    # Never attempted (not handed to a connection): no doubt about them.
    assert all(_log(store, t.log_id)["in_doubt"] == 0 for t in taken)
    assert _log(store, taken[0].log_id)["claimed_by"] == "b"


def test_taking_over_an_attempted_log_counts_it_in_doubt(sending: tuple[Postroom, int]) -> None:
    store, delivery_id = sending[0].store, sending[1]
    batch = store.claim_due(delivery_id, T0, 10, LEASE, worker="dead")
    store.mark_attempting([t.log_id for t in batch[:4]])
    taken = store.claim_due(delivery_id, T0 + LEASE, 10, LEASE, worker="heir")
    doubts = {t.log_id: _log(store, t.log_id)["in_doubt"] for t in taken}
    assert sorted(int(str(doubt)) for doubt in doubts.values()) == [0] * 6 + [1] * 4
    assert all(_log(store, t.log_id)["attempting"] is False for t in taken)
    counts = store.doubt_counts(delivery_id)
    assert (counts.logs, counts.events, counts.review) == (4, 4, 0)


def test_heartbeat_renews_only_the_workers_own_unexpired_leases(
        sending: tuple[Postroom, int]) -> None:
    store, delivery_id = sending[0].store, sending[1]
    store.register_worker("a", kind="worker", host="h", pid=1, now=T0)
    mine = store.claim_due(delivery_id, T0, 10, LEASE, worker="a")
    store.claim_due(delivery_id, T0, 10, LEASE, worker="b")
    handed = [t.log_id for t in mine[:6]]
    assert store.mark_attempting([*handed, mine[9].log_id + 100], worker="a", now=T0) == handed
    later = T0 + timedelta(seconds=30)
    # Only what a handed to its connections is renewed: a claim nobody works on runs out.
    assert store.heartbeat("a", later, LEASE, delivery_id=delivery_id) == 6
    # At T0 + 60 s b's leases and a's 4 idle ones ran out, a's 6 were renewed until T0 + 90 s.
    retaken = store.claim_due(delivery_id, T0 + LEASE, 50, LEASE, worker="c")
    assert len(retaken) == 44
    assert store.mark_attempting([t.log_id for t in mine[6:]], worker="a",
                                 now=T0 + LEASE) == [], "no longer a's to send"
    rows = store.list_workers(later)
    assert [(w.id, w.leases) for w in rows] == [("a", 6)]
    assert rows[0].alive(later, LEASE)
    assert not rows[0].alive(later + 2 * LEASE, LEASE)


def test_marking_with_a_lease_returns_only_the_logs_still_held(
        sending: tuple[Postroom, int]) -> None:
    """The send path's mark (worker, now and lease given): logs another sender took over since
    are neither marked nor returned; those still held are, with their lease renewed."""
    store, delivery_id = sending[0].store, sending[1]
    ids = [t.log_id for t in store.claim_due(delivery_id, T0, 5, LEASE, worker="a")]
    half = T0 + LEASE / 2
    assert store.mark_attempting(ids[:2], worker="a", now=half, lease=LEASE) == ids[:2]
    # At T0 + 60 s the three unmarked leases ran out, the two marked ones run to T0 + 90 s.
    taken = store.claim_due(delivery_id, T0 + LEASE, 50, LEASE, worker="b")
    assert {t.log_id for t in taken} >= set(ids[2:]) and not {t.log_id for t in taken} & set(
        ids[:2])
    later = T0 + LEASE + timedelta(seconds=1)
    assert sorted(store.mark_attempting(ids, worker="a", now=later, lease=LEASE)) == ids[:2]
    assert [_log(store, log_id)["attempting"] for log_id in ids] == [True, True] + [False] * 3
    assert [_log(store, log_id)["claimed_by"] for log_id in ids] == ["a", "a"] + ["b"] * 3
    assert store.mark_attempting(ids[2:], worker="b", now=later, lease=LEASE) == ids[2:]


def test_marking_attempting_renews_the_lease_so_no_takeover_sends_it_twice(
        sending: tuple[Postroom, int]) -> None:
    """A batch marked near the end of its lease (a slow render, a long wait for a connection)
    is on the wire from then on: its lease runs from the mark, not from the claim, or another
    sender takes it over before the first sender's next heartbeat and sends it again."""
    store, delivery_id = sending[0].store, sending[1]
    mine = store.claim_due(delivery_id, T0, 5, LEASE, worker="a")
    late = T0 + LEASE - timedelta(seconds=1)
    ids = [t.log_id for t in mine]
    assert store.mark_attempting(ids, worker="a", now=late, lease=LEASE) == ids
    # Past the claim's own lease, before the renewed one runs out: nobody may take them.
    taken = store.claim_due(delivery_id, T0 + LEASE + timedelta(seconds=5), 50, LEASE,
                            worker="b")
    assert not {t.log_id for t in taken} & set(ids)
    assert all(_log(store, i)["claimed_by"] == "a" for i in ids)
    # The renewed lease runs out like any other: a silent sender's batch is taken over.
    again = store.claim_due(delivery_id, late + LEASE, 50, LEASE, worker="c")
    assert {t.log_id for t in again} == set(ids)


def test_release_gives_logs_back_without_doubt(sending: tuple[Postroom, int]) -> None:
    store, delivery_id = sending[0].store, sending[1]
    batch = store.claim_due(delivery_id, T0, 5, LEASE, worker="a")
    store.mark_attempting([t.log_id for t in batch])
    store.release([t.log_id for t in batch])
    again = store.claim_due(delivery_id, T0, 5, LEASE, worker="b")
    assert {t.log_id for t in again} == {t.log_id for t in batch}
    assert store.doubt_counts(delivery_id).logs == 0


def test_record_clears_the_claim_and_owes_one_archive_copy_per_log(
        sending: tuple[Postroom, int]) -> None:
    store, delivery_id = sending[0].store, sending[1]
    batch = store.claim_due(delivery_id, T0, 2, LEASE, worker="a")
    store.mark_attempting([t.log_id for t in batch])
    store.record([_sent(batch[0].log_id)], T0)
    store.record([_sent(batch[0].log_id)], T0)  # a late duplicate record changes nothing
    row = _log(store, batch[0].log_id)
    assert (row["status"], row["claimed_until"], row["claimed_by"], row["attempting"]) == \
        (LogStatus.SENT, None, None, False)
    assert store.archive_counts(delivery_id)[delivery_id] == {ArchiveState.PENDING: 1}
    assert store.archive_pending(delivery_id) == store.archive_pending() == 1
    assert store.archive_pending(delivery_id + 1) == 0


def test_a_recorded_doubt_is_counted(sending: tuple[Postroom, int]) -> None:
    store, delivery_id = sending[0].store, sending[1]
    [target] = store.claim_due(delivery_id, T0, 1, LEASE, worker="a")
    store.record([LogUpdate(log_id=target.log_id, status=LogStatus.PENDING, attempts=1,
                            next_attempt_at=T0, detail="dropped", in_doubt=True)], T0)
    assert store.doubt_counts(delivery_id).events == 1


def test_archive_takeover_counts_the_copy_in_doubt(sending: tuple[Postroom, int]) -> None:
    store, delivery_id = sending[0].store, sending[1]
    batch = store.claim_due(delivery_id, T0, 3, LEASE, worker="a")
    store.record([_sent(t.log_id) for t in batch], T0)
    copies = store.claim_archive(T0, 10, LEASE, worker="a")
    assert len(copies) == 3
    # One put back unattempted (a halt), two held by a sender that died.
    store.record_archive([ArchiveResult(copies[0].id, ArchiveState.PENDING, "not attempted",
                                        next_attempt_at=T0, attempted=False)], T0)
    assert store.claim_archive(T0 + timedelta(seconds=1), 10, LEASE, worker="b") == \
        [copies[0]]
    retaken = store.claim_archive(T0 + LEASE, 10, LEASE, worker="c")
    assert {c.id for c in retaken} == {copies[1].id, copies[2].id}
    assert store.doubt_counts(delivery_id).archive == 2


def test_at_most_once_sets_doubtful_logs_aside_for_review(
        sending: tuple[Postroom, int]) -> None:
    postroom, delivery_id = sending
    store = postroom.store
    batch = store.claim_due(delivery_id, T0, 5, LEASE, worker="dead")
    store.mark_attempting([t.log_id for t in batch[:2]])
    assert store.review_doubtful(delivery_id, T0 + LEASE) == 2
    assert store.review_waiting(delivery_id) == 2
    assert store.doubt_counts(delivery_id).review == 2
    # The three never attempted are claimable again; the two in review are not.
    assert len(store.claim_due(delivery_id, T0 + LEASE, 50, LEASE, worker="b")) == 48
    assert store.resolve_review(delivery_id, resend=False, now=T0) == 2
    assert store.review_waiting(delivery_id) == 0
    assert {_log(store, t.log_id)["status"] for t in batch[:2]} == {LogStatus.FAILED}


def test_next_sending_delivery_sees_only_claimable_work(sending: tuple[Postroom, int]) -> None:
    store, delivery_id = sending[0].store, sending[1]
    assert store.next_sending_delivery(T0) == delivery_id
    store.claim_due(delivery_id, T0, 50, LEASE, worker="a")
    assert store.next_sending_delivery(T0) is None
    assert store.next_due(delivery_id, T0) == T0 + LEASE  # when the lease could be taken over
    assert store.next_sending_delivery(T0 + LEASE) == delivery_id


def test_next_sending_delivery_sees_one_left_sending_with_nothing_to_send(
        sending: tuple[Postroom, int]) -> None:
    """Its sender died between recording the last log and finishing it: a worker must still
    come to it (and finish it); one with a log waiting for review waits for the operator."""
    store, delivery_id = sending[0].store, sending[1]
    batch = store.claim_due(delivery_id, T0, 50, LEASE, worker="a")
    store.mark_attempting([t.log_id for t in batch], worker="a", now=T0)
    store.record([_sent(t.log_id) for t in batch[1:]], T0)
    assert store.next_sending_delivery(T0) is None  # one log still on a's wire
    store.abandon([batch[0].log_id], T0, review=True)
    assert store.next_sending_delivery(T0) is None  # an operator decides first
    store.resolve_review(delivery_id, resend=False, now=T0)
    assert store.get_delivery(delivery_id).state is DeliveryState.SENDING
    assert store.next_sending_delivery(T0) == delivery_id


def test_workers_registry(sending: tuple[Postroom, int]) -> None:
    store = sending[0].store
    store.register_worker("x", kind="worker", host="h1", pid=10, now=T0)
    store.register_worker("y", kind="send", host="h2", pid=11, now=T0 + timedelta(seconds=1))
    store.deregister_worker("x", T0 + timedelta(seconds=5), sent=7)
    live = store.list_workers(T0 + timedelta(seconds=6))
    assert [w.id for w in live] == ["y"]
    both = store.list_workers(T0 + timedelta(seconds=6), include_stopped_since=T0)
    assert {(w.id, w.sent, w.stopped_at is not None) for w in both} == \
        {("x", 7, True), ("y", 0, False)}
    assert store.forget_workers(T0 + timedelta(seconds=6)) == 2


# -- every status move through the table (storage/moves.py) -----------------------------------


def _bounce_outcome(log_id: int, email: str) -> SimpleNamespace:
    """What the processor hands `apply_bounce` for one attributed hard failure."""
    return SimpleNamespace(
        qualification=SimpleNamespace(failure_type=FailureType.HARD,
                                      reason=FailureReason.USER_UNKNOWN, rule_id="r1"),
        recipient=SimpleNamespace(recipient=email, status="5.1.1", action="failed",
                                  diagnostic="550 5.1.1 no such user"),
        log=SimpleNamespace(id=log_id, email=email), attributed=True, attributed_by="verp",
        applies=True, fails_log=True)


def test_a_bounce_fails_a_sent_log_only_as_the_log_table_allows(
        sending: tuple[Postroom, int], monkeypatch: pytest.MonkeyPatch) -> None:
    postroom, delivery_id = sending
    store = postroom.store
    [target] = store.claim_due(delivery_id, T0, 1, LEASE, worker="a")
    store.record([_sent(target.log_id)], T0)
    outcome = _bounce_outcome(target.log_id, target.recipient.email)
    first = store.store_bounce(b"Subject: bounce 1\r\n\r\nx\r\n", source="t", envelope_to="",
                               now=T0)[0]
    monkeypatch.setitem(LOG_MOVES, LogStatus.SENT, frozenset())  # as if sent were final
    with pytest.raises(StateError, match="from sent to failed"):
        store.apply_bounce(first, "dsn", [outcome], [], T0, state=BounceState.PROCESSED)
    assert _log(store, target.log_id)["status"] == LogStatus.SENT
    assert _bounce_state(store, first) == BounceState.NEW  # the transaction rolled back
    monkeypatch.undo()
    assert store.apply_bounce(first, "dsn", [outcome], [], T0,
                              state=BounceState.PROCESSED) == 1
    assert _log(store, target.log_id)["status"] == LogStatus.FAILED
    assert _bounce_state(store, first) == BounceState.PROCESSED


def test_review_moves_follow_the_log_table(sending: tuple[Postroom, int],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    postroom, delivery_id = sending
    store = postroom.store
    batch = store.claim_due(delivery_id, T0, 3, LEASE, worker="a")
    ids = [t.log_id for t in batch]
    monkeypatch.setitem(LOG_MOVES, LogStatus.PENDING, frozenset({LogStatus.PENDING}))
    with pytest.raises(StateError, match="from pending to review"):
        store.abandon(ids[:1], T0, review=True)
    store.mark_attempting(ids[1:])
    with pytest.raises(StateError, match="from pending to review"):
        store.review_doubtful(delivery_id, T0 + LEASE)
    assert {_log(store, i)["status"] for i in ids} == {LogStatus.PENDING}
    monkeypatch.undo()
    store.abandon(ids[:1], T0, review=True)
    assert _log(store, ids[0])["status"] == LogStatus.REVIEW
    monkeypatch.setitem(LOG_MOVES, LogStatus.REVIEW, frozenset({LogStatus.FAILED}))
    with pytest.raises(StateError, match="from review to pending"):
        store.resolve_review(delivery_id, resend=True, now=T0)
    assert _log(store, ids[0])["status"] == LogStatus.REVIEW
    assert store.resolve_review(delivery_id, resend=False, now=T0) == 1


def test_bounce_states_move_only_along_their_table(sending: tuple[Postroom, int]) -> None:
    store = sending[0].store
    bounce_id = store.store_bounce(b"Subject: b\r\n\r\nx\r\n", source="t", envelope_to="",
                                   now=T0)[0]
    assert store.fail_bounce(bounce_id, "boom", T0)
    assert not store.fail_bounce(bounce_id, "again", T0)  # only a `new` one
    assert store.apply_bounce(bounce_id, "dsn", [], [], T0, state="processed") is None
    assert store.requeue_failed_bounces() == 1
    assert _bounce_state(store, bounce_id) == BounceState.NEW
    with pytest.raises(StateError, match="from processing to new"):
        store.apply_bounce(bounce_id, "dsn", [], [], T0, state=BounceState.NEW)
    assert _bounce_state(store, bounce_id) == BounceState.NEW
