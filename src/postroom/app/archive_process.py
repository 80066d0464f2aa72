"""The archive outbox drained in a second process while `postroom send` sends (ADR 0030).

With Email BCC on, a send does twice the SMTP work (each sent message and its copy) in one
Python process, on one core. `archive.own_process = true` moves the copies' loop (the same
`Archiver`, the same durable outbox, leases and ledger) into a child process started for the
run, so the second core sends the copies while the first sends the recipients' messages.

The child registers as a sender of its own (kind `archive`, its own heartbeat and leases), so a
child that dies loses nothing: its claimed copies come back when their lease runs out, and the
run reports them pending. The parent tells it when the send is over (it then drains for
`archive.drain_seconds`, as the in-process loop does) or halted (it gives back what it has not
sent), and reads back how many it archived and the relay's last fault. The child ignores
Ctrl-C (the parent decides) and stops by itself if the parent disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as ProcessEvent
from typing import TYPE_CHECKING, Any

from postroom.app.children import child_context, parent_alive, start_child
from postroom.delivery.archive import Archiver
from postroom.delivery.liveness import Liveness

if TYPE_CHECKING:
    from postroom.settings import Settings

__all__ = ["ArchiveProcess"]

log = logging.getLogger(__name__)

_POLL = 0.05  # seconds between looks at the other side's events
_EXIT_GRACE = 30.0  # beyond the drain time, for the child to record and exit


class ArchiveProcess:
    """Stands where the engine runs an `Archiver` (`run`, `archived`, `fault`, `pending`)."""

    def __init__(self, settings: Settings, pending: Archiver):
        self._settings = settings
        self._local = pending  # counts pending copies from this side
        self.archived = 0
        self.fault = ""
        self.liveness: Liveness | None = None  # the child beats for itself: never ticked here

    def pending(self, delivery_id: int | None) -> int:
        return self._local.pending(delivery_id)

    async def run(self, *, delivery_id: int | None, finish: asyncio.Event,
                  drain_seconds: float, halt: asyncio.Event | None = None,
                  worker: str = "") -> None:
        made = child_context()
        finished, halted = made.Event(), made.Event()
        receive, send = made.Pipe(duplex=False)
        child = made.Process(target=_child_main, name="postroom-archive", daemon=True,
                             args=(self._settings, delivery_id, drain_seconds, finished,
                                   halted, send))
        try:
            try:
                await start_child(child)
            finally:
                send.close()
            while not finish.is_set() and child.is_alive():
                if halt is not None and halt.is_set():
                    halted.set()
                await _sleep_or(finish, _POLL)
            finished.set()
            deadline = asyncio.get_running_loop().time() + drain_seconds + _EXIT_GRACE
            while child.is_alive() and asyncio.get_running_loop().time() < deadline:
                if halt is not None and halt.is_set():
                    halted.set()
                await asyncio.sleep(_POLL)
        finally:
            if child.is_alive():  # cancelled (abort), or past its time: its leases run out
                halted.set()
                child.join(1.0)
                if child.is_alive():
                    child.terminate()
                    child.join(5.0)
            self._read(receive, child.exitcode)

    def _read(self, receive: Connection, exitcode: int | None) -> None:
        result: dict[str, Any] | None = None
        with contextlib.suppress(EOFError, OSError):
            if receive.poll(0):
                result = receive.recv()
        receive.close()
        if result is not None:
            self.archived, self.fault = int(result["archived"]), str(result["fault"])
        if exitcode != 0 or result is None:
            why = result.get("error", "") if result else ""
            self.fault = (f"the archive process ended with exit code {exitcode}"
                          + (f": {why}" if why else "") + "; its copies are pending")
            log.error("%s", self.fault)


def _child_main(settings: Settings, delivery_id: int | None, drain_seconds: float,
                finished: ProcessEvent, halted: ProcessEvent, send: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result: dict[str, Any] = {"archived": 0, "fault": ""}
    try:
        result.update(asyncio.run(_drain(settings, delivery_id, drain_seconds, finished,
                                         halted)))
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        send.send(result)
        raise SystemExit(1) from None
    send.send(result)


async def _drain(settings: Settings, delivery_id: int | None, drain_seconds: float,
                 finished: ProcessEvent, halted: ProcessEvent) -> dict[str, Any]:
    from postroom.delivery.worker import Heartbeat, new_worker_id
    from postroom.wiring import build  # here: wiring builds the services this module is in

    postroom = build(settings)
    try:
        ctx = postroom.context
        store = ctx.senders_store()
        archiver = ctx.archiver(store)
        if archiver is None:
            raise RuntimeError("Email BCC has no archive address in these settings")
        finish, halt = asyncio.Event(), asyncio.Event()

        async def watch() -> None:
            while not halt.is_set():
                if halted.is_set() or not parent_alive():  # told to, or orphaned
                    halt.set()
                elif finished.is_set():
                    finish.set()
                await asyncio.sleep(_POLL)

        worker_id = new_worker_id()
        async with Heartbeat(store, worker_id, kind="archive", lease=ctx.lease,
                             clock=ctx.now) as heartbeat:
            archiver.liveness = heartbeat.liveness
            heartbeat.delivery_id = None  # it holds copies, not logs
            watcher = asyncio.create_task(watch())
            try:
                await archiver.run(delivery_id=delivery_id, finish=finish,
                                   drain_seconds=drain_seconds, halt=halt, worker=worker_id)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        return {"archived": archiver.archived, "fault": archiver.fault}
    finally:
        postroom.store.close()


async def _sleep_or(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
