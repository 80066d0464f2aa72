"""``GET /deliveries/{id}/events``: server-sent events with a delivery's counts.

One ``counts`` event at once, then one each time the counts or the state change (polled every
`poll_seconds`), while the delivery is analyzing, sending or paused; an ``end`` event when it
is anything else (ready, finished, stopped, failed), after ``?max_seconds=`` (default 600, at
most `MAX_SECONDS`), or after `max_events` events: a stream is bounded whatever
the delivery does. It also ends when the client goes away. At most `max_streams` are open at
once in a server (each polls the store): past that, 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response, StreamingResponse

from postroom.accounts.guard import GuardedView
from postroom.web.api.auth import Services
from postroom.web.api.calls import call
from postroom.web.api.problems import problem

__all__ = ["EventLimits", "router"]

LIVE = frozenset({"analyzing", "sending", "paused"})
MAX_SECONDS = 3600
MaxSeconds = Annotated[int, Query(ge=1, le=MAX_SECONDS,
                                  description="End the stream after this long.")]


@dataclass(frozen=True)
class EventLimits:
    poll_seconds: float = 0.5
    max_events: int = 10_000
    max_streams: int = 50  # open at once in this server; each polls the store


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _counts(report: Any) -> dict[str, Any]:
    shown = report.to_json()
    return {"delivery": shown["delivery"], "state": shown["state"], "total": shown["total"],
            "by_status": shown["by_status"], "archive": shown["archive"],
            "throughput_per_second": shown["throughput_per_second"]}


async def stream(request: Request, services: GuardedView, delivery_id: int,
                 limits: EventLimits, max_seconds: float) -> AsyncIterator[bytes]:
    started = time.monotonic()
    last: dict[str, Any] | None = None
    sent = 0
    reason = "done"
    while True:
        counts = _counts(await call(services.reports.report, delivery_id,
                                      timeline=False))
        if counts != last:
            yield _event("counts", counts)
            sent += 1
            last = counts
        if counts["state"] not in LIVE:
            break
        if sent >= limits.max_events or time.monotonic() - started >= max_seconds:
            reason = "limit"
            break
        await asyncio.sleep(limits.poll_seconds)
        if await request.is_disconnected():
            return
    yield _event("end", {"delivery": delivery_id, "state": last["state"] if last else None,
                         "reason": reason})


def router(limits: EventLimits) -> APIRouter:
    api = APIRouter(prefix="/deliveries", tags=["deliveries"])
    open_streams = [0]  # streams open now (one event loop: no lock needed)

    @api.get("/{delivery_id}/events", summary="Live counts (server-sent events)",
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(request: Request, services: Services,
                     delivery_id: Annotated[int, Path(ge=1, le=2**62)],
                     max_seconds: MaxSeconds = 600,
                     ) -> Response:
        await call(services.deliveries.get_delivery, delivery_id)  # 404 before the stream
        if open_streams[0] >= limits.max_streams:
            return problem(503, "Too many event streams",
                           f"{limits.max_streams} event streams are open on this server; try "
                           "again later, or poll GET /deliveries/{id}",
                           headers={"Retry-After": "5"}, limit=limits.max_streams)
        open_streams[0] += 1

        async def counted() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream(request, services, delivery_id, limits, max_seconds):
                    yield chunk
            finally:
                open_streams[0] -= 1

        return StreamingResponse(counted(),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    return api
