"""A bounded map whose entries expire, for DNS answers: pure, the time is passed in."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["TtlCache"]

V = TypeVar("V")


class TtlCache(Generic[V]):
    """A bounded map whose entries expire: least recently used ones go first when full."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: V, *, now: float, ttl: float) -> None:
        """Keep `value` for `ttl` seconds; a ttl of 0 or less keeps nothing."""
        self._entries.pop(key, None)
        if ttl <= 0:
            return
        self._entries[key] = (now + ttl, value)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
