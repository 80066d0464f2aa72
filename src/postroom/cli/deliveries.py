"""`postroom deliveries ...`"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from postroom.cli.common import JsonOption, Table, console, emit_json, progress_bar, state
from postroom.delivery.analysis import AnalysisReport
from postroom.delivery.engine import RunSummary
from postroom.domain.models import Delivery
from postroom.errors import InputError
from postroom.service import read_content

app = typer.Typer(help="Deliveries: create, analyze, send, follow.", no_args_is_help=True)


def _overrides(pairs: list[str], html_file: Path | None, text_file: Path | None) -> dict[
    str, Any
]:
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {pair!r}: expected PROPERTY=VALUE")
        key = key.strip()
        changes[key] = [v.strip() for v in value.split(",") if v.strip()] \
            if key == "proof_addresses" else value
    if html_file is not None:
        changes["html"] = read_content(html_file, "--html-file")
    if text_file is not None:
        changes["text"] = read_content(text_file, "--text-file")
    return changes


def _row(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "template": d.template_name, "state": d.state,
            "email_bcc": d.properties.email_bcc, "audience": d.audience.to_json(),
            "created_at": d.created_at.isoformat(), "last_error": d.last_error}


@app.command("create")
def create(
    ctx: typer.Context,
    template: str = typer.Option("default", "--template", "-t", help="Template to copy."),
    name: str | None = typer.Option(None, help="Delivery name."),
    set_: list[str] = typer.Option([], "--set", help="Override a property: KEY=VALUE."),
    html_file: Path | None = typer.Option(None, help="Override the HTML content."),
    text_file: Path | None = typer.Option(None, help="Override the text content."),
    filter_: list[str] = typer.Option([], "--filter", help="FIELD=VALUE, FIELD!=VALUE, "
                                      "FIELD~TEXT; all must hold."),
    list_file: Path | None = typer.Option(None, "--list", help="CSV list to target (imported)."),
    as_json: bool = JsonOption,
) -> None:
    """Create a delivery from a template (copy, then override); audience: all by default."""
    delivery, imported = state(ctx).postroom().create_delivery(
        template, name=name, overrides=_overrides(set_, html_file, text_file),
        filters=filter_, list_file=list_file)
    if as_json:
        emit_json({**_row(delivery), "list_import": imported.to_json() if imported else None})
        return
    console.print(f"created delivery #{delivery.id} ({delivery.name}) from {template!r}")
    if imported is not None:
        console.print(f"list: {imported.rows} rows, {imported.rejected} rejected")
        for error in imported.errors:
            console.print(f"  {list_file}: {error}", markup=False, highlight=False)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """All deliveries."""
    rows = [_row(d) for d in state(ctx).postroom().store.list_deliveries()]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "name", "template", "state", "email_bcc")
    for r in rows:
        table.add_row(str(r["id"]), r["name"], r["template"], r["state"],
                      "on" if r["email_bcc"] else "off")
    console.print(table)


def _print_analysis(report: AnalysisReport) -> None:
    data = report.to_json()
    verdict = "[green]ok[/]" if report.ok else "[red]failed[/]"
    console.print(f"analysis of #{report.delivery_id}: {verdict}; {data['targets']} targets, "
                  f"{data['to_send']} to send")
    for reason, count in dict(data["excluded"]).items():  # type: ignore[call-overload]
        console.print(f"  excluded ({reason}): {count}")
    for error in report.errors:
        console.print(f"  [red]error:[/] {error}", highlight=False)


@app.command("analyze")
def analyze(ctx: typer.Context, delivery_id: int, as_json: bool = JsonOption) -> None:
    """Check the delivery and prepare one log per target; exits 1 when analysis fails."""
    report = state(ctx).postroom().analyze(delivery_id)
    emit_json(report.to_json()) if as_json else _print_analysis(report)
    if not report.ok:
        raise typer.Exit(1)


def _summary(summary: RunSummary) -> dict[str, Any]:
    return {"delivery": summary.delivery_id, "state": summary.state, "sent": summary.sent,
            "failed": summary.failed, "deferred": summary.deferred,
            "archived": summary.archived, "archive_pending": summary.archive_pending}


def _send(ctx: typer.Context, delivery_id: int, as_json: bool) -> None:
    postroom = state(ctx).postroom()
    on_analyzed = None if as_json else _print_analysis
    delivery = postroom.store.get_delivery(delivery_id)
    total = postroom.pending_count(delivery_id) if delivery.analyzed_at else None
    with progress_bar(f"sending #{delivery_id}", total, enabled=not as_json) as advance:
        summary = postroom.send(delivery_id, progress=advance, on_analyzed=on_analyzed,
                                halt=asyncio.Event())
    if as_json:
        emit_json(_summary(summary))
        return
    console.print(f"delivery #{delivery_id}: {summary.state}; sent {summary.sent}, "
                  f"failed {summary.failed}, retry later {summary.deferred}")
    if summary.paused_reason:
        console.print(f"[red]{summary.paused_reason}[/]", highlight=False)
    if summary.archive_pending:
        console.print(f"[yellow]{summary.archive_pending} archive copies pending[/] "
                      "(archive relay unreachable?): `postroom archive flush` retries them")
    if summary.state == "sending":
        console.print("some messages wait for a retry: run `postroom deliveries send "
                      f"{delivery_id}` again later")


@app.command("send")
def send(ctx: typer.Context, delivery_id: int, as_json: bool = JsonOption) -> None:
    """Send a delivery (analyzing it first if needed)."""
    _send(ctx, delivery_id, as_json)


@app.command("start")
def start(ctx: typer.Context, delivery_id: int) -> None:
    """Analyze if needed and set the delivery `sending`, for `postroom worker`s to send."""
    on_analyzed = _print_analysis
    d = state(ctx).postroom().start(delivery_id, on_analyzed=on_analyzed)
    console.print(f"delivery #{d.id} is {d.state}; running workers pick it up")


@app.command("pause")
def pause(ctx: typer.Context, delivery_id: int) -> None:
    """Pause sending; a running `send` stops after its in-flight messages."""
    d = state(ctx).postroom().pause(delivery_id)
    console.print(f"delivery #{d.id} is {d.state}")


@app.command("resume")
def resume(ctx: typer.Context, delivery_id: int,
           send_now: bool = typer.Option(True, "--send/--no-send",
                                         help="Continue sending in this process."),
           as_json: bool = JsonOption) -> None:
    """Resume a paused delivery and continue sending it."""
    d = state(ctx).postroom().resume(delivery_id)
    if send_now:
        _send(ctx, delivery_id, as_json)
    else:
        console.print(f"delivery #{d.id} is {d.state}")


@app.command("stop")
def stop(ctx: typer.Context, delivery_id: int) -> None:
    """Stop a delivery for good: what was not sent is cancelled."""
    d = state(ctx).postroom().stop(delivery_id)
    console.print(f"delivery #{d.id} is {d.state}")


@app.command("review")
def review(ctx: typer.Context, delivery_id: int,
           resend: bool = typer.Option(..., "--resend/--fail",
                                       help="Send them again, or count them failed.")) -> None:
    """Decide about messages set aside as in doubt (sending.in_doubt = "review")."""
    count = state(ctx).postroom().resolve_review(delivery_id, resend=resend)
    console.print(f"{count} messages in review {'put back to send' if resend else 'failed'}")


@app.command("proof")
def proof(
    ctx: typer.Context,
    delivery_id: int,
    to: list[str] = typer.Option([], "--to", help="Proof address (default: proof_addresses)."),
    recipient: str | None = typer.Option(None, help="Personalize for this recipient's data."),
    as_json: bool = JsonOption,
) -> None:
    """Send a proof now: subject prefixed `Proof #N`, never archived, not in the report."""
    report = state(ctx).postroom().proof(delivery_id, to=to or None, recipient=recipient)
    if as_json:
        emit_json(report.to_json())
    else:
        console.print(f"proof #{report.number} of delivery #{delivery_id}, personalized for "
                      f"{report.sample}:")
        for address, verdict, reply in report.results:
            console.print(f"  {address}: {verdict} ({reply})", markup=False, highlight=False)
    if any(verdict != "sent" for _, verdict, _ in report.results):
        raise typer.Exit(1)


@app.command("mirror")
def mirror(ctx: typer.Context, log_id: int, as_json: bool = JsonOption) -> None:
    """Print the mirror-page URL of one message (the way to reach `id_only` pages)."""
    url = state(ctx).postroom().mirror_url(log_id)
    emit_json({"log": log_id, "url": url}) if as_json else typer.echo(url)


@app.command("resend")
def resend(
    ctx: typer.Context,
    delivery_id: int,
    failed: bool = typer.Option(True, "--failed", help="Target the recipients whose logs "
                                "failed (the only mode today)."),
    reason: list[int] = typer.Option([], help="Only these failure reason codes."),
    name: str | None = typer.Option(None, help="Name of the new delivery."),
    as_json: bool = JsonOption,
) -> None:
    """Create a follow-up delivery to the failed recipients not in quarantine now."""
    d = state(ctx).postroom().resend(delivery_id, reasons=reason or None, name=name)
    emit_json(_row(d)) if as_json else console.print(
        f"created delivery #{d.id} ({d.name}); analyze and send it as usual")


@app.command("report")
def report(ctx: typer.Context, delivery_id: int, as_json: bool = JsonOption) -> None:
    """Counts by status and reason, and the state of the archive copies."""
    data = state(ctx).postroom().report(delivery_id).to_json()
    if as_json:
        emit_json(data)
        return
    console.print(f"[bold]delivery #{data['delivery']}[/] {data['name']} — {data['state']}, "
                  f"Email BCC {'on' if data['email_bcc'] else 'off'}", highlight=False)
    table = Table("status", "count")
    for status, count in sorted(data["by_status"].items()):
        table.add_row(status, str(count))
    table.add_row(Text("total", style="bold"), str(data["total"]))
    console.print(table)
    if data["by_reason"]:
        reasons = Table("reason", "count")
        for reason, count in sorted(data["by_reason"].items()):
            reasons.add_row(reason, str(count))
        console.print(reasons)
    archive = data["archive"]
    console.print("archive copies: " + ", ".join(f"{k} {v}" for k, v in archive.items()))
    for slow in data["slowed_domains"]:
        until = (f"recovered {slow['recovered_at']}" if slow["recovered_at"]
                 else "still slowed")
        console.print(f"[yellow]slowed down:[/] {slow['domain']} since {slow['since']} "
                      f"({slow['reason']}; halved {slow['deepest']} time(s), {until})",
                      highlight=False)
    doubt = data["in_doubt"]
    if doubt["logs"] or doubt["archive_copies"]:
        console.print(f"[yellow]in doubt:[/] {doubt['logs']} messages may have reached the "
                      f"relay twice ({doubt['review']} wait for review: `postroom deliveries "
                      f"review {data['delivery']}`); {doubt['archive_copies']} archive copies "
                      "may be in the archive twice", highlight=False)
    if data["last_error"]:
        console.print(f"[red]last error:[/] {data['last_error']}", highlight=False)


@app.command("logs")
def logs(
    ctx: typer.Context,
    delivery_id: int,
    status: str | None = typer.Option(None, help="pending, sent, failed, ignored, cancelled."),
    reason: int | None = typer.Option(None, help="Failure reason code."),
    email: str | None = typer.Option(None, help="Part of the address."),
    archive: str | None = typer.Option(None, help="pending, archived, failed or none."),
    limit: int = typer.Option(100, min=1),
    offset: int = typer.Option(0, min=0),
    as_json: bool = JsonOption,
) -> None:
    """The per-recipient delivery log."""
    rows = state(ctx).postroom().logs(delivery_id, status=status, reason=reason, email=email,
                                      archive=archive, limit=limit, offset=offset)
    if as_json:
        emit_json([{
            "id": r.id, "email": r.email, "status": r.status, "failure_type": r.failure_type,
            "failure_reason": r.failure_reason, "detail": r.detail, "attempts": r.attempts,
            "smtp_reply": r.smtp_reply, "message_id": r.message_id,
            "sent_at": r.sent_at.isoformat() if r.sent_at else None, "size": r.size,
            "sha256": r.sha256, "archive": r.archive_state,
            "next_attempt_at": r.next_attempt_at.isoformat() if r.next_attempt_at else None,
        } for r in rows])
        return
    table = Table("log", "email", "status", "reason", "attempts", "reply / detail", "archive")
    for r in rows:
        table.add_row(str(r.id), r.email, r.status,
                      r.failure_reason.label if r.failure_reason is not None else "",
                      str(r.attempts), (r.smtp_reply or r.detail)[:60], r.archive_state or "")
    console.print(table)
