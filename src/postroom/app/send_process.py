"""Helper processes that send one delivery beside `postroom send` (`sending.processes`, ADR 0031).

One Python process renders, sends and records on one core. With `sending.processes = N`,
`send` starts N - 1 children (from a fork server, app/children.py) that run the same engine
on the same delivery: each claims its own batches of due logs under its own lease (the claims
that already let several workers share a delivery), renders them, sends them over its own
`sending.connections` and records them. The parent's archive loop ends only after every
helper has: a copy a helper's message owes is in the outbox when its log is recorded `sent`,
so none is left behind.

A helper registers as a sender of its own (kind `send`), so one that dies loses nothing: its
claimed logs come back when their lease runs out (the takeover counts those on the wire in
doubt), and the run reports the helper's exit. Children ignore Ctrl-C (the parent decides):
a halt or an abort is passed on by events; a child whose parent disappears halts by itself.
Each reports its progress (messages settled) as it goes and its run's summary at the end.

Each helper also drains the archive outbox in its own loop, as a worker does: copies are
claimed per delivery from the one outbox, so the loops share them as the senders share logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as ProcessEvent
from typing import TYPE_CHECKING, Any

from postroom.app.children import child_context, parent_alive, start_child
from postroom.delivery.engine import RunSummary

if TYPE_CHECKING:
    from postroom.settings import Settings

__all__ = ["SendHelpers", "merge"]

log = logging.getLogger(__name__)

_POLL = 0.05  # seconds between looks at the other side's events and pipe
_EXIT_GRACE = 30.0  # after an abort or halt, for a child to record and exit


@dataclass
class _Child:
    process: Any  # multiprocessing.Process (of children.child_context())
    receive: Connection
    summary: RunSummary | None = None
    error: str = ""


class SendHelpers:
    """`count` helper processes for one delivery; `run` returns when all have ended."""

    def __init__(self, settings: Settings, count: int):
        self._settings = settings
        self._count = count
        self.errors: list[str] = []  # a helper that failed: what it said, or its exit code

    async def run(self, delivery_id: int, *, progress: Callable[[int], None] | None,
                  halt: asyncio.Event | None, abort: asyncio.Event | None) -> list[RunSummary]:
        made = child_context()
        halted, aborted = made.Event(), made.Event()
        children: list[_Child] = []
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        try:
            for number in range(self._count):
                receive, send = made.Pipe(duplex=False)
                process = made.Process(target=_child_main, name=f"postroom-send-{number + 1}",
                                       daemon=True, args=(self._settings, delivery_id, halted,
                                                          aborted, send))
                children.append(_Child(process, receive))
                try:
                    await start_child(process)
                finally:
                    send.close()
            while any(child.process.is_alive() for child in children):
                if halt is not None and halt.is_set():
                    halted.set()
                if abort is not None and abort.is_set():
                    aborted.set()
                    deadline = deadline or loop.time() + _EXIT_GRACE
                if deadline is not None and loop.time() > deadline:
                    break
                self._read(children, progress)
                await asyncio.sleep(_POLL)
        finally:
            for child in children:  # cancelled, or past its time: its leases run out
                if child.process.is_alive():
                    aborted.set()
                    child.process.join(1.0)
                if child.process.is_alive():
                    child.process.terminate()
                    child.process.join(5.0)
            self._read(children, progress)
            for child in children:
                child.receive.close()
                self._check(child)
        return [child.summary for child in children if child.summary is not None]

    @staticmethod
    def _read(children: list[_Child], progress: Callable[[int], None] | None) -> None:
        for child in children:
            with contextlib.suppress(EOFError, OSError):
                while child.receive.poll(0):
                    kind, value = child.receive.recv()
                    if kind == "progress" and progress is not None:
                        progress(int(value))
                    elif kind == "summary":
                        child.summary = value
                    elif kind == "error":
                        child.error = str(value)

    def _check(self, child: _Child) -> None:
        code = child.process.exitcode
        if code == 0 and child.summary is not None:
            return
        error = (f"helper send process {child.process.name} ended with exit code {code}"
                 + (f": {child.error}" if child.error else "")
                 + "; the logs it held are sent by the next run once their lease runs out")
        log.error("%s", error)
        self.errors.append(error)


def merge(summary: RunSummary, shares: list[RunSummary]) -> RunSummary:
    """Add the helpers' counts to the parent's run summary (the copies each archived too; the
    state, the pending copies and the archive's fault are the parent's, read last)."""
    for share in shares:
        summary.archived += share.archived
        summary.archive_fault = summary.archive_fault or share.archive_fault
        summary.sent += share.sent
        summary.failed += share.failed
        summary.deferred += share.deferred
        summary.in_doubt += share.in_doubt
        summary.postponed += share.postponed
        summary.relay_faults += share.relay_faults
        summary.relay_fault = summary.relay_fault or share.relay_fault
        summary.slowed.extend(share.slowed)
    return summary


def _child_main(settings: Settings, delivery_id: int, halted: ProcessEvent,
                aborted: ProcessEvent, send: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = asyncio.run(_send(settings, delivery_id, halted, aborted, send))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            send.send(("error", f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    send.send(("summary", summary))


async def _send(settings: Settings, delivery_id: int, halted: ProcessEvent,
                aborted: ProcessEvent, send: Connection) -> RunSummary:
    from postroom.wiring import build  # here: wiring builds the services this module is in

    postroom = build(settings)
    halt, abort = asyncio.Event(), asyncio.Event()
    settled = 0

    def progress(count: int) -> None:
        nonlocal settled
        settled += count

    async def watch() -> None:
        nonlocal settled
        while True:
            if halted.is_set() or not parent_alive():  # told to, or orphaned
                halt.set()
            if aborted.is_set():
                abort.set()
            if settled:
                send.send(("progress", settled))
                settled = 0
            await asyncio.sleep(_POLL)

    watcher = asyncio.create_task(watch())
    try:
        return await postroom.sending.send_share(delivery_id, progress=progress, halt=halt,
                                                 abort=abort)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if settled:
            send.send(("progress", settled))
        postroom.store.close()
