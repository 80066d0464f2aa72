"""Proofs (async IO): a test send of a delivery to proof addresses, subject `Proof #N`,
never archived and never in the delivery's logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from postroom.app.context import AppContext
from postroom.delivery.analysis import static_checks
from postroom.delivery.audience import matcher
from postroom.domain.addresses import wire_address
from postroom.domain.models import Delivery, Recipient
from postroom.domain.outcomes import Outcome, Verdict
from postroom.errors import InputError, NotFoundError
from postroom.transport.routed import RoutedConnection
from postroom.transport.routing import NoRoute

__all__ = ["ProofReport", "ProofService"]


@dataclass(frozen=True)
class ProofReport:
    delivery_id: int
    number: int
    sample: str
    results: list[tuple[str, Verdict, str]]

    def to_json(self) -> dict[str, Any]:
        return {"delivery": self.delivery_id, "proof": self.number, "sample": self.sample,
                "sent": [{"to": to, "result": verdict, "reply": reply}
                         for to, verdict, reply in self.results]}


class ProofService:
    def __init__(self, ctx: AppContext):
        self._ctx = ctx

    async def proof(self, delivery_id: int, *, to: list[str] | None = None,
                    recipient: str | None = None) -> ProofReport:
        """Send proof #N of a delivery now: never archived, never in its delivery log."""
        ctx = self._ctx
        delivery = ctx.store.get_delivery(delivery_id)
        plan = ctx.planner(delivery)
        problems = [p for p in static_checks(plan, archive_available=True)]
        if problems:
            raise InputError("the delivery cannot be proofed:\n" + "\n".join(problems))
        addresses = to or list(delivery.properties.proof_addresses)
        if not addresses:
            raise InputError("no proof address: pass --to or set the proof_addresses property")
        sample = self._sample(delivery, recipient)
        for address in addresses:  # fails before a proof number is used up
            plan.render_proof(sample, address, 0, ctx.now())
        number = ctx.store.next_proof_number(delivery_id)
        messages = [plan.render_proof(sample, address, number, ctx.now())
                    for address in addresses]
        sender = wire_address(plan.errors_to).address
        outcomes: list[Outcome] = []
        for data, wire in messages:
            route = await ctx.router.route(wire.address.rpartition("@")[2])
            if isinstance(route, NoRoute):
                outcomes.append(route.outcome)
                continue
            connection = RoutedConnection(route, ctx.connect)
            try:
                outcomes.append(await connection.send(sender, wire.address, data,
                                                      smtputf8=wire.smtputf8))
            finally:
                await connection.close()
        return ProofReport(delivery_id, number, sample.email,
                           [(a, o.verdict, o.text) for a, o in zip(addresses, outcomes,
                                                                  strict=True)])

    def _sample(self, delivery: Delivery, email: str | None) -> Recipient:
        store = self._ctx.store
        if email is not None:
            found = store.recipient_by_email(email)
            if found is None:
                raise NotFoundError(f"no recipient {email!r}")
            return found
        wanted = matcher(delivery.audience.filters)
        for candidate in store.iter_audience(delivery, batch_size=50):
            if wanted(candidate) and not candidate.opted_out:
                return candidate
        raise InputError("the delivery's audience is empty: name a sample with --recipient")
