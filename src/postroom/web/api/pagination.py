"""Pages of a list: ``?limit=&offset=`` bounded, and the response's ``next_offset``.

Every list endpoint answers ``{"items": [...], "limit", "offset", "next_offset"}``;
``next_offset`` is null on the last page. The audit log pages by id instead (``before_id``),
since new entries arrive at its head while a client pages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel

from postroom.web.api.shapes import jsonable

__all__ = ["MAX_LIMIT", "MAX_OFFSET", "Page", "PageQuery", "page_of", "paging"]

MAX_LIMIT = 200
MAX_OFFSET = 1_000_000


class Page(BaseModel):
    items: list[Any]
    limit: int
    offset: int
    next_offset: int | None
    total: int | None = None  # how many match, where the service counts them


@dataclass(frozen=True)
class PageQuery:
    limit: int
    offset: int


def paging(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")] = 0,
) -> PageQuery:
    return PageQuery(limit=limit, offset=offset)


def page_of(rows: Sequence[Any], query: PageQuery, *, sliced: bool = False,
            shape: Callable[[Any], Any] = jsonable) -> Page:
    """A page from `rows`: the whole list (sliced here), or, with `sliced`, a window the
    service already cut at `offset` holding up to limit + 1 rows (the extra one says a next
    page exists)."""
    window = list(rows) if sliced else list(rows[query.offset:query.offset + query.limit + 1])
    more = len(window) > query.limit
    return Page(items=[shape(r) for r in window[:query.limit]], limit=query.limit,
                offset=query.offset, next_offset=query.offset + query.limit if more else None)
