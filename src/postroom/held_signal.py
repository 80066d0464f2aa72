"""A SIGTERM that comes while `postroom worker` starts is held, not fatal.

A worker's normal stop is SIGTERM (systemd, a supervisor, a test). Before its event loop
catches the signal, the process spends a second or more importing and opening its database;
there SIGTERM's default action would kill it (exit -15), which a supervisor reads as a crash.
`hold()` runs first, before any heavy import: a SIGTERM is then noted, and the worker, once
its loop catches signals, stops at once and cleanly (`received()`). Every other command gets
the default action back as soon as the command line is parsed (`release()`), and a SIGTERM
noted meanwhile is raised again there, so that it ends the process as it always would.

Standard library only: this module is imported before everything else.
"""

from __future__ import annotations

import signal
from types import FrameType

_received = False
_holding = False


def _note(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = True


def hold() -> None:
    """Note SIGTERM instead of dying of it, until `release()` or an event loop's handler."""
    global _holding
    try:
        signal.signal(signal.SIGTERM, _note)
    except ValueError:  # not the main thread: signals cannot be caught here
        return
    _holding = True


def received() -> bool:
    """Whether a SIGTERM came while it was held."""
    return _received


def release() -> None:
    """SIGTERM's default action again; one that came while held ends the process now."""
    global _holding
    if not _holding:
        return
    _holding = False
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _received:
        signal.raise_signal(signal.SIGTERM)
