"""MX routing through dnspython against a real DNS server: a tiny UDP one on 127.0.0.1.

The server answers from a table with dnspython's message API: records, NODATA and NXDOMAIN
with an SOA (for the negative TTL), SERVFAIL, and silence (a timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar, cast

import dns.asyncresolver
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from postroom.domain.outcomes import FailureType, Verdict
from postroom.transport._dns import DnsResolver
from postroom.transport.routing import (
    HostPort,
    Lookup,
    MxRecord,
    NoRoute,
    Route,
    Router,
    RouteSource,
    RoutingSettings,
)

T = TypeVar("T")
TTL = 300
SOA = "ns.test. hostmaster.test. 1 3600 600 86400 120"  # negative answers hold 120 s
RECORDS: dict[tuple[str, str], list[str]] = {
    ("example.test", "MX"): ["20 mx2.example.test.", "10 MX1.Example.Test."],
    ("nomail.test", "MX"): ["0 ."],
    ("implicit.test", "A"): ["192.0.2.1"],
    ("v6only.test", "AAAA"): ["2001:db8::1"],
    ("txtonly.test", "TXT"): ['"hello"'],
}
SERVFAIL = {"broken.test"}
SILENT = {"silent.test"}


class TinyDns(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[tuple[str, str]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in SILENT or self.transport is None:
            return
        response = dns.message.make_response(query)
        known = {n for n, _ in RECORDS}
        if name in SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif (name, rdtype) in RECORDS:
            response.answer.append(dns.rrset.from_text_list(
                question.name, TTL, "IN", rdtype, RECORDS[name, rdtype]))
        else:
            if name not in known:
                response.set_rcode(dns.rcode.NXDOMAIN)
            apex = dns.name.from_text(name.rsplit(".", 1)[-1])
            response.authority.append(dns.rrset.from_text(apex, 600, "IN", "SOA", SOA))
        self.transport.sendto(response.to_wire(), addr)


@asynccontextmanager
async def tiny_dns() -> AsyncIterator[tuple[DnsResolver, TinyDns]]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(TinyDns,
                                                            local_addr=("127.0.0.1", 0))
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = transport.get_extra_info("sockname")[1]
    try:
        yield DnsResolver(timeout=0.5, resolver=resolver), server
    finally:
        transport.close()


def with_dns(test: Callable[[DnsResolver, TinyDns], Awaitable[T]]) -> T:
    async def go() -> T:
        async with tiny_dns() as (resolve, server):
            return await test(resolve, server)

    return asyncio.run(go())


def lookup(domain: str) -> Lookup:
    async def go(resolve: DnsResolver, _: TinyDns) -> Lookup:
        return await resolve(domain)

    return with_dns(go)


def test_mx_records() -> None:
    assert lookup("example.test") == Lookup(
        mx=(MxRecord(10, "mx1.example.test"), MxRecord(20, "mx2.example.test")), ttl=TTL)


def test_null_mx() -> None:
    assert lookup("nomail.test") == Lookup(mx=(MxRecord(0, "."),), ttl=TTL)


def test_no_mx_then_a_then_aaaa() -> None:
    assert lookup("implicit.test") == Lookup(has_address=True, ttl=TTL)
    assert lookup("v6only.test") == Lookup(has_address=True, ttl=TTL)


def test_no_mx_and_no_address_holds_for_the_negative_ttl() -> None:
    assert lookup("txtonly.test") == Lookup(ttl=120)


def test_nxdomain_holds_for_the_negative_ttl() -> None:
    assert lookup("missing.test") == Lookup(exists=False, ttl=120)


def test_servfail_and_silence_are_failures_for_now() -> None:
    broken = lookup("broken.test")
    assert broken.error.startswith("NoNameservers")
    silent = lookup("silent.test")
    assert silent.error.startswith(("LifetimeTimeout", "Timeout"))


def test_the_router_over_real_dns() -> None:
    async def go(resolve: DnsResolver, server: TinyDns) -> None:
        settings = RoutingSettings.model_validate({
            "mode": "mx", "routes": {"*.example.test": "127.0.0.1:2525"}})
        router = Router(settings, relay=HostPort("relay.test"), resolve=resolve)
        assert await router.route("Example.TEST") == Route(
            "example.test", (HostPort("mx1.example.test"), HostPort("mx2.example.test")),
            RouteSource.MX)
        assert await router.route("eu.example.test") == Route(
            "eu.example.test", (HostPort("127.0.0.1", 2525),), RouteSource.STATIC)
        assert await router.route("implicit.test") == Route(
            "implicit.test", (HostPort("implicit.test"),), RouteSource.IMPLICIT_MX)
        nomail = await router.route("nomail.test")
        assert isinstance(nomail, NoRoute)
        assert (nomail.outcome.verdict, nomail.outcome.failure_type) == (Verdict.FAILED,
                                                                         FailureType.HARD)
        await router.route("example.test")  # cached
        assert server.queries.count(("example.test", "MX")) == 1
        assert ("eu.example.test", "MX") not in server.queries

    with_dns(go)
