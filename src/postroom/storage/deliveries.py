"""Storage of deliveries: create, read, move through the state table, count proofs. Mixed
into `SqlStore`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update

from postroom.domain.models import Audience, Delivery
from postroom.domain.properties import Properties
from postroom.domain.states import DeliveryState, transition
from postroom.errors import NotFoundError, StateError
from postroom.storage.common import to_delivery
from postroom.storage.schema import deliveries

__all__ = ["DeliveryStore"]


class DeliveryStore:
    engine: Engine

    def create_delivery(self, *, name: str, template_name: str, props: Properties,
                        audience: Audience, salt: str, now: datetime) -> Delivery:
        with self.engine.begin() as conn:
            new_id = conn.execute(insert(deliveries).values(
                name=name, template_name=template_name, state=DeliveryState.EDITING,
                properties=props.model_dump(mode="json"), audience=audience.to_json(),
                salt=salt, last_error="", slowdowns=[], created_at=now)).inserted_primary_key
        assert new_id is not None
        return self.get_delivery(int(new_id[0]))

    def get_delivery(self, delivery_id: int) -> Delivery:
        with self.engine.connect() as conn:
            row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
        if row is None:
            raise NotFoundError(f"no delivery #{delivery_id} (see `postroom deliveries list`)")
        return to_delivery(row)

    def list_deliveries(self) -> list[Delivery]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(deliveries).order_by(deliveries.c.id)).all()
        return [to_delivery(r) for r in rows]

    def move_delivery(self, delivery_id: int, target: DeliveryState, now: datetime, *,
                      error: str | None = None) -> Delivery:
        """Change a delivery's state through the transition table (compare-and-set)."""
        current = self.get_delivery(delivery_id).state
        transition(current, target)
        values: dict[str, Any] = {"state": target}
        if error is not None:
            values["last_error"] = error
        if target is DeliveryState.READY:
            values["analyzed_at"] = now
        if target is DeliveryState.SENDING and self.get_delivery(delivery_id).started_at is None:
            values["started_at"] = now
        if target in (DeliveryState.FINISHED, DeliveryState.STOPPED):
            values["finished_at"] = now
        statement = (update(deliveries)
                     .where(deliveries.c.id == delivery_id, deliveries.c.state == current)
                     .values(**values))
        with self.engine.begin() as conn:
            changed = conn.execute(statement).rowcount
        if changed != 1:
            raise StateError(f"delivery #{delivery_id} changed state meanwhile; try again")
        return self.get_delivery(delivery_id)

    def next_proof_number(self, delivery_id: int) -> int:
        with self.engine.begin() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id)
                         .values(proofs=deliveries.c.proofs + 1))
            return int(conn.scalar(select(deliveries.c.proofs)
                                   .where(deliveries.c.id == delivery_id)) or 0)
