"""Where a recipient domain's mail goes: the relay, a static route, or the domain's MX hosts.

Two modes (`RoutingSettings.mode`):

- `relay`: every domain goes to the one relay (smart host) of the settings.
- `mx`: each domain goes to its own mail exchangers, found in DNS (RFC 5321 §5.1): MX records
  by preference, equal preferences in random order. A domain without MX records is its own
  mail host if it has an address (the implicit MX). A null MX (RFC 7505, `0 .`) says the
  domain accepts no mail: a permanent failure. A domain that does not exist, or has neither
  MX nor address, is a soft "invalid domain" failure, as the qualification rules call a
  bounce that says so (`host-unknown`): DNS mistakes are often mended within a delivery.

A static route (`routes`, domain or `*.domain` → `host:port`) overrides both modes; tests use
it to send domains to local capture servers.

TLS to MX hosts and static routes (`HostPort.tls`): `opportunistic` by default (STARTTLS when
the host offers it, cleartext otherwise; the certificate is not verified, RFC 7435), or, per
static route, `required` (a host without STARTTLS is refused: nothing goes in cleartext) or
`none`. The relay has its own `smtp.tls`.

The core is pure: `parse_host_port`, `static_route`, `order_mx`, `route_from_lookup` and
`TtlCache` (in `_ttl_cache.py`) take their inputs and `now`. DNS sits behind one small
callable, `Resolve` (domain → `Lookup`), so tests pass a plain async function; `DnsResolver`
(in `_dns.py`) is the dnspython one. `Router` puts them together; `transport/routed.py`
`RoutedConnection` tries a route's hosts in order.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from postroom.domain.domain_keys import domain_key, match_domain, normalize_domain
from postroom.domain.outcomes import (
    FailureReason,
    FailureType,
    Outcome,
    Verdict,
    connection_fault,
)
from postroom.transport._ttl_cache import TtlCache

__all__ = [
    "HostPort",
    "Lookup",
    "MxRecord",
    "NoRoute",
    "Resolve",
    "Route",
    "RouteSource",
    "RouteTls",
    "Router",
    "RoutingMode",
    "RoutingSettings",
    "StaticRoute",
    "TtlCache",
    "order_mx",
    "parse_host_port",
    "route_from_lookup",
    "static_route",
    "unreachable",
]

SMTP_PORT = 25
NULL_MX = "."

RoutingMode = Literal["relay", "mx"]
RouteTls = Literal["opportunistic", "required", "none"]


@dataclass(frozen=True, slots=True)
class HostPort:
    """An SMTP server to connect to: a host name or IP address, a port, and how to use TLS
    with it (not for the relay, which has its settings)."""

    host: str
    port: int = SMTP_PORT
    tls: RouteTls = "opportunistic"

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str) -> HostPort:
    """`host:port`, `1.2.3.4:port` or `[ipv6]:port` as a HostPort; ValueError if malformed."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not host:port (a port from 1 to 65535 is required)")
    if host.startswith("[") and host.endswith("]"):
        try:
            return HostPort(str(ipaddress.IPv6Address(host[1:-1])), int(port_text))
        except ValueError:
            raise ValueError(f"{text!r}: {host} is not an IPv6 address") from None
    if ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [::1]:25")
    return HostPort(normalize_domain(host), int(port_text))


class StaticRoute(BaseModel):
    """A static route written as a table: `{ host = "host:port", tls = "required" }`."""

    model_config = {"extra": "forbid", "frozen": True}

    host: str = Field(..., description="host:port, 1.2.3.4:port or [ipv6]:port.")
    tls: RouteTls = Field(
        "opportunistic", description="opportunistic: STARTTLS when offered; required: refuse "
        "a host without STARTTLS (nothing in cleartext); none: never STARTTLS.")

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        return str(parse_host_port(value))

    def target(self) -> HostPort:
        parsed = parse_host_port(self.host)
        return HostPort(parsed.host, parsed.port, self.tls)


