"""A connection to a route: the first of its hosts that answers, the next when one cannot be
reached (RFC 5321 §5.1), kept open across messages for the same hosts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from postroom.domain.outcomes import Outcome, connection_fault
from postroom.transport.routing import HostPort, Route, unreachable

__all__ = ["Batch", "RoutedConnection", "Transport", "send_all"]

Batch = Sequence[tuple[str, str, bytes, bool]]  # (sender, recipient, data, smtputf8)


class Transport(Protocol):
    async def send(self, sender: str, recipient: str, data: bytes, *,
                   smtputf8: bool = False) -> Outcome: ...
    async def close(self) -> None: ...


class RoutedConnection:
    """Sends over one connection to one of `route`'s hosts at a time."""

    def __init__(self, route: Route, connect: Callable[[HostPort], Transport]):
        if not route.hosts:
            raise ValueError(f"the route for {route.domain} has no host")
        self.route = route
        self._connect = connect
        self._index = 0
        self._conn: Transport | None = None

    @property
    def hosts(self) -> tuple[HostPort, ...]:
        return self.route.hosts

    async def send(self, sender: str, recipient: str, data: bytes, *,
                   smtputf8: bool = False) -> Outcome:
        [outcome] = await self.send_batch([(sender, recipient, data, smtputf8)])
        return outcome

    async def send_batch(self, items: Batch) -> list[Outcome]:
        """Send `items` in order; when the host cannot be reached at all, try the next host."""
        faults: list[str] = []
        outcomes: list[Outcome] = []
        for _ in self.route.hosts:
            conn = self._current()
            outcomes = await send_all(conn, items)
            if not all(unreachable(o) for o in outcomes):
                return outcomes
            faults.append(f"{self.route.hosts[self._index]}: {outcomes[0].detail}")
            await self._next_host()
        if len(faults) > 1:
            fault = connection_fault(f"no host of {self.route.domain} could be reached: "
                                     + "; ".join(faults))
            return [fault] * len(items)
        return outcomes

    def _current(self) -> Transport:
        if self._conn is None:
            self._conn = self._connect(self.route.hosts[self._index])
        return self._conn

    async def _next_host(self) -> None:
        await self.close()
        self._index = (self._index + 1) % len(self.route.hosts)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


async def send_all(conn: Transport, items: Batch) -> list[Outcome]:
    """Send over one connection: in one pipelined batch where it can (`send_batch`), else
    one message after the other."""
    batch = getattr(conn, "send_batch", None)
    if batch is not None:
        outcomes: list[Outcome] = await batch(items)
        return outcomes
    return [await conn.send(sender, recipient, data, smtputf8=utf8)
            for sender, recipient, data, utf8 in items]
