"""Recipients, templates (with the sandboxed preview), quarantine, archive, bounces and rules."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute

from postroom.accounts.records import AuditFilter
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.errors import InputError, NotFoundError, TemplateError
from postroom.web.console.app import PREVIEW_POLICY, Console, Ctx, redirect, route, secured

MAX_UPLOAD = 50 * 1024 * 1024  # a CSV of recipients; the importer bounds each row itself
MAX_FIELD = 1024 * 1024        # one template field
TEMPLATE_FIELDS = ("subject", "from_name", "from_address", "reply_to", "html", "text",
                   "charset", "format")
PAGE = 100
MAX_DENYLIST = 100            # addresses in one denylist form


def _q(ctx: Ctx, name: str) -> str:
    return ctx.request.query_params.get(name, "")[:500].strip()


async def _form(ctx: Ctx, *, files: int = 0) -> Any:
    return await ctx.request.form(max_fields=50, max_files=files, max_part_size=MAX_FIELD)


def _field_of(problem: str) -> str:
    """Which form field a template problem names (the service's message says it first)."""
    lowered = problem.lower()
    for name in ("subject", "html", "text", "from_address", "reply_to", "charset"):
        if lowered.startswith(name) or f" {name}" in lowered[:60]:
            return name
    return ""


def _last_error(row: dict[str, Any]) -> str:
    """The latest failed copy's reply among the recent ones archive.status gives."""
    return next((r["reply"] for r in row.get("recent", []) if r["state"] == "failed"
                 and r["reply"]), "")


def routes(console: Console) -> list[BaseRoute]:
    # -- recipients ---------------------------------------------------------------------------

    async def recipients(ctx: Ctx) -> Response:
        search, audience = _q(ctx, "q"), _q(ctx, "filter")
        found = await ctx.call(ctx.services.recipients.list_recipients, search=search or None,
                               filters=[audience] if audience else (), limit=PAGE)
        job = console.imports.get(_q(ctx, "import"), ctx.session.id)
        return ctx.render("recipients.html", page=found, q=search, audience=audience, job=job)

    async def import_csv(ctx: Ctx) -> Response:
        """Spool the upload, start the import in the background and show the page that
        follows it (rows written so far, then the per-row report)."""
        form = await _form(ctx, files=1)
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InputError("choose a CSV file to import")
        folder = Path(tempfile.mkdtemp(prefix="postroom-import-"))
        try:
            path = folder / "recipients.csv"
            size = 0
            with path.open("wb") as out:
                while chunk := await upload.read(1 << 16):
                    size += len(chunk)
                    if size > MAX_UPLOAD:
                        raise InputError(f"the file is over {MAX_UPLOAD // 2**20} MB")
                    out.write(chunk)
            import_recipients = ctx.services.recipients.import_recipients
            job = console.imports.start(
                ctx.session.id, upload.filename, folder,
                lambda job: ctx.call(import_recipients, path, progress=job.advance))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return redirect(f"/console/recipients?import={quote(job.id)}")

    async def import_progress(ctx: Ctx) -> Response:
        job = console.imports.get(ctx.request.path_params["job"], ctx.session.id)
        if job is None:
            raise NotFoundError("no such import (a restart of the server forgets them)")
        return ctx.render("_import.html", job=job)

    async def history(ctx: Ctx) -> Response:
        email = _q(ctx, "email")
        found = await ctx.call(ctx.services.recipients.recipient_history, email)
        return ctx.render("recipient.html", email=email, history=found,
                          reason_label=lambda code: FailureReason(code).label)

    # -- templates ----------------------------------------------------------------------------

    async def templates(ctx: Ctx) -> Response:
        rows = await ctx.call(ctx.services.templates.list_templates)
        return ctx.render("templates.html", templates=rows, error=None)

    async def create_template(ctx: Ctx) -> Response:
        form = await _form(ctx)
        name = str(form.get("name", "")).strip()
        source = str(form.get("copy_of", "")).strip()
        if source:
            await ctx.call(ctx.services.templates.duplicate_template, source, name)
        else:
            await ctx.call(ctx.services.templates.create_template, name, {
                "subject": "Hello {{ recipient.first_name }}",
                "html": "<p>Hello {{ recipient.first_name }}</p>"})
        return redirect(f"/console/templates/{quote(name, safe='')}")

    async def template(ctx: Ctx) -> Response:
        name = ctx.request.path_params["name"]
        found = await ctx.call(ctx.services.templates.get_template, name)
        problems = await ctx.call(ctx.services.templates.content_problems, found.properties)
        return await _template_page(ctx, found, found.properties, problems, saved=False)

    async def save_template(ctx: Ctx) -> Response:
        name = ctx.request.path_params["name"]
        form = await _form(ctx)
        data: dict[str, Any] = {k: str(form[k]) for k in TEMPLATE_FIELDS if k in form}
        data["email_bcc"] = form.get("email_bcc") == "on"
        for key in ("charset", "format", "from_name", "reply_to"):
            if key in data and not data[key]:
                del data[key]
        try:
            saved = await ctx.call(ctx.services.templates.update_template, name, data)
        except TemplateError as exc:
            found = await ctx.call(ctx.services.templates.get_template, name)
            return await _template_page(ctx, found, data, str(exc).splitlines(),
                                        saved=False, status_code=400)
        return await _template_page(ctx, saved, saved.properties, [], saved=True)

    async def _template_page(ctx: Ctx, found: Any, values: Any, problems: list[str], *,
                             saved: bool, status_code: int = 200) -> Response:
        def value(key: str) -> Any:
            return values.get(key, "") if isinstance(values, dict) else getattr(values, key)
        by_field: dict[str, list[str]] = {}
        for problem in problems:
            by_field.setdefault(_field_of(problem), []).append(problem)
        samples = (await ctx.call(ctx.services.recipients.list_recipients,
                                  limit=20)).recipients
        return ctx.render("template.html", status_code=status_code, t=found, value=value,
                          problems=by_field, saved=saved, samples=samples)

    async def preview(ctx: Ctx) -> Response:
        """The rendered message for one recipient, alone in a sandboxed frame."""
        name = ctx.request.path_params["name"]
        part = _q(ctx, "part") or "html"
        if part not in ("html", "text"):
            raise InputError("part: html or text")
        shown = await ctx.call(ctx.services.templates.preview, name,
                               recipient=_q(ctx, "recipient") or None)
        if shown.problems:
            return secured(Response("\n".join(shown.problems), status_code=422,
                                    media_type="text/plain; charset=utf-8"), PREVIEW_POLICY)
        if part == "text":
            return secured(Response(shown.text, media_type="text/plain; charset=utf-8"),
                           PREVIEW_POLICY)
        return secured(HTMLResponse(shown.html), PREVIEW_POLICY)

    async def preview_panel(ctx: Ctx) -> Response:
        name = ctx.request.path_params["name"]
        recipient = _q(ctx, "recipient")
        shown = await ctx.call(ctx.services.templates.preview, name,
                               recipient=recipient or None)
        return ctx.render("_preview.html", name=name, recipient=recipient, shown=shown)

    # -- quarantine, archive, bounces ---------------------------------------------------------

    async def quarantine(ctx: Ctx) -> Response:
        status = _q(ctx, "status") or "quarantine"
        statuses = ["quarantine", "denylisted", "with_errors"]
        if status not in statuses:
            raise InputError(f"status: one of {', '.join(statuses)}")
        rows = await ctx.call(ctx.services.quarantine.list_addresses, statuses=[status],
                              limit=PAGE * 2)
        return ctx.render("quarantine.html", rows=rows, status=status, statuses=statuses,
                          released=None)

    async def release(ctx: Ctx) -> Response:
        form = await _form(ctx)
        address = str(form.get("address", "")).strip()
        if not address:
            raise InputError("no address to release")
        count = await ctx.call(ctx.services.quarantine.release_addresses, [address])
        rows = await ctx.call(ctx.services.quarantine.list_addresses, statuses=["quarantine"],
                              limit=PAGE * 2)
        return ctx.render("quarantine.html", rows=rows, status="quarantine",
                          statuses=["quarantine", "denylisted", "with_errors"],
                          released=(address, count))

    async def denylist(ctx: Ctx) -> Response:
        form = await _form(ctx)
        addresses = [a.strip() for a in str(form.get("addresses", "")).replace("\n", ",")
                     .split(",") if a.strip()]
        if len(addresses) > MAX_DENYLIST:
            raise InputError(f"at most {MAX_DENYLIST} addresses at once")
        count = await ctx.call(ctx.services.quarantine.denylist, addresses)
        rows = await ctx.call(ctx.services.quarantine.list_addresses, statuses=["denylisted"],
                              limit=PAGE * 2)
        return ctx.render("quarantine.html", rows=rows, status="denylisted",
                          statuses=["quarantine", "denylisted", "with_errors"],
                          released=None, denylisted=(len(addresses), count))

    async def archive(ctx: Ctx) -> Response:
        status = await ctx.call(ctx.services.archive.status)
        sent: dict[int, int] = {}
        for row in status.deliveries[:PAGE]:
            report = await ctx.call(ctx.services.reports.report, row["delivery"],
                                   timeline=False)
            sent[row["delivery"]] = report.by_status.get("sent", 0)
        return ctx.render("archive.html", status=status, sent=sent, last_error=_last_error)

    async def bounces_page(ctx: Ctx, *, tested: Any = None, text: str = "",
                           note: str = "") -> Response:
        s = ctx.services
        return ctx.render("bounces.html", bounces=await ctx.call(s.bounces.list_bounces,
                                                                 limit=PAGE),
                          rules=await ctx.call(s.bounces.rules),
                          unqualified=await ctx.call(s.bounces.list_unqualified),
                          tested=tested, text=text, note=note,
                          types=[str(t) for t in FailureType], reasons=list(FailureReason))

    async def bounces(ctx: Ctx) -> Response:
        return await bounces_page(ctx)

    async def test_rule(ctx: Ctx) -> Response:
        form = await _form(ctx)
        text = str(form.get("text", ""))[:10_000]
        tested = await ctx.call(ctx.services.bounces.test_rule, text)
        return await bounces_page(ctx, tested=tested, text=text)

    async def add_rule(ctx: Ctx) -> Response:
        form = await _form(ctx)
        position, reason = str(form.get("position", "")), str(form.get("reason", ""))
        if not reason.isdigit() or (position and not position.isdigit()):
            raise InputError("reason and position are numbers")
        row = await ctx.call(ctx.services.bounces.add_rule,
                             rule_id=str(form.get("rule_id", "")).strip(),
                             pattern=str(form.get("pattern", "")),
                             status=str(form.get("status", "")).strip(),
                             failure_type=str(form.get("failure_type", "")),
                             reason=int(reason), description=str(form.get("description", "")),
                             position=int(position) if position else None)
        return await bounces_page(ctx, note=f"rule {row.id} added at position {row.position}")

    async def delete_rule(ctx: Ctx) -> Response:
        form = await _form(ctx)
        rule_id = str(form.get("rule_id", ""))
        await ctx.call(ctx.services.bounces.delete_rule, rule_id)
        return await bounces_page(ctx, note=f"rule {rule_id} deleted")

    async def audit(ctx: Ctx) -> Response:
        actor = _q(ctx, "actor") or None
        action = _q(ctx, "action") or None
        before = _q(ctx, "before")
        entries = await ctx.call(ctx.services.accounts.audit,
                                 AuditFilter(actor=actor, action=action), limit=PAGE,
                                 before_id=int(before) if before.isdigit() else None)
        return ctx.render("audit.html", entries=entries, actor=actor or "",
                          action=action or "", more=len(entries) == PAGE)

    return [
        route(console, "/audit", audit),
        route(console, "/recipients", recipients),
        route(console, "/recipients/import", import_csv, ["POST"]),
        route(console, "/recipients/import/{job}", import_progress),
        route(console, "/recipients/history", history),
        route(console, "/templates", templates),
        route(console, "/templates", create_template, ["POST"]),
        route(console, "/templates/{name}", template),
        route(console, "/templates/{name}", save_template, ["POST"]),
        route(console, "/templates/{name}/preview", preview),
        route(console, "/templates/{name}/preview-panel", preview_panel),
        route(console, "/quarantine", quarantine),
        route(console, "/quarantine/release", release, ["POST"]),
        route(console, "/quarantine/denylist", denylist, ["POST"]),
        route(console, "/archive", archive),
        route(console, "/bounces", bounces),
        route(console, "/bounces/test-rule", test_rule, ["POST"]),
        route(console, "/bounces/rules", add_rule, ["POST"]),
        route(console, "/bounces/rules/delete", delete_rule, ["POST"]),
    ]
