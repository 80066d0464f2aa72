"""``/archive/status``, ``/audit`` and ``/health``: the instance as a whole."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel

from postroom.accounts.records import AuditFilter
from postroom.web.api.auth import Services
from postroom.web.api.calls import call
from postroom.web.api.pagination import MAX_LIMIT
from postroom.web.api.shapes import jsonable

__all__ = ["AuditPage", "router"]

Word = Annotated[str | None, Query(max_length=100)]


class AuditPage(BaseModel):
    items: list[Any]
    limit: int
    next_before_id: int | None


def router() -> APIRouter:
    api = APIRouter(tags=["instance"])

    @api.get("/archive/status", summary="Archive copies per delivery: pending, archived, failed")
    async def archive_status(
        services: Services,
        delivery: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    ) -> dict[str, Any]:
        status = await call(services.archive.status, delivery)
        shown: dict[str, Any] = jsonable(status)
        return shown

    @api.get("/audit", response_model=AuditPage, summary="The audit log, newest first")
    async def audit(
        services: Services,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
        actor: Word = None, action: Word = None,
        outcome: Annotated[str | None, Query(pattern="^(ok|denied|error)$")] = None,
        since: Annotated[AwareDatetime | None, Query(
            description="ISO 8601 with its offset (2026-12-05T08:00:00Z).")] = None,
        until: Annotated[AwareDatetime | None, Query()] = None,
    ) -> AuditPage:
        filters = AuditFilter(actor=actor, action=action, outcome=outcome,  # type: ignore[arg-type]
                              since=since, until=until)
        rows = await call(services.accounts.audit, filters, limit=limit + 1,
                          before_id=before_id)
        more = len(rows) > limit
        rows = rows[:limit]
        return AuditPage(items=[jsonable(r) for r in rows], limit=limit,
                         next_before_id=rows[-1].id if more and rows else None)

    @api.get("/health", summary="The instance's health, with its details")
    async def health(services: Services) -> dict[str, Any]:
        result = await call(services.operations.health)
        shown: dict[str, Any] = result.to_json()
        return shown

    return api
