"""Deliveries: list, create from a template, prepare, proof, send with live progress, pause,
resume, stop, resend to failures, the report and the logs.

A send started here runs in this server process when the store is SQLite (one writer: there
are no workers to hand it to); with PostgreSQL the delivery is only moved to `sending` and
`postroom worker`s take it. Either way the page follows it by polling a fragment.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute

from postroom.domain.states import DeliveryState, LogStatus
from postroom.errors import InputError
from postroom.web.console.app import Console, Ctx, redirect, route

log = logging.getLogger(__name__)

ACTIVE = {DeliveryState.SENDING, DeliveryState.ANALYZING}
MAX_PROOF_ADDRESSES = 20
LOG_PAGE = 200


def _id(ctx: Ctx) -> int:
    try:
        return int(ctx.request.path_params["id"])
    except ValueError as exc:
        raise InputError("not a delivery number") from exc


async def _form(ctx: Ctx) -> dict[str, str]:
    form = await ctx.request.form(max_fields=50, max_files=0)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _in_process(console: Console) -> bool:
    return str(console.postroom.settings.database_url).startswith("sqlite")


def routes(console: Console) -> list[BaseRoute]:
    async def index(ctx: Ctx) -> Response:
        s = ctx.services
        deliveries = await ctx.call(s.deliveries.list_deliveries)
        templates = (await ctx.call(s.templates.list_templates)
                     if ctx.can("deliveries:manage") else [])
        return ctx.render("deliveries.html", deliveries=deliveries, templates=templates)

    async def create(ctx: Ctx) -> Response:
        form = await _form(ctx)
        overrides: dict[str, Any] = {}
        if form.get("email_bcc") in ("on", "off"):
            overrides["email_bcc"] = form["email_bcc"] == "on"
        if form.get("proof_addresses", "").strip():
            overrides["proof_addresses"] = [a.strip() for a in
                                            form["proof_addresses"].split(",") if a.strip()]
        filters = [f for f in form.get("filter", "").splitlines() if f.strip()]
        delivery, _ = await ctx.call(ctx.services.deliveries.create_delivery,
                                     form.get("template", ""),
                                     name=form.get("name", "").strip() or None,
                                     overrides=overrides, filters=filters or None)
        return redirect(f"/console/deliveries/{delivery.id}")

    async def detail(ctx: Ctx) -> Response:
        delivery_id = _id(ctx)
        delivery = await ctx.call(ctx.services.deliveries.get_delivery, delivery_id)
        report = await ctx.call(ctx.services.reports.report, delivery_id)
        return ctx.render("delivery.html", d=delivery, report=report,
                          **_progress_values(ctx, delivery, report))

    async def progress(ctx: Ctx) -> Response:
        delivery_id = _id(ctx)
        delivery = await ctx.call(ctx.services.deliveries.get_delivery, delivery_id)
        report = await ctx.call(ctx.services.reports.report, delivery_id, timeline=False)
        return ctx.render("_progress.html", d=delivery, report=report,
                          **_progress_values(ctx, delivery, report))

    async def analyze(ctx: Ctx) -> Response:
        analysis = await ctx.call(ctx.services.deliveries.analyze, _id(ctx))
        return ctx.render("_analysis.html", analysis=analysis)

    async def proof(ctx: Ctx) -> Response:
        form = await _form(ctx)
        to = [a.strip() for a in form.get("to", "").replace("\n", ",").split(",") if a.strip()]
        if len(to) > MAX_PROOF_ADDRESSES:
            raise InputError(f"at most {MAX_PROOF_ADDRESSES} proof addresses")
        result = await ctx.services.proofs.proof(_id(ctx), to=to or None)
        return ctx.render("_proof.html", proof=result)

    async def send(ctx: Ctx) -> Response:
        delivery_id = _id(ctx)
        await ctx.call(ctx.services.deliveries.start, delivery_id)  # analysis errors: now
        running = console.tasks.get(delivery_id)
        if _in_process(console) and (running is None or running.done()):
            console.send_errors.pop(delivery_id, None)
            task = asyncio.create_task(ctx.services.sending.send(delivery_id))
            console.tasks[delivery_id] = task
            task.add_done_callback(_finished(console, delivery_id))
        return await progress(ctx)

    def control(method: str) -> Any:
        async def act(ctx: Ctx) -> Response:
            await ctx.call(getattr(ctx.services.deliveries, method), _id(ctx))
            if method == "resume" and _in_process(console):
                return await send(ctx)
            return await progress(ctx)
        return act

    async def resend(ctx: Ctx) -> Response:
        """A follow-up delivery to the finished one's failed recipients (the service picks
        them and refuses when there are none); the page of the new delivery follows."""
        delivery = await ctx.call(ctx.services.deliveries.resend, _id(ctx))
        return redirect(f"/console/deliveries/{delivery.id}")

    async def logs(ctx: Ctx) -> Response:
        delivery_id = _id(ctx)
        status = ctx.request.query_params.get("status") or None
        delivery = await ctx.call(ctx.services.deliveries.get_delivery, delivery_id)
        rows = await ctx.call(ctx.services.deliveries.logs, delivery_id, status=status,
                              limit=LOG_PAGE)
        return ctx.render("logs.html", d=delivery, logs=rows, more=len(rows) == LOG_PAGE,
                          status=status or "", statuses=list(LogStatus))

    return [
        route(console, "/deliveries", index),
        route(console, "/deliveries", create, ["POST"]),
        route(console, "/deliveries/{id}", detail),
        route(console, "/deliveries/{id}/progress", progress),
        route(console, "/deliveries/{id}/analyze", analyze, ["POST"]),
        route(console, "/deliveries/{id}/proof", proof, ["POST"]),
        route(console, "/deliveries/{id}/send", send, ["POST"]),
        route(console, "/deliveries/{id}/pause", control("pause"), ["POST"]),
        route(console, "/deliveries/{id}/resume", control("resume"), ["POST"]),
        route(console, "/deliveries/{id}/stop", control("stop"), ["POST"]),
        route(console, "/deliveries/{id}/resend", resend, ["POST"]),
        route(console, "/deliveries/{id}/logs", logs),
    ]


def _progress_values(ctx: Ctx, delivery: Any, report: Any) -> dict[str, Any]:
    total = sum(report.by_status.values())
    done = total - report.by_status.get("pending", 0)
    error = ctx.console.send_errors.get(delivery.id)
    return {"total": total, "done": done, "active": delivery.state in ACTIVE,
            "send_error": error}


def _finished(console: Console, delivery_id: int) -> Any:
    def done(task: asyncio.Task[Any]) -> None:
        if console.tasks.get(delivery_id) is task:
            del console.tasks[delivery_id]
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("sending delivery #%s failed: %s", delivery_id, exc)
            console.send_errors[delivery_id] = str(exc)
    return done
