"""Sending (async IO): one delivery in this process (`send`), or every delivery in state
`sending` as a worker (`work`). Neither installs signal handlers nor runs an event loop: the
CLI wraps them in `asyncio.run` and `halting_on_signals`, a web handler awaits them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from postroom.app.archive_process import ArchiveProcess
from postroom.app.context import AppContext
from postroom.app.deliveries import DeliveryService
from postroom.app.send_process import SendHelpers, merge
from postroom.delivery.analysis import AnalysisReport
from postroom.delivery.archive import ArchiveLoop
from postroom.delivery.engine import Engine, RunSummary
from postroom.delivery.liveness import SEND
from postroom.delivery.shaping import Shaper
from postroom.delivery.worker import Heartbeat, Worker, WorkerSummary, new_worker_id
from postroom.domain.states import DeliveryState
from postroom.errors import StateError

__all__ = ["SendingService"]


class SendingService:
    def __init__(self, ctx: AppContext, deliveries: DeliveryService):
        self._ctx = ctx
        self._deliveries = deliveries

    async def send(self, delivery_id: int, *, progress: Callable[[int], None] | None = None,
                   on_analyzed: Callable[[AnalysisReport], None] | None = None,
                   halt: asyncio.Event | None = None,
                   abort: asyncio.Event | None = None) -> RunSummary:
        """Send a delivery: analyze first if needed (`deliveries.start`), then send what is
        due; `halt` stops it gracefully (in-flight messages finish), `abort` at once.

        Runs in this process (no worker needed); it registers as a sender like a worker does.
        With `sending.processes` above 1, helper processes send their share of the delivery
        beside it (app/send_process.py). The analysis is synchronous database work: an async
        caller that must not block its loop calls `deliveries.start` in a thread first.
        """
        self._deliveries.start(delivery_id, on_analyzed=on_analyzed)
        ctx = self._ctx
        store = ctx.senders_store()
        archiver = self._archiver(store, own_process=ctx.settings.archive.own_process)
        engine = self._engine(store, archiver)
        helpers = ctx.settings.sending.processes - 1
        async with Heartbeat(store, engine.worker_id, kind="send", lease=ctx.lease,
                             clock=ctx.now) as heartbeat:
            engine.liveness = heartbeat.liveness
            heartbeat.delivery_id = delivery_id
            if helpers < 1:
                summary = await engine.run(delivery_id, progress=progress, halt=halt,
                                           abort=abort)
                heartbeat.sent = summary.sent
            else:
                summary = await self._send_with_helpers(
                    engine, archiver, store, delivery_id, helpers, progress=progress,
                    halt=halt, abort=abort, heartbeat=heartbeat)
        return summary

    async def _send_with_helpers(self, engine: Engine, archiver: ArchiveLoop | None,
                                 store: Any, delivery_id: int, helpers: int, *,
                                 progress: Callable[[int], None] | None,
                                 halt: asyncio.Event | None, abort: asyncio.Event | None,
                                 heartbeat: Heartbeat) -> RunSummary:
        """This process's engine and `helpers` helper processes share the delivery; the
        archive loop (here, or in its own process) ends after all of them."""
        finish = asyncio.Event()
        archiving: asyncio.Task[None] | None = None
        if archiver is not None:
            archiver.liveness = heartbeat.liveness
            archiving = asyncio.create_task(archiver.run(
                delivery_id=delivery_id, finish=finish,
                drain_seconds=self._ctx.settings.archive.drain_seconds, halt=halt,
                worker=engine.worker_id))
        team = SendHelpers(self._ctx.settings, helpers)
        sharing = asyncio.create_task(team.run(delivery_id, progress=progress, halt=halt,
                                               abort=abort))
        try:
            summary = await engine.run(delivery_id, progress=progress, halt=halt, abort=abort,
                                       archive=False)
            heartbeat.sent = summary.sent  # its own: each helper's row has the helper's
            heartbeat.liveness.done(SEND)  # this engine holds no log now: not a stalled loop
            shares = await sharing
        finally:
            if not sharing.done():  # this engine failed: the helpers stop too
                sharing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sharing
            finish.set()
            if archiving is not None:
                if abort is not None and abort.is_set():
                    archiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await archiving
        if archiver is not None:
            summary.archived = archiver.archived
            summary.archive_pending = archiver.pending(delivery_id)
            summary.archive_fault = archiver.fault
        merge(summary, shares)
        summary.helper_errors = list(team.errors)
        current = store.get_delivery(delivery_id)  # the last engine to end may finish it
        summary.state = current.state
        summary.paused_reason = current.last_error if current.state is DeliveryState.PAUSED \
            else ""
        return summary

    async def send_share(self, delivery_id: int, *, progress: Callable[[int], None] | None,
                         halt: asyncio.Event, abort: asyncio.Event) -> RunSummary:
        """A helper process's share of `send` (app/send_process.py): the same engine under
        its own sender identity, draining the archive outbox in its own loop as a worker does
        (the parent's loop takes the copies left when it ends)."""
        ctx = self._ctx
        store = ctx.senders_store()
        engine = self._engine(store, self._archiver(store, own_process=False))
        async with Heartbeat(store, engine.worker_id, kind="send", lease=ctx.lease,
                             clock=ctx.now) as heartbeat:
            engine.liveness = heartbeat.liveness
            heartbeat.delivery_id = delivery_id
            try:
                summary = await engine.run(delivery_id, progress=progress, halt=halt,
                                           abort=abort)
            except StateError:  # started after the others had sent it all (or paused it)
                current = store.get_delivery(delivery_id)
                if current.state is DeliveryState.SENDING:
                    raise
                summary = RunSummary(delivery_id, current.state)
            heartbeat.sent = summary.sent
        return summary

    async def work(self, halt: asyncio.Event, *, until_idle: bool = False,
                   on_run: Callable[[RunSummary], None] | None = None) -> WorkerSummary:
        """`postroom worker`: send every delivery in state `sending`, until `halt`."""
        ctx = self._ctx
        store = ctx.senders_store()
        worker = Worker(store, self._engine(store, ctx.archiver(store)), ctx.archiver(store),
                        lease=ctx.lease,
                        poll_seconds=ctx.settings.sending.worker_poll_seconds, clock=ctx.now)
        return await worker.run(halt, until_idle=until_idle, on_run=on_run)

    def _archiver(self, store: Any, *, own_process: bool) -> ArchiveLoop | None:
        local = self._ctx.archiver(store)
        if own_process and local is not None:
            return ArchiveProcess(self._ctx.settings, local)
        return local

    def _engine(self, store: Any, archiver: ArchiveLoop | None) -> Engine:
        ctx = self._ctx
        return Engine(store, ctx.connect, planner=ctx.planner, sending=ctx.settings.sending,
                      archiver=archiver,
                      archive_drain_seconds=ctx.settings.archive.drain_seconds,
                      clock=ctx.now, router=ctx.router,
                      shaper=Shaper(ctx.settings.shaping, clock=ctx.now),
                      worker_id=new_worker_id())
