"""Rendered messages waiting for a connection, in one lane per destination.

A lane holds the messages of one shaping budget (a recipient domain, or the domains one
wildcard rule covers) bound for one set of hosts (its route). Connection workers take a lane
whose domain has a free connection slot, and send its messages over a connection to its hosts;
with the relay as the one route, lanes only keep each domain to its own limits.

The whole is bounded: `put` waits while `capacity` messages are queued, so memory does not grow
with the audience.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from postroom.transport.routing import Route

__all__ = ["Lane", "Lanes"]

M = TypeVar("M")


@dataclass(eq=False)
class Lane(Generic[M]):
    key: Hashable  # (budget key, hosts)
    domain: str  # a recipient domain of the lane, for the shaper
    route: Route
    messages: deque[M] = field(default_factory=deque)


class Lanes(Generic[M]):
    def __init__(self, capacity: int):
        self._capacity = capacity
        self._lanes: dict[Hashable, Lane[M]] = {}
        self._order: deque[Lane[M]] = deque()  # round robin over lanes
        self._queued = 0
        self._outstanding = 0  # queued, or taken and not yet settled
        self._changed = asyncio.Condition()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False

    @property
    def queued(self) -> int:
        return self._queued

    async def put(self, key: Hashable, domain: str, route: Route, message: M) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._queued < self._capacity or self.closed)
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = Lane(key, domain, route)
                self._order.append(lane)
            lane.messages.append(message)
            self._queued += 1
            self._outstanding += 1
            self._idle.clear()
            self._changed.notify_all()

    async def wait_for_lane(self, eligible: Callable[[Lane[M]], bool],
                            prefer: Lane[M] | None = None) -> Lane[M] | None:
        """A lane with messages that `eligible` accepts (`prefer` first); None once closed."""
        async with self._changed:
            found: list[Lane[M]] = []

            def ready() -> bool:
                lane = self._pick(eligible, prefer)
                if lane is not None:
                    found.append(lane)
                return lane is not None or (self.closed and not self._queued)

            await self._changed.wait_for(ready)
            return found[-1] if found else None

    def _pick(self, eligible: Callable[[Lane[M]], bool], prefer: Lane[M] | None) -> Lane[M] | None:
        if prefer is not None and prefer.messages and eligible(prefer):
            return prefer
        for _ in range(len(self._order)):
            lane = self._order[0]
            self._order.rotate(-1)
            if lane.messages and eligible(lane):
                return lane
        return None

    def take(self, lane: Lane[M], count: int) -> list[M]:
        taken = [lane.messages.popleft() for _ in range(min(count, len(lane.messages)))]
        self._queued -= len(taken)
        return taken

    async def settled(self, count: int) -> None:
        """`count` taken messages are recorded (or given back): wake whoever waits."""
        self._outstanding -= count
        if self._outstanding == 0:
            self._idle.set()
        await self.notify()

    async def notify(self) -> None:
        """Something outside changed what is eligible (a connection slot was freed)."""
        async with self._changed:
            self._changed.notify_all()

    async def join(self) -> None:
        """Wait until every message put was taken and settled."""
        await self._idle.wait()

    def drain(self) -> list[M]:
        """Take every queued message out (a pause, stop or halt): the caller gives them back."""
        drained: list[M] = []
        for lane in self._lanes.values():
            drained.extend(lane.messages)
            lane.messages.clear()
        self._queued = 0
        self._outstanding -= len(drained)
        if self._outstanding == 0:
            self._idle.set()
        return drained

    async def close(self) -> None:
        """No more messages will come: workers finish what is queued, then stop."""
        async with self._changed:
            self.closed = True
            self._changed.notify_all()
