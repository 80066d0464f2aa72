"""``/recipients``: import a CSV (multipart upload; the per-row report the CLI prints) and list
recipients matching a search, a page at a time.

The upload is streamed to a temporary file (bounded by web.api_max_upload_bytes, see
`guard.BodyLimit`), imported from there by the recipients service, and removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile

from postroom.web.api.auth import Services
from postroom.web.api.calls import call
from postroom.web.api.pagination import Page, PageQuery, paging

__all__ = ["router"]

_CHUNK = 1 << 16
Encoding = Annotated[str, Form(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.:-]+$",
                               description="The file's character encoding.")]


async def _spool(upload: UploadFile) -> Path:
    handle, name = tempfile.mkstemp(prefix="postroom-import-", suffix=".csv")
    with os.fdopen(handle, "wb") as out:
        while chunk := await upload.read(_CHUNK):
            out.write(chunk)
    return Path(name)


def router() -> APIRouter:
    api = APIRouter(prefix="/recipients", tags=["recipients"])

    @api.post("/import", summary="Import recipients from a CSV file")
    async def import_recipients(services: Services, file: Annotated[UploadFile, File()],
                                encoding: Encoding = "utf-8") -> dict[str, Any]:
        path = await _spool(file)
        try:
            report = await call(services.recipients.import_recipients, path,
                                encoding=encoding)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        shown: dict[str, Any] = report.to_json()
        return shown

    @api.get("", response_model=Page,
             summary="Recipients whose address or name matches, and every filter")
    async def list_recipients(
        services: Services, page: Annotated[PageQuery, Depends(paging)],
        search: Annotated[str | None, Query(
            max_length=320, description="Part of the address, first or last name.")] = None,
        filters: Annotated[list[str] | None, Query(
            alias="filter", max_length=10, description="A delivery's audience filter: FIELD=VALUE, "
            "FIELD!=VALUE or FIELD~TEXT (contains, any case), on a column (email, first_name, "
            "last_name, email_format, opted_out) or a custom field; repeat to combine (all "
            "must match).")] = None,
    ) -> Page:
        found = await call(services.recipients.list_recipients, search=search,
                           filters=filters or (), limit=page.limit, offset=page.offset)
        shown = found.to_json()
        more = page.offset + len(found.recipients) < found.total
        return Page(items=shown["items"], limit=page.limit, offset=page.offset,
                    next_offset=page.offset + page.limit if more else None,
                    total=found.total)

    return api
