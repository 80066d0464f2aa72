"""``/quarantine`` and ``/rules``: held addresses and their release; qualification rules."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from postroom.web.api.auth import Services
from postroom.web.api.calls import call
from postroom.web.api.pagination import Page, PageQuery, page_of, paging
from postroom.web.api.schemas import RuleCreate

__all__ = ["router"]


def _address(row: Any) -> dict[str, Any]:
    return {"address": row.address, "status": str(row.status),
            "status_since": row.status_since.isoformat(), "error_count": row.error_count,
            "last_error_at": row.last_error_at.isoformat() if row.last_error_at else None,
            "last_reason": int(row.last_reason) if row.last_reason is not None else None,
            "last_text": row.last_text}


def _rule(rule: Any) -> dict[str, Any]:
    pattern = getattr(rule, "pattern", None)
    return {"id": rule.id, "pattern": getattr(pattern, "pattern", pattern) or "",
            "status": rule.status or "", "failure_type": str(rule.failure_type),
            "reason": int(rule.reason), "description": rule.description}


def router() -> APIRouter:
    api = APIRouter(tags=["bounces"])

    @api.get("/quarantine", response_model=Page, summary="Addresses held, latest first")
    async def quarantine(
        services: Services, page: Annotated[PageQuery, Depends(paging)],
        status: Annotated[list[str] | None, Query(max_length=4)] = None,
        domain: Annotated[str | None, Query(max_length=255)] = None,
    ) -> Page:
        statuses = status or ["quarantine", "denylisted"]
        rows = await call(services.quarantine.list_addresses, statuses=statuses,
                          domain=domain, limit=page.offset + page.limit + 1)
        return page_of(rows, page, shape=_address)

    @api.post("/quarantine/{address}/release", summary="Make an address valid again")
    async def release(services: Services,
                      address: Annotated[str, Path(min_length=3, max_length=320)]
                      ) -> dict[str, Any]:
        released = await call(services.quarantine.release_addresses, [address])
        return {"address": address, "released": released}

    @api.get("/rules", response_model=Page, summary="Qualification rules, in order")
    async def rules(services: Services, page: Annotated[PageQuery, Depends(paging)]) -> Page:
        return page_of(await call(services.bounces.rules), page, shape=_rule)

    @api.post("/rules", status_code=201, summary="Add a qualification rule")
    async def add_rule(services: Services, body: RuleCreate) -> dict[str, Any]:
        row = await call(services.bounces.add_rule, rule_id=body.id, pattern=body.pattern,
                         status=body.status, failure_type=body.failure_type,
                         reason=body.reason, description=body.description,
                         position=body.position)
        return _rule(row)

    return api
