"""Postroom's web server: mirror pages, one-click unsubscribe (RFC 8058), health and metrics.

Built explicitly from a list of routes around one Postroom instance; no global state. Handlers
are plain functions (Starlette runs them in its thread pool, since the store is synchronous).
"""

from __future__ import annotations

import html

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from postroom.service import Postroom
from postroom.web.metrics import metrics_registry, render_metrics

__all__ = ["create_app"]

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto">{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)


def _not_found() -> Response:
    return PlainTextResponse("Not found", status_code=404)


def create_app(postroom: Postroom) -> Starlette:
    def mirror(request: Request) -> Response:
        token = request.path_params["token"]
        if token == "proof":
            return PlainTextResponse("Mirror pages are not available for proofs.",
                                     status_code=404)
        page = postroom.open_mirror(token)
        if page is None:
            return _not_found()
        if page.expired:
            return PlainTextResponse("This page has expired.", status_code=410)
        return Response(page.html, media_type=f"text/html; charset={page.charset}",
                        headers={"Cache-Control": "private, max-age=3600",
                                 "X-Robots-Tag": "noindex"})

    def confirm(request: Request) -> Response:
        token = request.path_params["token"]
        recipient = postroom.check_unsubscribe(token)
        if recipient is None:
            return _not_found()
        action = html.escape(str(request.url.path))
        return _page("Unsubscribe", (
            f"<h1>Unsubscribe</h1><p>Stop sending messages to "
            f"<b>{html.escape(recipient.email)}</b>?</p>"
            f'<form method="post" action="{action}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'))

    async def unsubscribe(request: Request) -> Response:
        # RFC 8058: the POST with body List-Unsubscribe=One-Click is the consent; no page,
        # no cookie, no redirect is needed. The confirmation form posts the same field.
        form = await request.form()
        if form.get("List-Unsubscribe") != "One-Click":
            return PlainTextResponse("Expected List-Unsubscribe=One-Click", status_code=400)
        recipient = await run_in_threadpool(postroom.unsubscribe,
                                            request.path_params["token"])
        if recipient is None:
            return _not_found()
        return _page("Unsubscribed", f"<h1>Unsubscribed</h1><p>{html.escape(recipient.email)} "
                     "will receive no more messages from these deliveries.</p>")

    def health(request: Request) -> Response:
        result = postroom.health()
        return JSONResponse(result.to_json(), status_code=200 if result.ok else 503)

    registry = metrics_registry(postroom)

    def metrics(request: Request) -> Response:
        try:
            body = render_metrics(registry)
        except SQLAlchemyError as exc:
            return PlainTextResponse(f"database unreachable: {type(exc).__name__}\n",
                                     status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[
        Route("/m/{token}", mirror, methods=["GET"]),
        Route("/u/{token}", confirm, methods=["GET"]),
        Route("/u/{token}", unsubscribe, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ])
