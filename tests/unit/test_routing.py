"""routing: relay or MX hosts, static routes over both, DNS answers cached, hosts tried in order.

DNS is a plain async function returning `Lookup` values; the dnspython side is tested against
a real DNS server on loopback in tests/integration/test_mx_lookup.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from postroom.domain.outcomes import (
    FailureReason,
    FailureType,
    Outcome,
    SmtpReply,
    Verdict,
    connection_fault,
    reply_outcome,
)
from postroom.transport.routed import RoutedConnection
from postroom.transport.routing import (
    HostPort,
    Lookup,
    MxRecord,
    NoRoute,
    Route,
    Router,
    RouteSource,
    RoutingSettings,
    TtlCache,
    order_mx,
    parse_host_port,
    route_from_lookup,
)

RELAY = HostPort("relay.internal", 2525)


class FakeDns:
    """Answers from a table; counts the queries; an optional gate holds them back."""

    def __init__(self, answers: dict[str, Lookup]) -> None:
        self.answers = answers
        self.queries: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, domain: str) -> Lookup:
        self.queries.append(domain)
        if self.gate is not None:
            await self.gate.wait()
        return self.answers.get(domain, Lookup(exists=False, ttl=60))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def mx(*pairs: tuple[int, str], ttl: float = 300) -> Lookup:
    return Lookup(mx=tuple(MxRecord(p, e) for p, e in pairs), ttl=ttl)


def router(dns: FakeDns, *, clock: Clock | None = None, **settings: object) -> Router:
    return Router(RoutingSettings.model_validate({"mode": "mx", **settings}), relay=RELAY,
                  resolve=dns, clock=clock or Clock())


def route(r: Router, domain: str) -> Route | NoRoute:
    return asyncio.run(r.route(domain))


# -- host:port ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("mx.Example.com:25", HostPort("mx.example.com", 25)),
    (" 127.0.0.1:2525 ", HostPort("127.0.0.1", 2525)),
    ("[::1]:2525", HostPort("::1", 2525)),
    ("[2001:DB8::0001]:587", HostPort("2001:db8::1", 587)),
    ("localhost:65535", HostPort("localhost", 65535)),
])
def test_parse_host_port(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected
    assert parse_host_port(str(expected)) == expected


@pytest.mark.parametrize("text", ["mx.example.com", "mx.example.com:", ":25", "host:0",
                                  "host:65536", "host:2x", "::1:25", "[::1]", "[mx]:25",
                                  "bad host:25"])
def test_parse_host_port_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)


def test_ipv6_host_prints_in_brackets() -> None:
    assert str(HostPort("::1", 25)) == "[::1]:25"
    assert str(HostPort("mx.example.com")) == "mx.example.com:25"


# -- settings ----------------------------------------------------------------------------------

def test_settings_defaults() -> None:
    settings = RoutingSettings()
    assert settings.mode == "relay"
    assert settings.routes == {}
    assert settings.mx_cache_size >= 1 and settings.dns_timeout_seconds > 0


def test_routes_are_validated_and_normalized() -> None:
    settings = RoutingSettings(mode="mx", routes={
        "Example.COM.": "Capture.local:2525", "*.Test": "[::1]:25", "Bücher.de": "127.0.0.1:25"})
    assert settings.routes == {"example.com": "capture.local:2525", "*.test": "[::1]:25",
                               "xn--bcher-kva.de": "127.0.0.1:25"}


@pytest.mark.parametrize("routes", [
    {"example.com": "capture.local"},
    {"example.com": "capture.local:0"},
    {"*": "capture.local:25"},
    {"a.*.com": "capture.local:25"},
    {"Example.com": "a:25", "example.com.": "b:25"},
])
def test_bad_routes_are_refused(routes: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        RoutingSettings(routes=routes)


def test_unknown_mode_and_keys_are_refused() -> None:
    with pytest.raises(ValidationError):
        RoutingSettings.model_validate({"mode": "direct"})
    with pytest.raises(ValidationError):
        RoutingSettings.model_validate({"mx_cache": 5})


# -- MX ordering and DNS answers (pure) --------------------------------------------------------

def test_mx_hosts_go_by_preference() -> None:
    records = [MxRecord(20, "b.mx"), MxRecord(10, "c.mx"), MxRecord(30, "a.mx")]
    assert order_mx(records, limit=5) == ("c.mx", "b.mx", "a.mx")
    assert order_mx(records, limit=2) == ("c.mx", "b.mx")


def test_equal_preferences_are_shuffled_within_their_rank_only() -> None:
    records = [MxRecord(10, "a.mx"), MxRecord(10, "b.mx"), MxRecord(10, "c.mx"),
               MxRecord(20, "z.mx")]
    orders = {order_mx(records, limit=5, rng=random.Random(seed)) for seed in range(50)}
    assert len(orders) > 1
    assert all(order[3] == "z.mx" and set(order[:3]) == {"a.mx", "b.mx", "c.mx"}
               for order in orders)


def test_a_host_listed_twice_is_tried_once() -> None:
    records = [MxRecord(10, "a.mx"), MxRecord(20, "a.mx"), MxRecord(30, "b.mx")]
    assert order_mx(records, limit=5) == ("a.mx", "b.mx")


def test_mx_answer_routes_to_its_hosts_on_port_25() -> None:
    result = route_from_lookup("example.com", mx((20, "mx2.example.com"), (10, "mx1.example.com")),
                               limit=5)
    assert result == Route("example.com", (HostPort("mx1.example.com", 25),
                                           HostPort("mx2.example.com", 25)), RouteSource.MX)


def test_null_mx_is_a_permanent_failure() -> None:
    result = route_from_lookup("example.com", mx((0, ".")), limit=5)
    assert isinstance(result, NoRoute)
    outcome = result.outcome
    assert outcome.verdict is Verdict.FAILED and outcome.failure_type is FailureType.HARD
    assert outcome.reason is FailureReason.INVALID_DOMAIN
    assert "null MX" in outcome.detail and "accepts no mail" in outcome.detail


def test_null_mx_beside_real_ones_is_ignored() -> None:
    result = route_from_lookup("example.com", mx((0, "."), (10, "mx.example.com")), limit=5)
    assert isinstance(result, Route) and result.hosts == (HostPort("mx.example.com"),)


def test_no_mx_but_an_address_is_the_implicit_mx() -> None:
    result = route_from_lookup("example.com", Lookup(has_address=True, ttl=60), limit=5)
    assert result == Route("example.com", (HostPort("example.com", 25),),
                           RouteSource.IMPLICIT_MX)


@pytest.mark.parametrize(("lookup", "words"), [
    (Lookup(exists=False), "does not exist"),
    (Lookup(), "no MX and no address"),
])
def test_a_domain_without_mail_hosts_is_a_soft_invalid_domain(lookup: Lookup, words: str) -> None:
    result = route_from_lookup("gone.example", lookup, limit=5)
    assert isinstance(result, NoRoute)
    assert result.outcome.verdict is Verdict.DEFERRED
    assert result.outcome.failure_type is FailureType.SOFT
    assert result.outcome.reason is FailureReason.INVALID_DOMAIN
    assert words in result.outcome.detail and "gone.example" in result.outcome.detail


def test_a_failed_lookup_is_tried_again_later() -> None:
    result = route_from_lookup("example.com", Lookup(error="Timeout: no answer"), limit=5)
    assert isinstance(result, NoRoute)
    assert result.outcome == connection_fault("DNS lookup for example.com failed: "
                                              "Timeout: no answer")


# -- the cache ---------------------------------------------------------------------------------

def test_cache_entries_expire() -> None:
    cache: TtlCache[str] = TtlCache(10)
    cache.put("a", "A", now=0, ttl=30)
    assert cache.get("a", 29.9) == "A"
    assert cache.get("a", 30) is None
    assert len(cache) == 0


def test_cache_drops_the_least_recently_used_when_full() -> None:
    cache: TtlCache[str] = TtlCache(2)
    cache.put("a", "A", now=0, ttl=60)
    cache.put("b", "B", now=0, ttl=60)
    assert cache.get("a", 1) == "A"  # b is now the least recently used
    cache.put("c", "C", now=1, ttl=60)
    assert (cache.get("a", 2), cache.get("b", 2), cache.get("c", 2)) == ("A", None, "C")


def test_cache_keeps_nothing_for_a_zero_ttl() -> None:
    cache: TtlCache[str] = TtlCache(2)
    cache.put("a", "A", now=0, ttl=60)
    cache.put("a", "A2", now=0, ttl=0)
    assert cache.get("a", 0) is None


# -- the router --------------------------------------------------------------------------------

def test_relay_mode_sends_everything_to_the_relay_without_dns() -> None:
    dns = FakeDns({})
    r = Router(RoutingSettings(), relay=RELAY, resolve=dns)
    assert route(r, "Example.COM") == Route("example.com", (RELAY,), RouteSource.RELAY)
    assert dns.queries == []


@pytest.mark.parametrize("mode", ["relay", "mx"])
def test_static_routes_override_both_modes(mode: str) -> None:
    dns = FakeDns({"other.test": mx((10, "mx.other.test"))})
    settings = RoutingSettings.model_validate({"mode": mode, "routes": {
        "example.com": "127.0.0.1:2525", "*.example.com": "127.0.0.1:2526"}})
    r = Router(settings, relay=RELAY, resolve=dns)
    assert route(r, "example.com") == Route("example.com", (HostPort("127.0.0.1", 2525),),
                                            RouteSource.STATIC)
    assert route(r, "EU.Example.com.") == Route("eu.example.com", (HostPort("127.0.0.1", 2526),),
                                                RouteSource.STATIC)
    unrouted = route(r, "other.test")
    assert isinstance(unrouted, Route)
    assert unrouted.source is (RouteSource.RELAY if mode == "relay" else RouteSource.MX)
    assert dns.queries == ([] if mode == "relay" else ["other.test"])


def test_mx_mode_looks_up_the_domain() -> None:
    dns = FakeDns({"example.com": mx((10, "mx1.example.com"), (20, "mx2.example.com"))})
    result = route(router(dns), "Example.com")
    assert isinstance(result, Route) and result.source is RouteSource.MX
    assert [h.host for h in result.hosts] == ["mx1.example.com", "mx2.example.com"]
    assert dns.queries == ["example.com"]


def test_mx_hosts_are_limited() -> None:
    dns = FakeDns({"example.com": mx(*((i, f"mx{i}.example.com") for i in range(10)))})
    result = route(router(dns, mx_hosts_limit=3), "example.com")
    assert isinstance(result, Route) and len(result.hosts) == 3


def test_answers_are_cached_for_their_ttl() -> None:
    clock = Clock()
    dns = FakeDns({"example.com": mx((10, "mx.example.com"), ttl=300)})
    r = router(dns, clock=clock)

    async def go() -> None:
        await r.route("example.com")
        clock.now += 299
        await r.route("example.com")
        assert dns.queries == ["example.com"]
        clock.now += 1
        await r.route("example.com")
        assert dns.queries == ["example.com"] * 2

    asyncio.run(go())


def test_a_long_ttl_is_capped() -> None:
    clock = Clock()
    dns = FakeDns({"example.com": mx((10, "mx.example.com"), ttl=86400)})
    r = router(dns, clock=clock, mx_cache_max_seconds=60)

    async def go() -> None:
        await r.route("example.com")
        clock.now += 60
        await r.route("example.com")

    asyncio.run(go())
    assert len(dns.queries) == 2


def test_a_failed_lookup_is_remembered_briefly() -> None:
    clock = Clock()
    dns = FakeDns({"example.com": Lookup(error="Timeout")})
    r = router(dns, clock=clock, dns_failure_cache_seconds=30)

    async def go() -> list[Route | NoRoute]:
        results = [await r.route("example.com") for _ in range(3)]
        clock.now += 30
        results.append(await r.route("example.com"))
        return results

    results = asyncio.run(go())
    assert all(isinstance(x, NoRoute) and x.outcome.verdict is Verdict.DEFERRED
               for x in results)
    assert len(dns.queries) == 2


def test_the_cache_is_bounded() -> None:
    dns = FakeDns({f"d{i}.test": mx((10, f"mx.d{i}.test")) for i in range(3)})
    r = router(dns, mx_cache_size=2)

    async def go() -> None:
        for name in ("d0.test", "d1.test", "d2.test", "d0.test"):
            await r.route(name)

    asyncio.run(go())
    assert dns.queries == ["d0.test", "d1.test", "d2.test", "d0.test"]


def test_concurrent_routes_of_one_domain_share_one_query() -> None:
    dns = FakeDns({"example.com": mx((10, "mx.example.com"))})
    r = router(dns)

    async def go() -> list[Route | NoRoute]:
        dns.gate = asyncio.Event()
        tasks = [asyncio.create_task(r.route("example.com")) for _ in range(5)]
        await asyncio.sleep(0)
        dns.gate.set()
        return list(await asyncio.gather(*tasks))

    results = asyncio.run(go())
    assert dns.queries == ["example.com"]
    assert len(set(results)) == 1 and isinstance(results[0], Route)


def test_a_waiter_cancelled_does_not_cancel_the_shared_query() -> None:
    dns = FakeDns({"example.com": mx((10, "mx.example.com"))})
    r = router(dns)

    async def go() -> Route | NoRoute:
        dns.gate = asyncio.Event()
        first = asyncio.create_task(r.route("example.com"))
        second = asyncio.create_task(r.route("example.com"))
        await asyncio.sleep(0)
        first.cancel()
        dns.gate.set()
        return await second

    assert isinstance(asyncio.run(go()), Route)
    assert dns.queries == ["example.com"]


def test_no_mx_and_null_mx_through_the_router() -> None:
    dns = FakeDns({"implicit.test": Lookup(has_address=True, ttl=60),
                   "nomail.test": mx((0, "."))})
    r = router(dns)
    assert route(r, "implicit.test") == Route(
        "implicit.test", (HostPort("implicit.test"),), RouteSource.IMPLICIT_MX)
    nomail = route(r, "nomail.test")
    assert isinstance(nomail, NoRoute) and nomail.outcome.verdict is Verdict.FAILED
    missing = route(r, "missing.test")
    assert isinstance(missing, NoRoute) and missing.outcome.verdict is Verdict.DEFERRED


def test_a_malformed_domain_is_a_permanent_failure() -> None:
    result = route(router(FakeDns({})), "bad domain")
    assert isinstance(result, NoRoute)
    assert result.outcome.verdict is Verdict.FAILED
    assert result.outcome.reason is FailureReason.INVALID_DOMAIN


# -- trying the hosts in order -----------------------------------------------------------------

MX_ROUTE = Route("example.com", (HostPort("mx1.example.com"), HostPort("mx2.example.com"),
                                 HostPort("mx3.example.com")), RouteSource.MX)


class ScriptedHost:
    """A Transport to one host that answers every message with the host's scripted outcome."""

    def __init__(self, host: HostPort, outcomes: dict[str, Outcome], log: list[str]):
        self.host, self._outcomes, self._log = host, outcomes, log
        self.closed = False

    async def send(self, sender: str, recipient: str, data: bytes, *,
                   smtputf8: bool = False) -> Outcome:
        self._log.append(f"{self.host.host} {recipient}")
        return self._outcomes[self.host.host]

    async def close(self) -> None:
        self.closed = True


