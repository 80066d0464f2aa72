"""Postroom's web server: mirror pages, one-click unsubscribe (RFC 8058), health, metrics and
the REST API (`postroom.web.api`, mounted at /api/v1).

Built explicitly from a list of routes around one Postroom instance; no global state. Handlers
are plain functions (Starlette runs them in its thread pool, since the store is synchronous).

Hardened against hostile clients (issue 12): every response carries a Content-Security-Policy
(no script; the mirror page is a sandbox, an opaque origin, so a `javascript:` link a recipient's
data put in it is dead), `nosniff`, `no-referrer` (a link's token must not leak) and no framing;
an unsubscribe POST has its token checked before its body is read, and a body over
`MAX_BODY_BYTES` gets 413 unread; `/health` says ok / not ok, and its details only to a caller
with `web.health_token`.
"""

from __future__ import annotations

import hmac
import html

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Message

from postroom.app import Postroom
from postroom.web.api import create_api
from postroom.web.api.app import PREFIX
from postroom.web.api.problems import problem
from postroom.web.console import create_console
from postroom.web.metrics import metrics_registry, render_metrics

__all__ = ["MAX_BODY_BYTES", "create_app"]

MAX_BODY_BYTES = 4096  # a one-click POST is a few dozen bytes (a few hundred as multipart)

_COMMON = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY"}
# Postroom's own pages: an inline style, a form posting to the same page, nothing else.
_PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                "base-uri 'none'; frame-ancestors 'none'")
# A mirror page is the message's HTML: images, styles and fonts from anywhere, links that open
# (in a new context when they ask), no script, no form, and an opaque origin (sandbox).
_MIRROR_POLICY = ("default-src 'none'; img-src * data: cid:; style-src * 'unsafe-inline'; "
                  "font-src * data:; media-src * data:; form-action 'none'; base-uri 'none'; "
                  "frame-ancestors 'none'; sandbox allow-popups "
                  "allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation")


def _secured(response: Response, policy: str = _PAGE_POLICY) -> Response:
    response.headers.update({**_COMMON, "Content-Security-Policy": policy})
    return response

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto">{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> Response:
    return _secured(HTMLResponse(_PAGE.format(title=html.escape(title), body=body),
                                 status_code=status))


def _text(text: str, status: int) -> Response:
    return _secured(PlainTextResponse(text, status_code=status))


def _closing(response: Response) -> Response:
    response.headers["Connection"] = "close"
    return response


def _not_found() -> Response:
    return _text("Not found", 404)


async def _bounded_body(request: Request) -> bytes | None:
    """The request's body, or None when it is over MAX_BODY_BYTES: refused unread when its
    Content-Length says so, else as soon as more than that has arrived."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _authorized(request: Request, token: str) -> bool:
    offered = request.headers.get("authorization", "")
    return bool(token) and offered.startswith("Bearer ") and hmac.compare_digest(
        offered.removeprefix("Bearer ").encode(), token.encode())


def create_app(postroom: Postroom) -> Starlette:
    def mirror(request: Request) -> Response:
        token = request.path_params["token"]
        if token == "proof":
            return _text("Mirror pages are not available for proofs.", 404)
        page = postroom.links.open_mirror(token)
        if page is None:
            return _not_found()
        if page.expired:
            return _text("This page has expired.", 410)
        return _secured(Response(page.html, media_type=f"text/html; charset={page.charset}",
                                 headers={"Cache-Control": "private, max-age=3600",
                                          "X-Robots-Tag": "noindex"}), _MIRROR_POLICY)

    def confirm(request: Request) -> Response:
        token = request.path_params["token"]
        recipient = postroom.links.check_unsubscribe(token)
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
        # The token first, then a bounded body: an attacker's POST costs no reading.
        # A refusal closes the connection, so the server takes none of the rest.
        token = request.path_params["token"]
        if await run_in_threadpool(postroom.links.check_unsubscribe, token) is None:
            return _closing(_not_found())
        body = await _bounded_body(request)
        if body is None:
            return _closing(_text(f"Request body over {MAX_BODY_BYTES} bytes", 413))

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form(max_files=0, max_fields=8)
        if form.get("List-Unsubscribe") != "One-Click":
            return _text("Expected List-Unsubscribe=One-Click", 400)
        recipient = await run_in_threadpool(postroom.links.unsubscribe, token)
        if recipient is None:
            return _not_found()
        return _page("Unsubscribed", f"<h1>Unsubscribed</h1><p>{html.escape(recipient.email)} "
                     "will receive no more messages from these deliveries.</p>")

    health_token = postroom.settings.web.health_token.get_secret_value()

    def health(request: Request) -> Response:
        """ok / not ok for anyone; the details (problems, counts) only with the token."""
        result = postroom.operations.health()
        shown = result.to_json() if _authorized(request, health_token) else {
            "status": "ok" if result.ok else "problem"}
        return _secured(JSONResponse(shown, status_code=200 if result.ok else 503))

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
        Mount("/console", app=create_console(
            postroom, https=postroom.settings.web.base_url.startswith("https:"))),
        Mount(PREFIX, app=create_api(postroom)),
    ], exception_handlers={404: _api_aware_not_found})


async def _api_aware_not_found(request: Request, exc: Exception) -> Response:
    """A path under /api/v1 that the mount did not take (its pattern does not match a line
    break, say) is still answered as a problem; every other path as before."""
    if request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/"):
        return problem(404, "Not Found")
    return PlainTextResponse("Not Found", status_code=404)