class RoutingSettings(BaseModel):
    """How recipients' domains are routed (a section of the instance settings)."""

    model_config = {"extra": "forbid", "frozen": True}

    mode: RoutingMode = Field(
        "relay",
        description="relay: everything to the sending relay; mx: to each domain's MX hosts.")
    routes: dict[str, str | StaticRoute] = Field(
        default_factory=dict,
        description="Static routes, domain or *.domain → host:port, or → { host = "
                    "\"host:port\", tls = \"required\" }; they override relay and DNS. "
                    "*.example.com matches names below example.com, not example.com.")
    dns_timeout_seconds: float = Field(5.0, gt=0, description="Time allowed for one lookup.")
    mx_cache_size: int = Field(10_000, ge=1, description="Domains whose DNS answer is kept.")
    mx_cache_max_seconds: float = Field(
        3600.0, gt=0, description="Longest an answer is kept, whatever its TTL.")
    dns_failure_cache_seconds: float = Field(
        30.0, ge=0, description="How long a failed lookup (timeout, SERVFAIL) is remembered.")
    mx_hosts_limit: int = Field(5, ge=1, description="MX hosts tried for one message.")

    @field_validator("routes")
    @classmethod
    def _valid_routes(cls, value: dict[str, str | StaticRoute]
                      ) -> dict[str, str | StaticRoute]:
        routes: dict[str, str | StaticRoute] = {}
        for key, target in value.items():
            normalized = domain_key(key)
            if normalized in routes:
                raise ValueError(f"{key!r} is listed twice (as {normalized!r})")
            routes[normalized] = target if isinstance(target, StaticRoute) \
                else str(parse_host_port(target))
        return routes


class RouteSource(StrEnum):
    RELAY = "relay"
    STATIC = "static"
    MX = "mx"
    IMPLICIT_MX = "implicit-mx"  # no MX records: the domain's own address (RFC 5321 §5.1)


@dataclass(frozen=True, slots=True)
class Route:
    """The hosts to try for a domain, in order, and where that list came from."""

    domain: str
    hosts: tuple[HostPort, ...]
    source: RouteSource


@dataclass(frozen=True, slots=True)
class NoRoute:
    """A domain mail cannot go to now; `outcome` is what its recipients' logs record."""

    domain: str
    outcome: Outcome


@dataclass(frozen=True, slots=True, order=True)
class MxRecord:
    preference: int
    exchange: str  # lower case, no final dot; "." is the null MX's root name


@dataclass(frozen=True, slots=True)
class Lookup:
    """What DNS says about a domain's mail hosts: the resolver's answer as a value."""

    mx: tuple[MxRecord, ...] = ()
    has_address: bool = False  # A or AAAA records exist (looked up only without MX)
    exists: bool = True  # False: NXDOMAIN
    ttl: float = 0.0  # seconds the answer may be kept
    error: str = ""  # the lookup failed for now (timeout, SERVFAIL): try again later


Resolve = Callable[[str], Awaitable[Lookup]]


def static_route(routes: Mapping[str, HostPort], domain: str) -> Route | None:
    """The static route of a (normalized) domain, by its most specific key, if any."""
    key = match_domain(routes, domain)
    return None if key is None else Route(domain, (routes[key],), RouteSource.STATIC)


def order_mx(records: Sequence[MxRecord], *, limit: int,
             rng: random.Random | None = None) -> tuple[str, ...]:
    """MX host names in the order to try: by preference, equal ones shuffled, at most `limit`.

    Null-MX records among real ones are ignored (RFC 7505 forbids the mix). Without `rng`
    equal preferences keep name order, which tests can predict.
    """
    real = sorted({record for record in records if record.exchange != NULL_MX})
    if rng is not None:
        groups: dict[int, list[MxRecord]] = {}
        for record in real:
            groups.setdefault(record.preference, []).append(record)
        for group in groups.values():
            rng.shuffle(group)
        real = [record for group in groups.values() for record in group]
    hosts = list(dict.fromkeys(record.exchange for record in real))
    return tuple(hosts[:limit])


