"""Per-domain traffic shaping (the reference platform's "MX rules").

Each recipient domain gets at most `max_connections` connections at once, at most
`messages_per_connection` messages over one connection and at most `messages_per_hour`
messages an hour. `ShapingSettings.default` applies to every domain; `domains` overrides it by
exact name or `*.example.com` wildcard (see `postroom.domain.domain_keys`), stating only what
it changes.

A budget belongs to the rule that matched: a domain under `default` or under its own entry has
its own budget; the domains one wildcard matches share one, as they are one provider's. The
budgets are those of one `Shaper`, i.e. of one sending process.

The hourly limit is a token bucket that refills at `messages_per_hour` and holds at most one
minute's worth (at least one message), so messages go out evenly and no 60 minutes see more
than the limit plus that minute's worth. A message that finds no token takes one in advance
and waits until it is paid back: waiters are served in order, and the rate holds however many
wait. (A sliding window would hold the limit exactly, but lets a whole hour's worth go at once
and keeps a timestamp per message.)

A domain whose replies turn to temporary failures is slowed down on its own: when at least
`slowdown.ratio` of its last `slowdown.window` replies, and at least `slowdown.min_failures` of
them, are 4xx (or no reply at all), its connections and hourly rate are halved (never below 1;
an unlimited rate stays unlimited). Connections already open stay open; new ones wait until
fewer than the new limit are. The domain is judged again on fresh replies, and may be halved
again. Each run of `slowdown.recovery_successes` accepted messages in a row (a 5xx, the
recipient's own failure, neither breaks nor extends a run) undoes one halving.

`TokenBucket` and `Pace` are pure, given `now`; `Shaper` is the asyncio layer the engine uses.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from postroom.delivery._pace import Pace, Step, TokenBucket, deepest_level, slowed_limits
from postroom.domain.domain_keys import domain_key, match_domain, normalize_domain

__all__ = [
    "DomainLimits",
    "Pace",
    "Shaper",
    "ShapingSettings",
    "Slowdown",
    "SlowdownSettings",
    "Step",
    "TokenBucket",
    "slowed_limits",
]


class DomainLimits(BaseModel):
    """The traffic one domain (or one wildcard's domains) may receive."""

    model_config = {"extra": "forbid", "frozen": True}

    max_connections: int = Field(10, ge=1, description="Connections open at once.")
    messages_per_connection: int = Field(
        1000, ge=1, description="Messages sent over one connection before it is renewed.")
    messages_per_hour: int = Field(0, ge=0, description="Messages an hour; 0: no limit.")


class SlowdownSettings(BaseModel):
    """When a domain answering with temporary failures is slowed down, and when it recovers."""

    model_config = {"extra": "forbid", "frozen": True}

    enabled: bool = Field(True, description="Slow down domains that answer with many 4xx.")
    window: int = Field(50, ge=1, description="Replies judged: the domain's last N.")
    ratio: float = Field(0.3, gt=0, le=1, description="Share of temporary failures (4xx or "
                         "no reply) in the window that slows the domain down.")
    min_failures: int = Field(10, ge=1, description="Fewest temporary failures in the window "
                              "that slow it down, whatever their share.")
    recovery_successes: int = Field(
        100, ge=1, description="Accepted messages in a row that undo one halving.")


class ShapingSettings(BaseModel):
    """Per-domain limits: defaults, overrides by domain, and the automatic slowdown."""

    model_config = {"extra": "forbid", "frozen": True}

    default: DomainLimits = Field(default_factory=DomainLimits,
                                  description="Limits of every domain without its own entry.")
    domains: dict[str, DomainLimits] = Field(
        default_factory=dict, description="Overrides by domain or *.domain; what an entry "
        "leaves out comes from default.")
    slowdown: SlowdownSettings = Field(default_factory=SlowdownSettings)

    @model_validator(mode="before")
    @classmethod
    def _entries_inherit_default(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("domains"), dict):
            return data
        base = _stated(data.get("default", {}), everything=True)
        if not isinstance(base, dict):
            return data  # not limits at all: validation says so
        domains = {}
        for key, entry in data["domains"].items():
            stated = _stated(entry)
            domains[key] = {**base, **stated} if isinstance(stated, dict) else stated
        return {**data, "domains": domains}

    @field_validator("domains")
    @classmethod
    def _keys(cls, value: dict[str, DomainLimits]) -> dict[str, DomainLimits]:
        domains: dict[str, DomainLimits] = {}
        for key, limits in value.items():
            normalized = domain_key(key)
            if normalized in domains:
                raise ValueError(f"{key!r} is listed twice (as {normalized!r})")
            domains[normalized] = limits
        return domains

    def limits_for(self, domain: str) -> tuple[str, DomainLimits]:
        """The key of the budget `domain` draws on (itself or a wildcard), and its limits."""
        name = normalize_domain(domain)
        key = match_domain(self.domains, name)
        return (name, self.default) if key is None else (key, self.domains[key])


def _stated(value: Any, *, everything: bool = False) -> Any:
    """A limits entry as the dict of what it states (all of it for the default)."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=not everything)
    return value


@dataclass(frozen=True, slots=True)
class Slowdown:
    """A stretch of time a domain was slowed down (for the delivery report)."""

    domain: str  # the budget's key: a domain, or a *.domain wildcard
    since: datetime
    reason: str
    level: int  # halvings in force now; 0 once recovered
    deepest: int  # the most halvings in force at once
    recovered_at: datetime | None


@dataclass
class _Episode:
    since: datetime
    reason: str
    deepest: int = 1
    recovered_at: datetime | None = None


@dataclass(eq=False)
class _Budget:
    limits: DomainLimits  # as configured
    current: DomainLimits  # after slowdowns
    pace: Pace
    bucket: TokenBucket | None
    in_use: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    episodes: list[_Episode] = field(default_factory=list)


class Shaper:
    """Holds every domain to its limits; `clock` and `sleep` are injected (tests: FakeClock)."""

    def __init__(self, settings: ShapingSettings, *, clock: Callable[[], datetime],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._budgets: dict[str, _Budget] = {}
        self._keys: dict[str, str] = {}  # domain → key of its budget

    def limits(self, domain: str) -> DomainLimits:
        """The limits `domain` is held to now, slowdowns included."""
        return self._budget(domain).current

    @asynccontextmanager
    async def connection(self, domain: str) -> AsyncIterator[None]:
        """Hold one of the domain's connection slots, waiting (in order) for one if need be."""
        budget = self._budget(domain)
        await self._take_slot(budget)
        try:
            yield
        finally:
            self._release_slot(budget)

    def has_slot(self, domain: str) -> bool:
        """Whether `connection(domain)` would be granted at once."""
        budget = self._budget(domain)
        return budget.in_use < budget.current.max_connections and not budget.waiters

    def reserve_message(self, domain: str) -> float:
        """Take one message's token from the hourly budget: the seconds to wait before sending
        it (0: now). `give_back()` returns it if the message is not sent after all."""
        bucket = self._budget(domain).bucket
        return 0.0 if bucket is None else bucket.take(self._clock())

    def give_back(self, domain: str) -> None:
        bucket = self._budget(domain).bucket
        if bucket is not None:
            bucket.give_back(self._clock())

    def key(self, domain: str) -> str:
        """The budget `domain` draws on: itself, or the wildcard entry that matches it."""
        self._budget(domain)
        return self._keys[domain]

    def may_reuse(self, domain: str, sent_on_connection: int) -> bool:
        """Whether a connection that carried `sent_on_connection` messages may carry another."""
        return sent_on_connection < self._budget(domain).current.messages_per_connection

    def observe(self, domain: str, reply_code: int | None) -> None:
        """Count the domain's reply to a message: its final reply code, or None for none at all.

        None is a connection fault (refused, timed out, dropped): like a 4xx, a sign the
        domain wants less traffic.
        """
        if not self._settings.slowdown.enabled:
            return
        budget = self._budget(domain)
        step = budget.pace.observe(reply_code)
        if step is None:
            return
        now = self._clock()
        level = budget.pace.level
        if step is Step.SLOWER and level == 1:
            budget.episodes.append(_Episode(now, budget.pace.reason))
        episode = budget.episodes[-1]
        episode.deepest = max(episode.deepest, level)
        if level == 0:
            episode.recovered_at = now
        budget.current = slowed_limits(budget.limits, level)
        if budget.bucket is not None:
            budget.bucket.set_rate(budget.current.messages_per_hour, now)
        self._grant(budget)

    def slowed(self) -> tuple[Slowdown, ...]:
        """Every slowdown so far, the ones still in force included, oldest first."""
        found = [
            Slowdown(domain=key, since=e.since, reason=e.reason,
                     level=0 if e.recovered_at is not None else budget.pace.level,
                     deepest=e.deepest,
                     recovered_at=e.recovered_at)
            for key, budget in self._budgets.items() for e in budget.episodes
        ]
        return tuple(sorted(found, key=lambda s: (s.since, s.domain)))

    def _budget(self, domain: str) -> _Budget:
        key = self._keys.get(domain)
        if key is None:
            key, limits = self._settings.limits_for(domain)
            self._keys[domain] = key
            if key not in self._budgets:
                self._budgets[key] = self._new_budget(limits)
        return self._budgets[key]

    def _new_budget(self, limits: DomainLimits) -> _Budget:
        per_hour = limits.messages_per_hour
        return _Budget(
            limits=limits, current=limits,
            pace=Pace(self._settings.slowdown, deepest=deepest_level(limits)),
            bucket=TokenBucket.full(per_hour, self._clock()) if per_hour else None)

    async def _take_slot(self, budget: _Budget) -> None:
        if budget.in_use < budget.current.max_connections and not budget.waiters:
            budget.in_use += 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        budget.waiters.append(granted)
        self._grant(budget)  # clears waiters that gave up, should any be ahead of a free slot
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # granted as we were cancelled
                self._release_slot(budget)
            raise

    def _release_slot(self, budget: _Budget) -> None:
        budget.in_use -= 1
        self._grant(budget)

    def _grant(self, budget: _Budget) -> None:
        """Hand free slots to the waiters, first come first served."""
        while budget.waiters and budget.in_use < budget.current.max_connections:
            waiter = budget.waiters.popleft()
            if not waiter.done():
                budget.in_use += 1
                waiter.set_result(None)
