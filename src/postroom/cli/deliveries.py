"""`postroom deliveries ...`"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from postroom.app import Postroom
from postroom.app.children import warm
from postroom.app.deliveries import parse_reason
from postroom.app.templates import read_content
from postroom.cli.archive import print_sinks
from postroom.cli.common import (
    JsonOption,
    Table,
    console,
    emit_json,
    err_console,
    progress_bar,
    state,
)
from postroom.delivery.analysis import AnalysisReport
from postroom.delivery.engine import RunSummary
from postroom.delivery.worker import halting_on_signals
from postroom.domain.models import Delivery, DeliveryLog
from postroom.domain.states import LogStatus
from postroom.errors import InputError

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


def _row(d: Delivery, postroom: Postroom) -> dict[str, Any]:
    changed = postroom.templates.template_changed_since(d)
    return {"id": d.id, "name": d.name, "template": d.template_name, "state": d.state,
            "email_bcc": d.properties.email_bcc, "audience": d.audience.to_json(),
            "created_at": d.created_at.isoformat(), "last_error": d.last_error,
            "template_changed_at": changed.isoformat() if changed else None}


def _state_line(d: Delivery, as_json: bool, postroom: Postroom, text: str = "") -> None:
    if as_json:
        emit_json(_row(d, postroom))
    else:
        console.print(f"delivery #{d.id} is {d.state}{text}")


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
    postroom = state(ctx).app()
    delivery, imported = postroom.deliveries.create_delivery(
        template, name=name, overrides=_overrides(set_, html_file, text_file),
        filters=filter_, list_file=list_file)
    if as_json:
        emit_json({**_row(delivery, postroom),
                   "list_import": imported.to_json() if imported else None})
        return
    console.print(f"created delivery #{delivery.id} ({delivery.name}) from {template!r}")
    if imported is not None:
        console.print(f"list: {imported.rows} rows, {imported.rejected} rejected")
        for error in imported.errors:
            console.print(f"  {list_file}: {error}", markup=False, highlight=False)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """All deliveries."""
    postroom = state(ctx).app()
    rows = [_row(d, postroom) for d in postroom.deliveries.list_deliveries()]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "name", "template", "state", "email_bcc")
    for r in rows:
        changed = r["template_changed_at"]
        table.add_row(str(r["id"]), r["name"], r["template"] + (
            f" (changed since, {changed[:16]})" if changed else ""), r["state"],
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
    report = state(ctx).app().deliveries.analyze(delivery_id)
    emit_json(report.to_json()) if as_json else _print_analysis(report)
    if not report.ok:
        raise typer.Exit(1)


def _summary(summary: RunSummary, pending: int) -> dict[str, Any]:
    return {"delivery": summary.delivery_id, "state": summary.state, "sent": summary.sent,
            "failed": summary.failed, "deferred": summary.deferred, "pending": pending,
            "in_doubt": summary.in_doubt, "interrupted": summary.interrupted or None,
            "relay_faults": summary.relay_faults, "relay_fault": summary.relay_fault or None,
            "paused_reason": summary.paused_reason or None,
            "archived": summary.archived, "archive_pending": summary.archive_pending,
            "helper_errors": summary.helper_errors}


def _on_signal(first: bool) -> None:
    """Said at once, on stderr, when Ctrl-C (or SIGTERM) comes during a send."""
    if first:
        err_console.print("[yellow]interrupted:[/] finishing the messages on the wire and "
                          "recording them; press Ctrl-C again to stop at once", highlight=False)
    else:
        err_console.print("[red]stopping at once:[/] messages on the wire are counted in doubt",
                          highlight=False)


def _send(ctx: typer.Context, delivery_id: int, as_json: bool) -> None:
    # Helper or archive processes, if the settings ask for them, are forked from a server
    # whose imports (a second) run on another core while this one builds and analyzes.
    warm(state(ctx).settings())
    postroom = state(ctx).app()
    on_analyzed = None if as_json else _print_analysis
    # Analysis first, outside the event loop: Ctrl-C stops it at once; then the bar's total.
    postroom.deliveries.start(delivery_id, on_analyzed=on_analyzed)
    total = postroom.deliveries.pending_count(delivery_id)
    with progress_bar(f"sending #{delivery_id}", total, enabled=not as_json) as advance:
        halt, abort = asyncio.Event(), asyncio.Event()
        summary = asyncio.run(halting_on_signals(
            halt, postroom.sending.send(delivery_id, progress=advance, halt=halt, abort=abort),
            abort=abort, notify=_on_signal))
    pending = postroom.deliveries.pending_count(delivery_id)
    if as_json:
        emit_json(_summary(summary, pending))
    else:
        _print_summary(summary, pending)
    if summary.interrupted:
        raise typer.Exit(130)  # as a shell reports a process ended by Ctrl-C
    if summary.paused_reason or (summary.relay_faults and not summary.sent) \
            or summary.helper_errors:
        raise typer.Exit(1)  # it paused itself, the relay took nothing, or a helper failed


def _print_summary(summary: RunSummary, pending: int) -> None:
    delivery_id = summary.delivery_id
    state_text = f"interrupted ({summary.state})" if summary.interrupted else summary.state
    console.print(f"delivery #{delivery_id}: {state_text}; sent {summary.sent}, "
                  f"failed {summary.failed}, retry later {summary.deferred}", highlight=False)
    if summary.paused_reason:
        console.print(f"[red]{summary.paused_reason}[/]", highlight=False)
    for error in summary.helper_errors:
        console.print(f"[red]{error}[/]", highlight=False)
    if summary.relay_faults:
        console.print(f"[red]relay fault:[/] {summary.relay_fault}", highlight=False)
        if not summary.paused_reason:
            console.print(f"{summary.relay_faults} messages were not sent (no recipient is to "
                          "blame; no attempt counted); they wait for the relay: once it is "
                          f"fixed, `postroom deliveries retry {delivery_id}` makes them due "
                          "now", highlight=False)
    if summary.interrupted == "stopped" and summary.in_doubt:
        console.print(f"[yellow]{summary.in_doubt} messages were on the wire when the send "
                      "stopped: in doubt[/] (the relay may have them; they are resent or "
                      "set aside for review as sending.in_doubt says)", highlight=False)
    if summary.interrupted and pending:
        console.print(f"{pending} messages not sent yet stay pending: `postroom deliveries "
                      f"send {delivery_id}` continues", highlight=False)
    if summary.archive_pending:
        why = f" ({summary.archive_fault})" if summary.archive_fault else ""
        console.print(f"[yellow]{summary.archive_pending} archive copies pending[/]{why}: "
                      "the next send or `postroom archive flush` sends them", highlight=False)
    if summary.state == "sending" and not summary.interrupted and pending \
            and pending > summary.relay_faults:
        console.print("some messages wait for a retry: run `postroom deliveries send "
                      f"{delivery_id}` again later")


@app.command("send")
def send(ctx: typer.Context, delivery_id: int, as_json: bool = JsonOption) -> None:
    """Send a delivery (analyzing it first if needed)."""
    _send(ctx, delivery_id, as_json)


@app.command("retry")
def retry(ctx: typer.Context, delivery_id: int, as_json: bool = JsonOption) -> None:
    """Make due now the messages that wait because no connection could be had (a relay
    fault, a connection fault, a domain's hourly limit). Sent, failed and in-review messages
    are never touched, nor ones a recipient's server deferred."""
    postroom = state(ctx).app()
    count = postroom.deliveries.retry(delivery_id)
    delivery = postroom.deliveries.get_delivery(delivery_id)
    if as_json:
        emit_json({"delivery": delivery_id, "state": delivery.state, "due_now": count})
        return
    console.print(f"delivery #{delivery_id} ({delivery.state}): {count} messages due now",
                  highlight=False)
    if count and delivery.state == "paused":
        console.print(f"it is paused: `postroom deliveries resume {delivery_id}` sends them")
    elif count and delivery.state == "sending":
        console.print(f"`postroom deliveries send {delivery_id}` (or a running worker) sends "
                      "them")


@app.command("start")
def start(ctx: typer.Context, delivery_id: int, as_json: bool = JsonOption) -> None:
    """Analyze if needed and set the delivery `sending`, for `postroom worker`s to send."""
    postroom = state(ctx).app()
    d = postroom.deliveries.start(delivery_id,
                                  on_analyzed=None if as_json else _print_analysis)
    _state_line(d, as_json, postroom, "; running workers pick it up")


@app.command("pause")
def pause(ctx: typer.Context, delivery_id: int, as_json: bool = JsonOption) -> None:
    """Pause sending; a running `send` stops after its in-flight messages."""
    postroom = state(ctx).app()
    _state_line(postroom.deliveries.pause(delivery_id), as_json, postroom)


@app.command("resume")
def resume(ctx: typer.Context, delivery_id: int,
           send_now: bool = typer.Option(True, "--send/--no-send",
                                         help="Continue sending in this process."),
           as_json: bool = JsonOption) -> None:
    """Resume a paused delivery and continue sending it."""
    if send_now:
        warm(state(ctx).settings())
    postroom = state(ctx).app()
    d = postroom.deliveries.resume(delivery_id)
    if send_now:
        _send(ctx, delivery_id, as_json)
    else:
        _state_line(d, as_json, postroom)


@app.command("stop")
def stop(ctx: typer.Context, delivery_id: int, as_json: bool = JsonOption) -> None:
    """Stop a delivery for good: what was not sent is cancelled."""
    postroom = state(ctx).app()
    _state_line(postroom.deliveries.stop(delivery_id), as_json, postroom)


@app.command("review")
def review(ctx: typer.Context, delivery_id: int,
           resend: bool = typer.Option(..., "--resend/--fail",
                                       help="Send them again, or count them failed.")) -> None:
    """Decide about messages set aside as in doubt (sending.in_doubt = "review")."""
    count = state(ctx).app().deliveries.resolve_review(delivery_id, resend=resend)
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
    report = asyncio.run(state(ctx).app().proofs.proof(delivery_id, to=to or None,
                                                            recipient=recipient))
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
    url = state(ctx).app().links.mirror_url(log_id)
    emit_json({"log": log_id, "url": url}) if as_json else typer.echo(url)


@app.command("resend")
def resend(
    ctx: typer.Context,
    delivery_id: int,
    failed: bool = typer.Option(True, "--failed", help="Target the recipients whose logs "
                                "failed (the only mode today)."),
    reason: list[str] = typer.Option([], help="Only these failure reasons (code or name)."),
    name: str | None = typer.Option(None, help="Name of the new delivery."),
    as_json: bool = JsonOption,
) -> None:
    """Create a follow-up delivery to the failed recipients not in quarantine now."""
    postroom = state(ctx).app()
    d = postroom.deliveries.resend(
        delivery_id, reasons=[parse_reason(r).value for r in reason] or None, name=name)
    emit_json(_row(d, postroom)) if as_json else console.print(
        f"created delivery #{d.id} ({d.name}); analyze and send it as usual")


@app.command("report")
def report(ctx: typer.Context, delivery_id: int, as_json: bool = JsonOption) -> None:
    """Counts by status and reason, and the state of the archive copies."""
    postroom = state(ctx).app()
    report_ = postroom.reports.report(delivery_id)
    changed = postroom.templates.template_changed_since(report_.delivery)
    data = {**report_.to_json(), "template": report_.delivery.template_name,
            "template_changed_at": changed.isoformat() if changed else None}
    if as_json:
        emit_json(data)
        return
    console.print(f"[bold]delivery #{data['delivery']}[/] {data['name']} — {data['state']}, "
                  f"Email BCC {'on' if data['email_bcc'] else 'off'}", highlight=False)
    if changed:
        console.print(f"[yellow]template {data['template']!r} changed since[/] "
                      f"({changed:%Y-%m-%d %H:%M}); this delivery keeps the copy it was made "
                      "with", highlight=False)
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
    print_sinks(data["archive_sinks"])
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
    relay = data["relay_fault"]
    if relay:
        console.print(f"[red]{relay['detail']}[/]: {relay['messages_waiting']} messages wait "
                      "for the relay (not sent, no attempt counted); once it is fixed: "
                      f"`postroom deliveries retry {data['delivery']}`", highlight=False)
    if data["last_error"]:
        console.print(f"[red]last error:[/] {data['last_error']}", highlight=False)


@app.command("logs")
def logs(
    ctx: typer.Context,
    delivery_id: int,
    status: str | None = typer.Option(None, help=", ".join(LogStatus) + "."),
    reason: str | None = typer.Option(None, help="Failure reason: code or name (`1`, "
                                      "`user unknown`)."),
    email: str | None = typer.Option(None, help="Part of the address."),
    archive: str | None = typer.Option(None, help="pending, archived, failed or none."),
    limit: int = typer.Option(100, min=1),
    offset: int = typer.Option(0, min=0),
    as_json: bool = JsonOption,
) -> None:
    """The per-recipient delivery log."""
    rows = state(ctx).app().deliveries.logs(
        delivery_id, status=status, reason=reason, email=email, archive=archive, limit=limit,
        offset=offset)
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
                      str(r.attempts), _reply_or_detail(r)[:60], r.archive_state or "")
    console.print(table)


def _reply_or_detail(log: DeliveryLog) -> str:
    """What explains the log's status: for a failed log the failure (a bounce that came after
    the relay's `250` acceptance), else the last SMTP reply."""
    if log.status is LogStatus.FAILED and log.detail:
        return log.detail
    return log.smtp_reply or log.detail
