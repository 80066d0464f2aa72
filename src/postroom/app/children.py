"""Where a send's child processes come from: a fork server that imported Postroom once (ADR 0036).

`postroom send` can run children beside itself: helper send processes (`sending.processes`,
ADR 0031) and the archive process (`archive.own_process`, ADR 0030). Spawned, each child was a
new interpreter that imported Postroom before it could send: 0.8 to 1.2 s on this project's
2-core machines, while the parent sent alone.

They now come from multiprocessing's fork server: a process started from nothing (not a fork
of the caller), which imports `PRELOAD` once and forks each child from that state. A child so
made shares no connection, thread or event loop with the caller, as a spawned one; it gets the
caller's working folder and its pickled arguments as before, and is ready in milliseconds once
the server is.

`warm(settings)` starts the server ahead of the first child (the CLI's `send` does so before it
builds the application and analyzes the delivery, so the server's imports run on the second
core meanwhile); without it the first child starts it. A long-running process (the web server)
keeps its server for later sends. The server ends when the process that started it ends.

A child knows its parent is gone from `parent_alive()`: its parent's process id is no test,
since a forked child's parent is the server.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.forkserver
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postroom.settings import Settings

__all__ = ["PRELOAD", "child_context", "parent_alive", "start_child", "uses_children", "warm"]

# What a child needs before it can build the application and send: imported once, in the server.
PRELOAD = ["postroom.app.send_process", "postroom.app.archive_process", "postroom.wiring"]


def uses_children(settings: Settings) -> bool:
    """Whether `postroom send` with these settings starts child processes."""
    return settings.sending.processes > 1 or (settings.archive.enabled
                                              and settings.archive.own_process)


def child_context() -> ForkServerContext:
    """The multiprocessing context children are made with (its server preloads `PRELOAD`)."""
    forkserver = multiprocessing.get_context("forkserver")
    assert isinstance(forkserver, ForkServerContext)
    forkserver.set_forkserver_preload(PRELOAD)  # read when the server starts
    return forkserver


def warm(settings: Settings) -> bool:
    """Start the fork server now when a send with these settings will need it; whether it was
    needed. Call it from a program's running code, never while a module is being imported
    (multiprocessing refuses to start processes then)."""
    if not uses_children(settings):
        return False
    child_context()
    multiprocessing.forkserver.ensure_running()
    return True


async def start_child(process: BaseProcess) -> None:
    """Start a child of `child_context()` without holding up the event loop: the start waits for the
    server, which may still be importing (about a second). Cancelled meanwhile, it still
    returns only once the start has ended, so that the caller's clean-up finds the child."""
    starting = asyncio.ensure_future(asyncio.to_thread(process.start))
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        await starting
        raise


def parent_alive() -> bool:
    """In a child: whether the process that started it still runs (True outside a child)."""
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()
