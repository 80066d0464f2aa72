"""`create_api(postroom)`: the FastAPI application mounted at ``/api/v1``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI

from postroom.web.api import bounces, deliveries, events, instance, recipients, templates
from postroom.web.api.events import EventLimits
from postroom.web.api.guard import BodyLimit, CatchAll
from postroom.web.api.problems import PROBLEM, install_problem_handlers

__all__ = ["PREFIX", "create_api"]

PREFIX = "/api/v1"

_PROBLEM_RESPONSE: dict[int | str, dict[str, Any]] = {
    status: {"description": title, "content": {PROBLEM: {}}}
    for status, title in ((401, "No valid API token"), (403, "A permission is missing"),
                          (404, "Not found"), (409, "Not in this state"),
                          (413, "Body too large"), (422, "Invalid input"))}


def create_api(postroom: Any, *, events_limits: EventLimits | None = None) -> FastAPI:
    """The API over `postroom` (the `Postroom` container); mount it at `PREFIX`."""
    web = postroom.settings.web
    api = FastAPI(title="Postroom", version="1", openapi_url="/openapi.json",
                  docs_url=None, redoc_url=None, responses=_PROBLEM_RESPONSE,
                  description="Postroom's REST API: recipients, templates, deliveries, "
                  "bounces and quarantine, the archive and the audit log. Authenticate with "
                  "`Authorization: Bearer <token>` (`postroom tokens create`).",
                  servers=[{"url": PREFIX}])
    api.state.postroom = postroom
    api.state.sending = set[asyncio.Task[None]]()
    install_problem_handlers(api)
    for router in (recipients.router(), templates.router(), deliveries.router(),
                   events.router(events_limits or EventLimits()), bounces.router(),
                   instance.router()):
        api.include_router(router)
    api.add_middleware(BodyLimit, json_bytes=web.api_max_json_bytes,
                       upload_bytes=web.api_max_upload_bytes)
    api.add_middleware(CatchAll)
    return api
