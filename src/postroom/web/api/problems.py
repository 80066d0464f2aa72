"""Every error of the REST API as an RFC 9457 problem (``application/problem+json``).

A `PostroomError` gets the status and title of its class from the one error table
(`postroom.app.errors`); request validation gets 422 with a per-field ``errors`` list; an
HTTP error of the framework (404 route, 405 method) keeps its status; anything else is a bug:
500 with a title and a reference, its traceback logged and never sent.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from postroom.app.errors import error_kind, mapping_for
from postroom.errors import AuthenticationFailed, PermissionDenied, PostroomError

__all__ = ["PROBLEM", "BodyTooLarge", "field_errors", "install_problem_handlers", "problem"]

PROBLEM = "application/problem+json"
TYPE_PREFIX = "urn:postroom:problem:"
log = logging.getLogger("postroom.web.api")


class BodyTooLarge(HTTPException):
    """A request body passed its bound (web.api_max_json_bytes / api_max_upload_bytes).

    An `HTTPException`, so that FastAPI lets it through its body parsing unchanged."""

    def __init__(self, limit: int, what: str):
        super().__init__(413, f"the {what} is over {limit} bytes",
                         headers={"Connection": "close"})
        self.limit = limit


def problem(status: int, title: str, detail: str | None = None, *, kind: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A problem response; `kind` names its type (``urn:postroom:problem:<kind>``), else the
    type is ``about:blank`` and the title the status's own phrase (RFC 9457 §4.2.1)."""
    body: dict[str, Any] = {"type": f"{TYPE_PREFIX}{kind}" if kind else "about:blank",
                            "status": status, "title": title}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"


def _where(loc: Sequence[Any]) -> str:
    """`body.template`, `query.limit`: where a field is, without FastAPI's wrapping."""
    parts = [str(p) for p in loc]
    return ".".join(parts) if parts else "request"


def field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic's errors as ``{"field": ..., "message": ..., "type": ...}``, no input echoed
    (the input may be a whole template, or a secret)."""
    return [{"field": _where(e.get("loc", ())), "message": str(e.get("msg", "invalid")),
             "type": str(e.get("type", "value_error"))} for e in errors]


def install_problem_handlers(app: FastAPI) -> None:
    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = field_errors(exc.errors())
        return problem(422, "Invalid request", f"{len(errors)} field(s) are not valid",
                       kind="validation", errors=errors)

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = _phrase(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) else None
        if isinstance(exc, BodyTooLarge):
            return problem(413, title, detail, kind="body_too_large", limit=exc.limit,
                           headers=dict(exc.headers) if exc.headers else None)
        return problem(exc.status_code, title, detail,
                       headers=dict(exc.headers) if exc.headers else None)

    async def unauthenticated(request: Request, exc: Exception) -> Response:
        mapping = mapping_for(exc)  # 401, or 429 for a throttled log-in
        challenge = {"WWW-Authenticate": 'Bearer realm="postroom"'}
        return problem(mapping.http_status, mapping.title, str(exc), kind="authentication",
                       headers=challenge if mapping.http_status == 401 else None)

    async def postroom_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PostroomError)
        mapping = mapping_for(exc)
        if mapping.http_status >= 500:
            log.error("%s %s: %s: %s", request.method, request.url.path,
                      type(exc).__name__, exc)
        kind = error_kind(exc)
        extra: dict[str, Any] = {}
        if isinstance(exc, PermissionDenied):
            extra["permission"] = exc.permission
        field = getattr(exc, "field", None)
        if isinstance(field, str) and field:
            extra["errors"] = [{"field": f"body.{field}", "message": str(exc), "type": kind}]
        detail = str(exc) if mapping.http_status < 500 or mapping.http_status in (502, 503) \
            else "the server could not complete the request; see its log"
        return problem(mapping.http_status, mapping.title, detail, kind=kind, **extra)

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(AuthenticationFailed, unauthenticated)
    app.add_exception_handler(PostroomError, postroom_error)


def internal_error(exc: BaseException, method: str, path: str) -> Response:
    """A bug: logged with its traceback under a reference the client is given."""
    reference = secrets.token_hex(6)
    log.error("%s %s failed (reference %s)", method, path, reference, exc_info=exc)
    return problem(500, "Internal error", kind="internal",
                   detail=f"the server failed on this request; reference {reference} in its log",
                   reference=reference)
