"""The pure counters of traffic shaping: the hourly token bucket and a domain's pace.

Functions of their inputs and `now`; `postroom.delivery.shaping.Shaper` puts them to work.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postroom.delivery.shaping import DomainLimits, SlowdownSettings

__all__ = ["Pace", "Step", "TokenBucket", "deepest_level", "slowed_limits"]


def slowed_limits(limits: DomainLimits, level: int) -> DomainLimits:
    """`limits` with connections and hourly rate halved `level` times, never below 1."""
    per_hour = limits.messages_per_hour
    return limits.model_copy(update={
        "max_connections": max(1, limits.max_connections >> level),
        "messages_per_hour": max(1, per_hour >> level) if per_hour else 0,
    })


def deepest_level(limits: DomainLimits) -> int:
    """The level past which halving changes nothing (everything is at 1)."""
    return max(limits.max_connections.bit_length(), limits.messages_per_hour.bit_length()) - 1


@dataclass
class TokenBucket:
    """Messages an hour as tokens: refilled at `per_hour`, at most one minute's worth kept."""

    per_hour: int
    tokens: float
    updated: datetime

    @classmethod
    def full(cls, per_hour: int, now: datetime) -> TokenBucket:
        return cls(per_hour, max(1.0, per_hour / 60), now)

    @property
    def capacity(self) -> float:
        return max(1.0, self.per_hour / 60)

    def take(self, now: datetime) -> float:
        """Take a message's token, in advance if none is left: the seconds to wait before."""
        self._refill(now)
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens * 3600 / self.per_hour

    def give_back(self, now: datetime) -> None:
        """Return the token of a message that was not sent after all."""
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + 1)

    def set_rate(self, per_hour: int, now: datetime) -> None:
        self._refill(now)
        self.per_hour = per_hour
        self.tokens = min(self.capacity, self.tokens)

    def _refill(self, now: datetime) -> None:
        elapsed = max(0.0, (now - self.updated).total_seconds())
        self.tokens = min(self.capacity, self.tokens + elapsed * self.per_hour / 3600)
        self.updated = max(self.updated, now)


class Step(StrEnum):
    SLOWER = "slower"
    FASTER = "faster"


@dataclass
class Pace:
    """How far a domain is slowed down (`level` halvings), judged from its replies."""

    rules: SlowdownSettings
    deepest: int  # halving further would change nothing
    level: int = 0
    reason: str = ""  # why it was last slowed down
    recent: deque[bool] = field(default_factory=deque)  # True: a temporary failure
    successes: int = 0  # accepted messages in a row

    def observe(self, reply_code: int | None) -> Step | None:
        """Count a reply (None: no reply at all); the step it makes the domain's pace take."""
        temporary = reply_code is None or 400 <= reply_code < 500
        self.recent.append(temporary)
        if len(self.recent) > self.rules.window:
            self.recent.popleft()
        if temporary:
            self.successes = 0
        elif reply_code is not None and 200 <= reply_code < 300:
            self.successes += 1
        failures = sum(self.recent)
        if failures >= self.rules.min_failures and failures / len(self.recent) >= self.rules.ratio:
            reason = (f"{failures} of its last {len(self.recent)} replies were temporary "
                      "failures (4xx or none)")
            self.recent.clear()  # judge the slower pace on fresh replies
            if self.level >= self.deepest:
                return None
            self.level += 1
            self.reason = reason
            return Step.SLOWER
        if self.level and self.successes >= self.rules.recovery_successes:
            self.successes = 0
            self.level -= 1
            return Step.FASTER
        return None
