"""Database retries, loop liveness and sender states: pure rules, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from postroom.delivery.liveness import Liveness
from postroom.errors import DatabaseUnavailable
from postroom.storage.retrying import RetryingStore, retry_database
from postroom.storage.workers import WorkerRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # WorkerRow.state is a function of `now`: no real clock


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def _down(times: int, error: Exception) -> object:
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return "ok"

    return call


def _refused() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def test_a_database_that_comes_back_is_waited_for_with_backoff() -> None:
    clock = Clock()
    call = _down(6, _refused())
    assert retry_database(call, what="claim_due", wait_seconds=300,  # type: ignore[arg-type]
                          sleep=clock.sleep, monotonic=clock.monotonic) == "ok"
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]


def test_a_database_down_longer_than_the_wait_raises_a_clear_error() -> None:
    clock = Clock()
    with pytest.raises(DatabaseUnavailable, match=r"failed for 1\d\.\d s in record .*"
                       r"database_wait_seconds = 10"):
        retry_database(_down(1000, _refused()), what="record",  # type: ignore[arg-type]
                       wait_seconds=10, sleep=clock.sleep, monotonic=clock.monotonic)
    assert clock.now <= 10.0 + 1e-9, "never waits past the limit"


def test_a_stop_request_ends_the_wait_after_the_failure_it_follows() -> None:
    clock = Clock()
    asked = iter([False, False, True])
    with pytest.raises(DatabaseUnavailable, match=r"stopped while waiting 0\.3 s for the "
                       r"database in opening") as raised:
        retry_database(_down(1000, _refused()), what="opening",  # type: ignore[arg-type]
                       wait_seconds=300, sleep=clock.sleep, monotonic=clock.monotonic,
                       stop=lambda: next(asked))
    assert raised.value.stopped and clock.sleeps == [0.1, 0.2]


def test_a_wait_given_up_is_not_a_stop() -> None:
    clock = Clock()
    with pytest.raises(DatabaseUnavailable) as raised:
        retry_database(_down(1000, _refused()), what="record",  # type: ignore[arg-type]
                       wait_seconds=1, sleep=clock.sleep, monotonic=clock.monotonic,
                       stop=lambda: False)
    assert not raised.value.stopped


def test_an_error_that_waiting_cannot_mend_is_tried_three_times() -> None:
    clock = Clock()
    error = IntegrityError("INSERT", {}, ValueError("duplicate key"))
    with pytest.raises(DatabaseUnavailable, match="3 tries"):
        retry_database(_down(1000, error), what="register_worker",  # type: ignore[arg-type]
                       wait_seconds=300, sleep=clock.sleep, monotonic=clock.monotonic)
    assert len(clock.sleeps) == 2


def test_a_store_that_gave_up_tries_each_later_call_once() -> None:
    class Store:
        calls = 0

        def record(self) -> None:
            Store.calls += 1
            raise _refused()

    clock = Clock()
    store = RetryingStore(Store(), wait_seconds=1, sleep=clock.sleep)
    with pytest.raises(DatabaseUnavailable):
        store.record()
    first = Store.calls
    with pytest.raises(DatabaseUnavailable):
        store.record()  # cleaning up on the way out: no second wait
    assert Store.calls == first + 1 and first > 1


def test_liveness_tells_stalled_loops_from_fresh_ones() -> None:
    clock = Clock()
    live = Liveness(monotonic=clock.monotonic)
    live.tick("send")
    live.tick("archive")
    clock.now = 50.0
    live.tick("send")
    assert live.fresh(30) == {"send"}
    assert live.stalled(30) == {"archive": 50.0}
    live.done("archive")
    assert live.stalled(30) == {} and live.running() == {"send"}


def _row(beat_age: float, *, stopped: bool = False, error: str | None = None) -> WorkerRow:
    return WorkerRow("h:1:x", "worker", "h", 1, T0, T0 - timedelta(seconds=beat_age),
                     T0 if stopped else None, None, 0, 0, error)


@pytest.mark.parametrize(("age", "running", "state"), [
    (10, True, "alive"), (10, None, "alive"), (10, False, "dead"),
    (45, True, "silent"), (45, None, "silent"), (500, True, "silent"), (500, None, "dead"),
])
def test_a_sender_is_alive_silent_or_dead(age: float, running: bool | None, state: str) -> None:
    assert _row(age).state(T0, timedelta(seconds=60), running=running) == state


def test_a_sender_stopped_by_a_failure_says_so() -> None:
    lease = timedelta(seconds=60)
    assert _row(0, stopped=True).state(T0, lease, running=False) == "stopped"
    assert _row(0, stopped=True, error="boom").state(T0, lease, running=False) == "failed"
