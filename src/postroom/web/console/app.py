"""The operator console: server-rendered pages over the application services (issue 13).

`create_console(postroom)` builds a Starlette app (mounted at ``/console`` by `web.app`) from an
explicit list of routes. Every handler runs as the session's actor through
``postroom.acting_as(actor)``, so the permission checks and the audit records are the service
layer's, never the console's; the console only hides what the actor cannot use
(`Actor.can`). Pages are Jinja2 templates (autoescaped) with htmx, pinned and shipped in
``web/static``; a Content-Security-Policy allows scripts and styles from the console's own
origin only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from postroom.accounts.actor import Actor
from postroom.accounts.permissions import Permission
from postroom.errors import (
    AuthenticationFailed,
    InputError,
    NotFoundError,
    PermissionDenied,
    PostroomError,
    StateError,
)
from postroom.web.console.imports import ImportJobs
from postroom.web.console.sessions import COOKIE, Session, SessionStore, csrf_ok, same_origin

__all__ = ["Console", "Ctx", "create_console"]

T = TypeVar("T")

_HERE = Path(__file__).parent
STATIC = _HERE.parent / "static"
HTMX = "htmx-2.0.4.min.js"

PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
               "frame-ancestors 'none'")
# A template preview is the message's HTML in a frame of its own: no script at all, an opaque
# origin (sandbox), embeddable only by the console.
PREVIEW_POLICY = ("default-src 'none'; img-src * data: cid:; style-src * 'unsafe-inline'; "
                  "font-src * data:; form-action 'none'; base-uri 'none'; sandbox; "
                  "frame-ancestors 'self'")
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store"}
MAX_FORM_FIELDS = 200


@dataclass
class Ctx:
    """One request of a logged-in actor: the session and the services acting as them."""

    request: Request
    session: Session
    services: Any
    console: Console
    flash: list[str] = field(default_factory=list)

    @property
    def actor(self) -> Actor:
        return self.session.actor

    def can(self, permission: str) -> bool:
        """Whether to show what needs `permission` (the service checks it again)."""
        return self.actor.can(Permission(permission))

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A synchronous service method, in the thread pool (the store is synchronous)."""
        return await run_in_threadpool(fn, *args, **kwargs)

    def render(self, template: str, /, status_code: int = 200, **values: Any) -> Response:
        return self.console.render(template, status_code=status_code, ctx=self, **values)


Handler = Callable[[Ctx], Awaitable[Response]]


class Console:
    def __init__(self, postroom: Any, *, https: bool = False) -> None:
        self.postroom = postroom
        self.https = https
        self.sessions = SessionStore(clock=lambda: datetime.now(UTC))
        self.env = Environment(loader=FileSystemLoader(_HERE / "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.tasks: dict[int, asyncio.Task[Any]] = {}  # sends running here, by delivery
        self.send_errors: dict[int, str] = {}  # the last in-process send's failure, by delivery
        self.imports = ImportJobs()  # recipient imports running here, by job id

    # -- responses ---------------------------------------------------------------------------

    def render(self, template: str, /, *, status_code: int = 200, ctx: Ctx | None = None,
               **values: Any) -> Response:
        body = self.env.get_template(template).render(ctx=ctx, htmx=HTMX, **values)
        return secured(HTMLResponse(body, status_code=status_code))

    def login_redirect(self, request: Request) -> Response:
        return secured(RedirectResponse("/console/login", status_code=303))

    # -- the guard every page goes through ---------------------------------------------------

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                if request.headers.get("hx-request"):
                    return secured(Response(status_code=401,
                                            headers={"HX-Redirect": "/console/login"}))
                return self.login_redirect(request)
            try:  # the account as it stands now: disabled ends the session, a new role applies
                session.actor = await run_in_threadpool(
                    self.postroom.accounts.resume_session, session.actor)
            except AuthenticationFailed:
                self.sessions.end(session.id)
                if request.headers.get("hx-request"):
                    return secured(Response(status_code=401,
                                            headers={"HX-Redirect": "/console/login"}))
                return self.login_redirect(request)
            ctx = Ctx(request, session, self.postroom.acting_as(session.actor), self)
            try:
                if request.method == "POST":
                    refusal = await self.refuse_forgery(request, session)
                    if refusal is not None:
                        return refusal
                return await self.guarded(handler, ctx)
            finally:
                await request.close()  # uploaded files' temporary copies
        return endpoint

    async def guarded(self, handler: Handler, ctx: Ctx) -> Response:
        """The handler's page, or the service's refusal with its status: a page, or for an
        htmx request a message htmx puts in the page's ``#flash`` (HX-Retarget)."""
        try:
            return await handler(ctx)
        except PermissionDenied as exc:
            return self.refusal(ctx, 403, "Not allowed", exc)
        except NotFoundError as exc:
            return self.refusal(ctx, 404, "Not found", exc)
        except InputError as exc:
            return self.refusal(ctx, 400, "Refused", exc)
        except StateError as exc:
            return self.refusal(ctx, 409, "Refused", exc)
        except PostroomError as exc:
            return self.refusal(ctx, 500, "Error", exc)

    def refusal(self, ctx: Ctx, status: int, title: str, exc: Exception) -> Response:
        if ctx.request.headers.get("hx-request"):
            response = ctx.render("_flash.html", status_code=status, title=title,
                                  message=str(exc))
            response.headers.update({"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
            return response
        return ctx.render("error.html", status_code=status, title=title, message=str(exc))

    async def refuse_forgery(self, request: Request, session: Session | None) -> Response | None:
        """403 unless the POST comes from the console's own origin with the session's token."""
        scheme = "https" if self.https else request.url.scheme
        if not same_origin(request.headers.get("origin"), request.headers.get("referer"),
                           scheme=scheme, host=request.headers.get("host", "")):
            return forbidden("cross-origin request refused")
        if session is None:
            return None
        offered = request.headers.get("x-csrf-token")
        if offered is None:
            form = await request.form(max_fields=MAX_FORM_FIELDS, max_files=1)
            value = form.get("csrf")
            offered = value if isinstance(value, str) else None
        if not csrf_ok(session, offered):
            return forbidden("missing or wrong CSRF token; reload the page")
        return None


def secured(response: Response, policy: str = PAGE_POLICY) -> Response:
    response.headers.update({**_HEADERS, "Content-Security-Policy": policy,
                             "X-Frame-Options": "SAMEORIGIN" if "sandbox" in policy
                             else "DENY"})
    return response


def forbidden(reason: str) -> Response:
    return secured(Response(f"Forbidden: {reason}\n", status_code=403, media_type="text/plain"))


def create_console(postroom: Any, *, https: bool = False) -> Starlette:
    """The console app for one Postroom; `https` marks its cookies Secure."""
    from postroom.web.console import views_auth, views_deliveries, views_pages

    console = Console(postroom, https=https)
    routes: list[BaseRoute] = [
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        *views_auth.routes(console),
        *views_deliveries.routes(console),
        *views_pages.routes(console),
    ]
    app = Starlette(routes=routes)
    app.state.console = console
    return app


def route(console: Console, path: str, handler: Handler, methods: list[str] | None = None,
          ) -> Route:
    return Route(path, console.page(handler), methods=methods or ["GET"])


def redirect(path: str) -> Response:
    return secured(RedirectResponse(path, status_code=303))
