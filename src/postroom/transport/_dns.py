"""The DNS side of routing: a domain's MX records, or whether it has an address, via dnspython.

Every answer becomes a `Lookup` value; nothing here raises for a DNS failure. Names are queried
as absolute names (no search domains) and answers are not cached here: the router keeps them.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX

from postroom.transport.routing import Lookup, MxRecord

__all__ = ["DnsResolver"]

FALLBACK_NEGATIVE_TTL = 60.0  # an NXDOMAIN answer without an SOA to say how long it holds


class DnsResolver:
    """Looks up MX records, then A and AAAA when there are none (RFC 5321 §5.1)."""

    def __init__(self, *, timeout: float,
                 resolver: dns.asyncresolver.Resolver | None = None) -> None:
        self._timeout = timeout
        self._resolver = resolver if resolver is not None else dns.asyncresolver.Resolver()

    async def __call__(self, domain: str) -> Lookup:
        name = dns.name.from_text(domain)
        try:
            answer = await self._query(name, dns.rdatatype.MX)
            if answer.rrset is not None:
                records = sorted(_mx_record(rdata) for rdata in answer.rrset
                                 if isinstance(rdata, MX))  # a set: give it one order
                return Lookup(mx=tuple(records), ttl=answer.rrset.ttl)
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                address = await self._query(name, rdtype)
                if address.rrset is not None:
                    return Lookup(has_address=True, ttl=address.rrset.ttl)
            return Lookup(ttl=answer.chaining_result.minimum_ttl)
        except dns.resolver.NXDOMAIN as exc:
            return Lookup(exists=False, ttl=_nxdomain_ttl(exc))
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL from every server, ...
            return Lookup(error=f"{type(exc).__name__}: {exc}")

    async def _query(self, name: dns.name.Name,
                     rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer:
        return await self._resolver.resolve(name, rdtype, search=False,
                                            raise_on_no_answer=False, lifetime=self._timeout)


def _mx_record(rdata: MX) -> MxRecord:
    exchange = rdata.exchange.to_text(omit_final_dot=True).lower()
    return MxRecord(rdata.preference, exchange)


def _nxdomain_ttl(exc: dns.resolver.NXDOMAIN) -> float:
    """How long the NXDOMAIN holds: the SOA's negative TTL (RFC 2308), else a minute."""
    responses = exc.kwargs.get("responses") or {}
    for response in responses.values():
        if isinstance(response, dns.message.QueryMessage):
            try:
                return float(response.resolve_chaining().minimum_ttl)
            except dns.exception.DNSException:
                continue
    return FALLBACK_NEGATIVE_TTL