def scripted(outcomes: dict[str, Outcome]) -> tuple[list[str], list[ScriptedHost],
                                                     Callable[[HostPort], ScriptedHost]]:
    """What each host was sent, the connections opened, and the connector for them."""
    log: list[str] = []
    opened: list[ScriptedHost] = []

    def connect(host: HostPort) -> ScriptedHost:
        opened.append(ScriptedHost(host, outcomes, log))
        return opened[-1]

    return log, opened, connect


def send_one(route: Route, connect: Callable[[HostPort], ScriptedHost],
             recipient: str = "a@example.com") -> Outcome:
    async def run() -> Outcome:
        connection = RoutedConnection(route, connect)
        try:
            return await connection.send("s@example.org", recipient, b"x")
        finally:
            await connection.close()

    return asyncio.run(run())


def test_an_unreachable_host_passes_on_to_the_next() -> None:
    accepted = reply_outcome(SmtpReply(250, "2.0.0 ok"))
    log, opened, connect = scripted({"mx1.example.com": connection_fault("refused"),
                                     "mx2.example.com": accepted,
                                     "mx3.example.com": accepted})
    assert send_one(MX_ROUTE, connect) == accepted
    assert log == ["mx1.example.com a@example.com", "mx2.example.com a@example.com"]
    assert [c.closed for c in opened] == [True, True]  # the dead one at once, then at the end


