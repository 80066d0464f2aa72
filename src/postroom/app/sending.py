"""Sending (async IO): one delivery in this process (`send`), or every delivery in state
`sending` as a worker (`work`). Neither installs signal handlers nor runs an event loop: the
CLI wraps them in `asyncio.run` and `halting_on_signals`, a web handler awaits them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from postroom.app.archive_process import ArchiveProcess
from postroom.app.context import AppContext
from postroom.app.deliveries import DeliveryService
from postroom.delivery.analysis import AnalysisReport
from postroom.delivery.archive import Archiver
from postroom.delivery.engine import Engine, RunSummary
from postroom.delivery.shaping import Shaper
from postroom.delivery.worker import Heartbeat, Worker, WorkerSummary, new_worker_id

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
        The analysis is synchronous database work: an async caller that must not block its
        loop calls `deliveries.start` in a thread first.
        """
        self._deliveries.start(delivery_id, on_analyzed=on_analyzed)
        ctx = self._ctx
        store = ctx.senders_store()
        engine = self._engine(store, own_process=ctx.settings.archive.own_process)
        async with Heartbeat(store, engine.worker_id, kind="send", lease=ctx.lease,
                             clock=ctx.now) as heartbeat:
            engine.liveness = heartbeat.liveness
            heartbeat.delivery_id = delivery_id
            summary = await engine.run(delivery_id, progress=progress, halt=halt,
                                       abort=abort)
            heartbeat.sent = summary.sent
        return summary

    async def work(self, halt: asyncio.Event, *, until_idle: bool = False,
                   on_run: Callable[[RunSummary], None] | None = None) -> WorkerSummary:
        """`postroom worker`: send every delivery in state `sending`, until `halt`."""
        ctx = self._ctx
        store = ctx.senders_store()
        worker = Worker(store, self._engine(store), ctx.archiver(store), lease=ctx.lease,
                        poll_seconds=ctx.settings.sending.worker_poll_seconds, clock=ctx.now)
        return await worker.run(halt, until_idle=until_idle, on_run=on_run)

    def _engine(self, store: Any, *, own_process: bool = False) -> Engine:
        ctx = self._ctx
        local = ctx.archiver(store)
        archiver: Archiver | ArchiveProcess | None = (
            ArchiveProcess(ctx.settings, local) if own_process and local is not None else local)
        return Engine(store, ctx.connect, planner=ctx.planner, sending=ctx.settings.sending,
                      archiver=archiver,
                      archive_drain_seconds=ctx.settings.archive.drain_seconds,
                      clock=ctx.now, router=ctx.router,
                      shaper=Shaper(ctx.settings.shaping, clock=ctx.now),
                      worker_id=new_worker_id())
