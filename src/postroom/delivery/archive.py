"""The archive outbox worker: sends each sent message's exact bytes to the Email BCC address.

Copies are claimed from the durable outbox, sent in their own SMTP transaction (envelope sender:
the dedicated archive address; the BCC address only in RCPT TO), and recorded `archived` with the
relay's reply, `failed` on a permanent refusal, or left pending with a backoff while the archive
relay is down. Recipients' sending never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from postroom.delivery.liveness import ARCHIVE, Liveness
from postroom.domain.models import ArchiveCopy, ArchiveResult, ArchiveState
from postroom.domain.outcomes import ARCHIVE_RELAY_FAULT, Outcome, Verdict
from postroom.transport.routed import Transport, send_all

__all__ = ["ArchiveLoop", "ArchiveTarget", "Archiver", "Transport"]

_GROUP = 25  # copies sent (pipelined) before their results are recorded

log = logging.getLogger(__name__)
_MAX_DOUBLINGS = 40  # 2 ** 40 s is beyond any ceiling


class ArchiveStore(Protocol):
    def claim_archive(self, now: datetime, limit: int, lease: timedelta, *,
                      delivery_id: int | None = None, worker: str = "") -> list[ArchiveCopy]: ...
    def record_archive(self, results: list[ArchiveResult], now: datetime) -> None: ...
    def archive_pending(self, delivery_id: int | None = None) -> int: ...


class ArchiveLoop(Protocol):
    """What a send run needs of its archive loop: `Archiver` here, or the same loop in a
    process of its own (app/archive_process.py)."""

    archived: int
    fault: str
    liveness: Liveness | None

    def pending(self, delivery_id: int | None) -> int: ...
    async def run(self, *, delivery_id: int | None, finish: asyncio.Event,
                  drain_seconds: float, halt: asyncio.Event | None = None,
                  worker: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class ArchiveTarget:
    address: str
    envelope_sender: str


def backoff(attempts: int, ceiling: float) -> timedelta:
    """1 s, 2 s, 4 s, ... up to `ceiling` seconds, however many attempts a copy has had (an
    archive down for days gives copies thousands: 2.0 ** 1024 raised OverflowError, which
    ended the archive loop and the worker with it)."""
    return timedelta(seconds=min(ceiling, 2.0 ** min(max(0, attempts - 1), _MAX_DOUBLINGS)))


class Archiver:
    def __init__(self, store: ArchiveStore, connect: Callable[[], Transport], *,
                 target: ArchiveTarget, connections: int, max_backoff: float,
                 clock: Callable[[], datetime], batch_size: int = 50,
                 lease: timedelta = timedelta(minutes=5)):
        self._store = store
        self._connect = connect
        self._target = target
        self._connections = connections
        self._max_backoff = max_backoff
        self._clock = clock
        self._batch = batch_size
        self._lease = lease
        # groups answered while a commit ran: recorded together in the next one
        self._to_record: list[tuple[list[ArchiveResult], asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        self.archived = 0
        self.fault = ""  # the archive relay's last fault (no session), until a copy goes
        self.liveness: Liveness | None = None  # ticked as the loop makes progress

    def pending(self, delivery_id: int | None) -> int:
        return self._store.archive_pending(delivery_id)

    async def run(self, *, delivery_id: int | None, finish: asyncio.Event,
                  drain_seconds: float, halt: asyncio.Event | None = None,
                  worker: str = "") -> None:
        """Archive copies until `finish` is set and then no copy is pending (or time runs out).

        `halt` set (SIGTERM): the copy on the wire finishes and is recorded; the rest of the
        claimed batch is given back at once.
        """
        workers = [asyncio.create_task(self._work(delivery_id, finish, drain_seconds,
                                                  halt, worker))
                   for _ in range(self._connections)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
        if self.liveness is not None:  # ended on purpose; a failed loop stays watched
            self.liveness.done(ARCHIVE)

    async def _work(self, delivery_id: int | None, finish: asyncio.Event,
                    drain_seconds: float, halt: asyncio.Event | None, worker: str) -> None:
        transport = self._connect()
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._tick()
                if halt is not None and halt.is_set():
                    return
                if finish.is_set() and deadline is None:
                    deadline = loop.time() + drain_seconds
                if deadline is not None and loop.time() >= deadline:
                    return
                copies = self._store.claim_archive(self._clock(), self._batch, self._lease,
                                                   delivery_id=delivery_id, worker=worker)
                if not copies:
                    # Counted only when there was nothing to claim: a count per batch made
                    # draining a large outbox quadratic.
                    if deadline is not None and self.pending(delivery_id) == 0:
                        return
                    await _sleep_or(finish, 0.2)
                    continue
                pause = await self._send_batch(transport, copies, halt)
                # woken by the end of the send, or by a halt once it ended
                await self._rest(pause, finish if deadline is None else halt, halt,
                                 self._remaining(deadline, loop))
        finally:
            await transport.close()

    async def _rest(self, pause: float, wake: asyncio.Event | None,
                    halt: asyncio.Event | None, remaining: float) -> None:
        """Pause after the relay proved unreachable, in slices that tick: a pause is
        progress, not a stall. `wake` or `halt` set ends it."""
        pause = min(pause, remaining)
        while pause > 0 and not (halt is not None and halt.is_set()):
            step = min(pause, 1.0)
            await _sleep_or(wake, step)
            self._tick()
            if wake is not None and wake.is_set():
                return
            pause -= step

    @staticmethod
    def _remaining(deadline: float | None, loop: asyncio.AbstractEventLoop) -> float:
        return float("inf") if deadline is None else max(0.0, deadline - loop.time())

    async def _send_batch(self, transport: Transport, copies: list[ArchiveCopy],
                          halt: asyncio.Event | None = None) -> float:
        """Send claimed copies; returns how long to pause when the relay is unreachable.

        Copies go a few at a time (pipelined where the transport can), and each group's results
        are recorded as soon as the relay has answered them, which keeps the window in which a
        crash leaves a copy archived but unrecorded (in doubt) to one group.
        """
        for start in range(0, len(copies), _GROUP):
            if halt is not None and halt.is_set():
                self._give_back(copies[start:])
                return 0.0
            group = copies[start:start + _GROUP]
            outcomes = await send_all(transport, [
                (self._target.envelope_sender, self._target.address, copy.data,
                 not copy.data.split(b"\r\n\r\n", 1)[0].isascii())  # SMTPUTF8 headers
                for copy in group])
            results, pause = self._results(group, outcomes)
            await self._record(results)
            self._tick()
            if pause:
                self._give_back(copies[start + len(group):],
                                f"not attempted: {self.fault}" if self.fault else "")
                return pause
        return 0.0

    def _results(self, group: list[ArchiveCopy],
                 outcomes: list[Outcome]) -> tuple[list[ArchiveResult], float]:
        now = self._clock()
        results: list[ArchiveResult] = []
        pause = 0.0
        for copy, outcome in zip(group, outcomes, strict=True):
            if outcome.fault is not None and not pause:
                self._fault(f"{ARCHIVE_RELAY_FAULT}{outcome.fault.label}: {outcome.text}")
            if pause:  # after the relay became unreachable: not really attempted
                results.append(ArchiveResult(copy.id, ArchiveState.PENDING,
                                             f"not attempted: {self.fault}" if self.fault
                                             else "", next_attempt_at=now, attempted=False))
            elif outcome.verdict is Verdict.SENT:
                self.archived += 1
                self._fault("")
                results.append(ArchiveResult(copy.id, ArchiveState.ARCHIVED, outcome.text))
            elif outcome.verdict is Verdict.FAILED:
                results.append(ArchiveResult(copy.id, ArchiveState.FAILED, outcome.text))
            else:
                wait = backoff(copy.attempts + 1, self._max_backoff)
                reply = self.fault if outcome.fault is not None else outcome.text
                results.append(ArchiveResult(copy.id, ArchiveState.PENDING, reply,
                                             next_attempt_at=now + wait,
                                             in_doubt=outcome.in_doubt))
                if outcome.reply is None:  # the relay is unreachable: pause
                    pause = wait.total_seconds()
        return results, pause

    async def _record(self, results: list[ArchiveResult]) -> None:
        """Record a group's results, together with those the other connections brought in
        while the last commit ran (a group commit, without waiting for one: the store's cost
        per transaction was half the archive loop's time, `bench/cpu_split.py`). Returns once
        they are committed, so the copies in doubt after a crash are still at most a group per
        connection."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_record.append((results, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_waiting())
        await done

    async def _record_waiting(self) -> None:
        await asyncio.sleep(0)  # the groups whose replies arrive in this turn of the loop
        batch, self._to_record = self._to_record, []
        try:
            self._store.record_archive([r for results, _ in batch for r in results],
                                       self._clock())
        except BaseException as exc:  # each waiting connection fails with it
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)

    def _fault(self, fault: str) -> None:
        """Keep the archive relay's (or sink's) last fault, and say in the log when it
        starts, changes and ends: a worker that retries in silence looks idle."""
        if fault != self.fault:
            if fault:
                log.warning("archive copies cannot be delivered: %s; retrying", fault)
            else:
                log.info("archive copies are delivered again")
        self.fault = fault

    def _tick(self) -> None:
        if self.liveness is not None:
            self.liveness.tick(ARCHIVE)

    def _give_back(self, copies: list[ArchiveCopy], why: str = "") -> None:
        """Give claimed copies back unsent; `why` replaces their last reply, if given."""
        if copies:
            self._store.record_archive([ArchiveResult(
                c.id, ArchiveState.PENDING, why, next_attempt_at=self._clock(),
                attempted=False) for c in copies], self._clock())


async def _sleep_or(event: asyncio.Event | None, seconds: float) -> None:
    if event is None or event.is_set():
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
