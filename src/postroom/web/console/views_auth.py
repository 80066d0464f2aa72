"""Log-in, log-out and the dashboard."""

from __future__ import annotations

from collections import Counter

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from postroom.errors import PostroomError
from postroom.web.console.app import Console, Ctx, redirect, route
from postroom.web.console.sessions import COOKIE

MAX_CREDENTIAL = 1024


def routes(console: Console) -> list[BaseRoute]:
    async def login_form(request: Request) -> Response:
        if console.sessions.get(request.cookies.get(COOKIE)) is not None:
            return redirect("/console/")
        return console.render("login.html", error=None, name="")

    async def login(request: Request) -> Response:
        refusal = await console.refuse_forgery(request, None)
        if refusal is not None:
            return refusal
        form = await request.form(max_fields=10, max_files=0)
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        if not name or not password or len(name) + len(password) > MAX_CREDENTIAL:
            return console.render("login.html", status_code=400, name=name[:100],
                                  error="Enter your name and password.")
        remote = request.client.host if request.client else None
        try:
            actor = await run_in_threadpool(console.postroom.accounts.authenticate_password,
                                            name, password, remote=remote)
        except PostroomError as exc:
            return console.render("login.html", status_code=401, name=name, error=str(exc))
        session = console.sessions.create(actor)
        response = redirect("/console/")
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict",
                            secure=console.https, path="/console")
        return response

    async def logout(ctx: Ctx) -> Response:
        console.sessions.end(ctx.session.id)
        response = redirect("/console/login")
        response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict",
                               secure=console.https)
        return response

    async def dashboard(ctx: Ctx) -> Response:
        s = ctx.services
        deliveries = await ctx.call(s.deliveries.list_deliveries)
        by_state = Counter(str(d.state) for d in deliveries)
        sending = [d for d in deliveries if str(d.state) == "sending"]
        progress = {d.id: await ctx.call(s.reports.report, d.id, timeline=False)
                    for d in sending[:10]}
        archive: dict[str, int] = {}
        if ctx.can("archive:read"):
            rows = (await ctx.call(s.archive.status)).deliveries
            archive = {k: sum(row[k] for row in rows) for k in ("pending", "failed")}
        bounces = (await ctx.call(s.bounces.list_bounces, limit=10)
                   if ctx.can("bounces:read") else [])
        return ctx.render("dashboard.html", by_state=sorted(by_state.items()),
                          sending=sending, progress=progress, archive=archive,
                          bounces=bounces)

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        route(console, "/logout", logout, ["POST"]),
        route(console, "/", dashboard),
    ]