def test_the_connection_stays_on_the_host_that_answered() -> None:
    accepted = reply_outcome(SmtpReply(250, "2.0.0 ok"))
    log, opened, connect = scripted({"mx1.example.com": connection_fault("refused"),
                                     "mx2.example.com": accepted,
                                     "mx3.example.com": accepted})

    async def run() -> list[Outcome]:
        connection = RoutedConnection(MX_ROUTE, connect)
        try:
            return [await connection.send("s@example.org", f"{n}@example.com", b"x")
                    for n in ("a", "b")]
        finally:
            await connection.close()

    assert asyncio.run(run()) == [accepted, accepted]
    assert log == ["mx1.example.com a@example.com", "mx2.example.com a@example.com",
                   "mx2.example.com b@example.com"]
    assert len(opened) == 2


@pytest.mark.parametrize("outcome", [
    reply_outcome(SmtpReply(451, "4.7.1 try later")),
    reply_outcome(SmtpReply(550, "5.1.1 user unknown")),
    connection_fault("SMTPServerDisconnected during DATA", in_doubt=True),
])
def test_a_reply_or_a_message_in_doubt_stops_at_that_host(outcome: Outcome) -> None:
    log, _, connect = scripted({"mx1.example.com": outcome})
    assert send_one(MX_ROUTE, connect) == outcome
    assert log == ["mx1.example.com a@example.com"]


