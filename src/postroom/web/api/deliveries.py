"""``/deliveries``: create, list, the report, logs, and the lifecycle actions.

Sending from the API (`POST /deliveries/{id}/send`): the delivery is started first (analysis
if needed, then `sending`), in the request, so a refusal (permission, state, a failed analysis)
reaches the caller. Then, with SQLite, this server process sends it in a background task; with
PostgreSQL it is left to `postroom worker`s. The response says which (`mode`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel

from postroom.accounts.guard import GuardedView
from postroom.web.api.auth import Services
from postroom.web.api.calls import call
from postroom.web.api.pagination import Page, PageQuery, page_of, paging
from postroom.web.api.schemas import DeliveryCreate, ProofRequest, given
from postroom.web.api.shapes import jsonable

__all__ = ["SendStarted", "router"]

log = logging.getLogger("postroom.web.api")
DeliveryId = Annotated[int, Path(ge=1, le=2**62)]
Word = Annotated[str | None, Query(max_length=64)]


def delivery_json(delivery: Any) -> dict[str, Any]:
    return {"id": delivery.id, "name": delivery.name, "template": delivery.template_name,
            "state": jsonable(delivery.state), "email_bcc": delivery.properties.email_bcc,
            "audience": delivery.audience.to_json(), "last_error": delivery.last_error,
            "created_at": jsonable(delivery.created_at),
            "analyzed_at": jsonable(delivery.analyzed_at),
            "started_at": jsonable(delivery.started_at),
            "finished_at": jsonable(delivery.finished_at)}


class SendStarted(BaseModel):
    delivery: dict[str, Any]
    mode: Literal["in_process", "workers"]
    detail: str


async def _send_in_process(view: GuardedView, delivery_id: int) -> None:
    try:
        await view.sending.send(delivery_id)
    except Exception:  # a background task has nobody to answer: the log, and the report
        log.exception("sending delivery #%d in the server process failed", delivery_id)


def router() -> APIRouter:
    api = APIRouter(prefix="/deliveries", tags=["deliveries"])

    @api.post("", status_code=201, summary="Create a delivery from a template")
    async def create_delivery(services: Services, body: DeliveryCreate) -> dict[str, Any]:
        delivery, _ = await call(services.deliveries.create_delivery, body.template,
                                 name=body.name, overrides=given(body.overrides),
                                 filters=list(body.filters))
        return delivery_json(delivery)

    @api.get("", response_model=Page, summary="List deliveries, newest first")
    async def list_deliveries(services: Services,
                              page: Annotated[PageQuery, Depends(paging)],
                              state: Word = None) -> Page:
        rows = await call(services.deliveries.list_deliveries)
        if state is not None:
            rows = [d for d in rows if d.state == state]
        return page_of(rows, page, shape=delivery_json)

    @api.get("/{delivery_id}", summary="The delivery's report")
    async def get_delivery(services: Services, delivery_id: DeliveryId) -> dict[str, Any]:
        report = await call(services.reports.report, delivery_id)
        return {**report.to_json(), "delivery": delivery_json(report.delivery)}

    @api.get("/{delivery_id}/logs", response_model=Page, summary="Delivery logs, filtered")
    async def logs(services: Services, delivery_id: DeliveryId,
                   page: Annotated[PageQuery, Depends(paging)], status: Word = None,
                   reason: Word = None, archive: Word = None,
                   email: Annotated[str | None, Query(max_length=320)] = None) -> Page:
        rows = await call(services.deliveries.logs, delivery_id, status=status, reason=reason,
                          archive=archive, email=email, limit=page.limit + 1,
                          offset=page.offset)
        return page_of(rows, page, sliced=True)

    @api.post("/{delivery_id}/analyze", summary="Prepare: analyze the audience and content")
    async def analyze(services: Services, delivery_id: DeliveryId) -> dict[str, Any]:
        report = await call(services.deliveries.analyze, delivery_id)
        shown: dict[str, Any] = report.to_json()
        return shown

    @api.post("/{delivery_id}/proof", summary="Send a proof (never archived, never logged)")
    async def proof(services: Services, delivery_id: DeliveryId,
                    body: ProofRequest | None = None) -> dict[str, Any]:
        body = body or ProofRequest()
        report = await services.proofs.proof(delivery_id, to=list(body.to) or None,
                                             recipient=body.recipient)
        shown: dict[str, Any] = report.to_json()
        return shown

    @api.post("/{delivery_id}/send", status_code=202, response_model=SendStarted,
              summary="Start sending (in this process with SQLite, by workers with PostgreSQL)")
    async def send(request: Request, services: Services,
                   delivery_id: DeliveryId) -> SendStarted:
        delivery = await call(services.deliveries.start, delivery_id)
        postroom = request.app.state.postroom
        if postroom.settings.database_url.startswith("sqlite"):
            task = asyncio.create_task(_send_in_process(services, delivery_id))
            tasks: set[asyncio.Task[None]] = request.app.state.sending
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return SendStarted(delivery=delivery_json(delivery), mode="in_process",
                               detail="this server sends it (SQLite); follow "
                               f"/api/v1/deliveries/{delivery_id}/events")
        return SendStarted(delivery=delivery_json(delivery), mode="workers",
                           detail="`postroom worker` processes send it (PostgreSQL); follow "
                           f"/api/v1/deliveries/{delivery_id}/events")

    @api.post("/{delivery_id}/pause", summary="Pause sending")
    async def pause(services: Services, delivery_id: DeliveryId) -> dict[str, Any]:
        return delivery_json(await call(services.deliveries.pause, delivery_id))

    @api.post("/{delivery_id}/resume", summary="Resume sending")
    async def resume(services: Services, delivery_id: DeliveryId) -> dict[str, Any]:
        return delivery_json(await call(services.deliveries.resume, delivery_id))

    @api.post("/{delivery_id}/stop", summary="Stop for good (pending messages cancelled)")
    async def stop(services: Services, delivery_id: DeliveryId) -> dict[str, Any]:
        return delivery_json(await call(services.deliveries.stop, delivery_id))

    return api
