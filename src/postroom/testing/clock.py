"""A clock that tests move by hand, with an asyncio `sleep` that waits for it.

`now()` gives the time and `sleep()` returns only when `advance()` moves the clock past its
wake-up time, so code that waits (rate limits, backoff) runs in virtual time, exactly and
instantly. Sleepers wake in order of their wake-up time; each sees `now()` equal to it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta

__all__ = ["FakeClock"]

START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
_YIELDS = 20  # event-loop turns given to woken tasks; enough for a few awaits each


class FakeClock:
    """Virtual time: pass `clock.now` as a clock, `clock.sleep` as asyncio.sleep."""

    def __init__(self, start: datetime = START) -> None:
        self._start = start
        self._now = start
        self._order = itertools.count()
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        """Seconds since the start, for code that wants a `time.monotonic`."""
        return (self._now - self._start).total_seconds()

    @property
    def sleeping(self) -> int:
        """How many sleepers wait for the clock (cancelled ones included until they are due)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        wake = self._now + timedelta(seconds=seconds)
        heapq.heappush(self._sleepers, (wake, next(self._order), future))
        await future

    async def advance(self, seconds: float = 0.0) -> None:
        """Move the clock forward, waking each sleeper that falls due, in order, on the way."""
        target = self._now + timedelta(seconds=seconds)
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            wake, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake)
            if not future.done():
                future.set_result(None)
            await settle()
        self._now = target


async def settle() -> None:
    """Let every task that can run, run, until all of them wait again."""
    for _ in range(_YIELDS):
        await asyncio.sleep(0)