def test_when_no_host_answers_the_fault_names_each() -> None:
    log, opened, connect = scripted({f"mx{i}.example.com": connection_fault(f"refused {i}")
                                     for i in (1, 2, 3)})
    outcome = send_one(MX_ROUTE, connect)
    assert [entry.split()[0] for entry in log] == [
        "mx1.example.com", "mx2.example.com", "mx3.example.com"]
    assert outcome.verdict is Verdict.DEFERRED and outcome.reason is FailureReason.UNREACHABLE
    assert outcome.detail == ("no host of example.com could be reached: "
                              "mx1.example.com:25: refused 1; mx2.example.com:25: refused 2; "
                              "mx3.example.com:25: refused 3")
    assert all(c.closed for c in opened)


def test_a_single_host_keeps_its_own_fault() -> None:
    fault = connection_fault("ConnectionRefusedError")
    _, _, connect = scripted({"relay.internal": fault})
    single = Route("example.com", (RELAY,), RouteSource.RELAY)
    assert send_one(single, connect) == fault


def test_a_pipelined_batch_moves_to_the_next_host_as_a_whole() -> None:
    accepted = reply_outcome(SmtpReply(250, "2.0.0 ok"))
    batches: list[tuple[str, int]] = []

    class Pipelined(ScriptedHost):
        async def send_batch(self, items: list[tuple[str, str, bytes, bool]]) -> list[Outcome]:
            batches.append((self.host.host, len(items)))
            return [self._outcomes[self.host.host]] * len(items)

    outcomes = {"mx1.example.com": connection_fault("refused"), "mx2.example.com": accepted}

    async def run() -> list[Outcome]:
        connection = RoutedConnection(MX_ROUTE, lambda host: Pipelined(host, outcomes, []))
        try:
            return await connection.send_batch([("s@example.org", f"{n}@example.com", b"x",
                                                 False) for n in range(3)])
        finally:
            await connection.close()

    assert asyncio.run(run()) == [accepted] * 3
    assert batches == [("mx1.example.com", 3), ("mx2.example.com", 3)]


def test_a_route_without_hosts_is_refused() -> None:
    with pytest.raises(ValueError, match="no host"):
        RoutedConnection(Route("example.com", (), RouteSource.MX), scripted({})[2])
