"""When each loop of a sending process last made progress.

A sender's heartbeat renews its leases; it must not outlive the loops that do the work, or a
stuck loop's claims stay held while nobody sends them. So the loops (`send`: the engine and the
worker's polling; `archive`: the archive outbox worker) tick as they go, and the heartbeat
renews a loop's leases only while that loop ticked within the stall window (docs/operations.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ARCHIVE", "SEND", "Liveness"]

SEND = "send"
ARCHIVE = "archive"


class Liveness:
    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic):
        self._monotonic = monotonic
        self._last: dict[str, float] = {}

    def tick(self, loop: str) -> None:
        """`loop` made progress (and is running: a first tick registers it)."""
        self._last[loop] = self._monotonic()

    def done(self, loop: str) -> None:
        """`loop` ended on purpose: it holds nothing and is not watched any more."""
        self._last.pop(loop, None)

    def running(self) -> set[str]:
        return set(self._last)

    def fresh(self, within: float) -> set[str]:
        """The loops that made progress within the last `within` seconds."""
        now = self._monotonic()
        return {loop for loop, at in self._last.items() if now - at <= within}

    def stalled(self, within: float) -> dict[str, float]:
        """The loops that made no progress for more than `within` seconds, and for how long."""
        now = self._monotonic()
        return {loop: now - at for loop, at in self._last.items() if now - at > within}
