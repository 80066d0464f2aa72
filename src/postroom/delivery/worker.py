"""A sending process: its identity and heartbeat, and the `postroom worker` loop.

Every process that sends (a `postroom worker`, or a one-off `postroom send`) registers in the
workers table and beats every quarter lease: the beat says it is alive and renews the leases it
holds, for each loop (send, archive) that made progress within two leases (`Liveness`). A loop that
fails ends the process: its claims are given back at once, the registry keeps the reason, and
the error goes up (the CLI prints it and exits non-zero). Many workers, on one host or several,
share deliveries through the database alone (claims with `FOR UPDATE SKIP LOCKED` on
PostgreSQL); there is no other coordination.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, TypeVar

from postroom import held_signal
from postroom.delivery.archive import Archiver
from postroom.delivery.engine import Engine, RunSummary
from postroom.delivery.liveness import ARCHIVE, SEND, Liveness
from postroom.domain.states import DeliveryState
from postroom.errors import ConfigError, StateError

__all__ = ["Heartbeat", "Worker", "WorkerSummary", "halting_on_signals", "new_worker_id"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def halting_on_signals(halt: asyncio.Event, work: Coroutine[Any, Any, T], *,
                             abort: asyncio.Event | None = None,
                             notify: Callable[[bool], None] | None = None) -> T:
    """Run `work` with SIGTERM and SIGINT setting `halt` (a graceful stop) instead of killing;
    a second signal sets `abort` (stop at once), if given. `notify(first)` is called at each
    signal, at once, so that the user hears what happens.

    A SIGTERM held while the process started (held_signal) counts as a first signal, at once.
    Outside the main thread signals cannot be caught; `work` then runs as is.
    """
    loop = asyncio.get_running_loop()
    caught: list[signal.Signals] = []

    def on_signal() -> None:
        first = not halt.is_set()
        if first:
            halt.set()
        elif abort is not None:
            abort.set()
        if notify is not None:
            notify(first)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal)
            caught.append(sig)
        except (ValueError, RuntimeError, NotImplementedError):
            break
    if caught and held_signal.received():
        on_signal()
    try:
        return await work
    finally:
        for sig in caught:
            loop.remove_signal_handler(sig)


class WorkerRegistry(Protocol):
    def register_worker(self, worker_id: str, *, kind: str, host: str, pid: int,
                        now: datetime) -> None: ...
    def heartbeat(self, worker_id: str, now: datetime, lease: timedelta, *,
                  delivery_id: int | None = None, sent: int | None = None,
                  alive: bool = True, logs: bool = True, copies: bool = True) -> int: ...
    def deregister_worker(self, worker_id: str, now: datetime, *,
                          sent: int | None = None, error: str | None = None) -> None: ...
    def release_claims(self, worker_id: str, now: datetime) -> int: ...


class WorkerStore(WorkerRegistry, Protocol):
    def next_sending_delivery(self, now: datetime) -> int | None: ...
    def move_delivery(self, delivery_id: int, target: DeliveryState, now: datetime, *,
                      error: str | None = None) -> object: ...


def new_worker_id() -> str:
    """host:pid:random — readable in `postroom workers`, unique across restarts."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Registers a sender for the duration of an `async with`, and beats meanwhile.

    Leaving with an error (a loop died): the sender's claims are given back at once and the
    registry keeps the reason, so `workers` and `health` show it failed.
    """

    def __init__(self, store: WorkerRegistry, worker_id: str, *, kind: str,
                 lease: timedelta, clock: Callable[[], datetime],
                 liveness: Liveness | None = None):
        self._store = store
        self.worker_id = worker_id
        self._kind = kind
        self._lease = lease
        self._clock = clock
        self.liveness = liveness or Liveness()
        self.delivery_id: int | None = None
        self.sent = 0
        self._task: asyncio.Task[None] | None = None
        self._stalled: set[str] = set()

    async def __aenter__(self) -> Heartbeat:
        self._store.register_worker(self.worker_id, kind=self._kind, host=socket.gethostname(),
                                    pid=os.getpid(), now=self._clock())
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        failed = exc is not None and not isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
        if not failed:
            self._store.deregister_worker(self.worker_id, self._clock(), sent=self.sent)
            return
        error = _one_line(exc)
        log.error("sender %s stops: %s; giving its claims back", self.worker_id, error)
        try:
            self._store.release_claims(self.worker_id, self._clock())
            self._store.deregister_worker(self.worker_id, self._clock(), sent=self.sent,
                                          error=error)
        except Exception as cleanup:  # the database is gone too: the leases run out instead
            log.error("could not give the claims of %s back (%s): they are free when their "
                      "lease runs out", self.worker_id, _one_line(cleanup))

    def beat(self) -> None:
        """Say alive and renew leases, for the loops that made progress within two leases
        (one would let a loop that is only slow, an event loop held up under load, lose its
        claims to another worker: duplicates)."""
        window = 2 * self._lease.total_seconds()
        stalled = self.liveness.stalled(window)
        for loop in stalled.keys() - self._stalled:
            log.error("the %s loop of %s made no progress for %.0f s: its leases are no longer "
                      "renewed, so other senders take its work", loop, self.worker_id,
                      stalled[loop])
        self._stalled = set(stalled)
        self._store.heartbeat(self.worker_id, self._clock(), self._lease,
                              delivery_id=self.delivery_id, sent=self.sent,
                              alive=not stalled, logs=SEND not in stalled,
                              copies=ARCHIVE not in stalled)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 4)
            try:
                self.beat()
            except Exception:  # a database hiccup: the next beat tries again
                log.warning("heartbeat of %s failed", self.worker_id, exc_info=True)


@dataclass
class WorkerSummary:
    worker_id: str
    runs: list[RunSummary] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(run.sent for run in self.runs)


class Worker:
    """`postroom worker`: send whatever deliveries are `sending`, archive copies, until halted."""

    def __init__(self, store: WorkerStore, engine: Engine, archiver: Archiver | None, *,
                 lease: timedelta, poll_seconds: float, clock: Callable[[], datetime]):
        self._store = store
        self._engine = engine
        self._archiver = archiver
        self._lease = lease
        self._poll = poll_seconds
        self._clock = clock

    async def run(self, halt: asyncio.Event, *, until_idle: bool = False,
                  on_run: Callable[[RunSummary], None] | None = None) -> WorkerSummary:
        """Work until `halt` is set (SIGTERM), or, with `until_idle`, until nothing is due."""
        summary = WorkerSummary(self._engine.worker_id)
        liveness = Liveness()
        self._engine.liveness = liveness
        if self._archiver is not None:
            self._archiver.liveness = liveness
        async with Heartbeat(self._store, self._engine.worker_id, kind="worker",
                             lease=self._lease, clock=self._clock,
                             liveness=liveness) as heartbeat:
            stop_archive = asyncio.Event()
            archiving = (asyncio.create_task(self._archiver.run(
                delivery_id=None, finish=stop_archive, drain_seconds=self._poll * 2,
                halt=halt, worker=self._engine.worker_id))
                if self._archiver is not None else None)
            if archiving is not None:  # its death ends the worker, not just the archiving
                archiving.add_done_callback(lambda task: _halt_on_error(task, halt))
            try:
                while not halt.is_set():
                    liveness.tick(SEND)
                    delivery_id = self._store.next_sending_delivery(self._clock())
                    if delivery_id is None:
                        if until_idle:
                            break
                        await _sleep_or(halt, self._poll)
                        continue
                    heartbeat.delivery_id = delivery_id
                    heartbeat.beat()
                    run = await self._run_one(delivery_id, halt)
                    heartbeat.delivery_id = None
                    if run is not None:
                        summary.runs.append(run)
                        heartbeat.sent = summary.sent
                        if on_run is not None:
                            on_run(run)
            finally:
                liveness.done(SEND)
                stop_archive.set()  # drain what is due, briefly; a halt stops it at once
                if archiving is not None:
                    await archiving
        return summary

    async def _run_one(self, delivery_id: int, halt: asyncio.Event) -> RunSummary | None:
        try:
            return await self._engine.run(delivery_id, halt=halt, archive=False)
        except StateError:
            return None  # paused, stopped or finished meanwhile by someone else
        except ConfigError as exc:
            # Nothing this worker can fix (Email BCC asked, archive off): set the delivery
            # aside with the reason rather than trying it again every poll.
            with contextlib.suppress(StateError):
                self._store.move_delivery(delivery_id, DeliveryState.PAUSED, self._clock(),
                                          error=str(exc))
            return None


def _halt_on_error(task: asyncio.Task[None], halt: asyncio.Event) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the archive loop failed: %s; stopping the worker",
                  _one_line(task.exception()))
        halt.set()


def _one_line(exc: BaseException | None) -> str:
    """An error as one short line for the log and the registry (no SQL, no parameters)."""
    if exc is None:
        return ""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


async def _sleep_or(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