def _invalid_domain(detail: str, *, permanent: bool) -> Outcome:
    if permanent:
        return Outcome(Verdict.FAILED, None, FailureType.HARD, FailureReason.INVALID_DOMAIN,
                       detail)
    return Outcome(Verdict.DEFERRED, None, FailureType.SOFT, FailureReason.INVALID_DOMAIN,
                   detail)


def route_from_lookup(domain: str, lookup: Lookup, *, limit: int,
                      rng: random.Random | None = None) -> Route | NoRoute:
    """The route DNS gives a domain, or why there is none (RFC 5321 §5.1, RFC 7505)."""
    if lookup.error:
        return NoRoute(domain, connection_fault(f"DNS lookup for {domain} failed: "
                                                f"{lookup.error}"))
    if not lookup.exists:
        return NoRoute(domain, _invalid_domain(f"the domain {domain} does not exist (NXDOMAIN)",
                                               permanent=False))
    if lookup.mx:
        hosts = order_mx(lookup.mx, limit=limit, rng=rng)
        if not hosts:
            return NoRoute(domain, _invalid_domain(
                f"{domain} publishes a null MX (RFC 7505): it accepts no mail", permanent=True))
        return Route(domain, tuple(HostPort(host) for host in hosts), RouteSource.MX)
    if lookup.has_address:
        return Route(domain, (HostPort(domain),), RouteSource.IMPLICIT_MX)
    return NoRoute(domain, _invalid_domain(f"{domain} has no MX and no address record",
                                           permanent=False))


class Router:
    """Routes recipient domains: static routes first, then the relay or the domain's MX hosts.

    DNS answers are cached for their TTL (at most `mx_cache_max_seconds`); concurrent
    lookups of one domain share one query.
    """

    def __init__(self, settings: RoutingSettings, *, relay: HostPort,
                 resolve: Resolve | None = None, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self._settings = settings
        self._relay = relay
        self._routes = {key: value.target() if isinstance(value, StaticRoute)
                        else parse_host_port(value) for key, value in settings.routes.items()}
        self._resolve = resolve  # None: dnspython's, made on first use (relay mode never does)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._cache: TtlCache[Lookup] = TtlCache(settings.mx_cache_size)
        self._pending: dict[str, asyncio.Task[Lookup]] = {}

    async def route(self, domain: str) -> Route | NoRoute:
        """Where mail for `domain` goes now, or the outcome its recipients get instead."""
        try:
            name = normalize_domain(domain)
        except ValueError as exc:
            return NoRoute(domain, _invalid_domain(str(exc), permanent=True))
        fixed = static_route(self._routes, name)
        if fixed is not None:
            return fixed
        if self._settings.mode == "relay":
            return Route(name, (self._relay,), RouteSource.RELAY)
        lookup = await self._lookup(name)
        return route_from_lookup(name, lookup, limit=self._settings.mx_hosts_limit,
                                 rng=self._rng)

    async def _lookup(self, domain: str) -> Lookup:
        cached = self._cache.get(domain, self._clock())
        if cached is not None:
            return cached
        task = self._pending.get(domain)
        if task is None:
            task = asyncio.create_task(self._resolve_and_keep(domain))
            self._pending[domain] = task
            task.add_done_callback(lambda _: self._pending.pop(domain, None))
        return await asyncio.shield(task)

    async def _resolve_and_keep(self, domain: str) -> Lookup:
        if self._resolve is None:
            from postroom.transport._dns import DnsResolver  # it imports this module

            self._resolve = DnsResolver(timeout=self._settings.dns_timeout_seconds)
        lookup = await self._resolve(domain)
        settings = self._settings
        ttl = (settings.dns_failure_cache_seconds if lookup.error
               else min(lookup.ttl, settings.mx_cache_max_seconds))
        self._cache.put(domain, lookup, now=self._clock(), ttl=ttl)
        return lookup


def unreachable(outcome: Outcome) -> bool:
    """The host could not be used at all, so the next one may be tried at once.

    A fault after the message was handed over (`in_doubt`) is not retried elsewhere now: the
    host may have accepted it.
    """
    return outcome.verdict is Verdict.DEFERRED and outcome.reply is None \
        and not outcome.in_doubt
