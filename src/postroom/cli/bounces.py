"""`postroom bounces ...`, `postroom rules ...`, `postroom quarantine ...`, `postroom reports`."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from postroom.cli.common import JsonOption, Table, console, emit_json, err_console, state
from postroom.domain.addresses import normalize_address
from postroom.domain.outcomes import FailureReason
from postroom.errors import InputError
from postroom.inbound import sources
from postroom.inbound.processor import ProcessSummary

bounces_app = typer.Typer(help="Bounce mail: fetch, receive, parse, process.",
                          no_args_is_help=True)
rules_app = typer.Typer(help="Qualification rules: reply or bounce text → type and reason.",
                        no_args_is_help=True)
quarantine_app = typer.Typer(help="Address quarantine and denylist.", no_args_is_help=True)
reports_app = typer.Typer(help="Reports across deliveries.", no_args_is_help=True)


def _outcomes_json(outcomes: list[Any]) -> list[dict[str, Any]]:
    return [{
        "recipient": o.recipient.recipient, "status": o.recipient.status,
        "action": o.recipient.action, "failure_type": o.qualification.failure_type,
        "reason": int(o.qualification.reason), "reason_label": o.qualification.reason.label,
        "rule": o.qualification.rule_id, "diagnostic": o.recipient.diagnostic[:500],
        "log": o.log.id if o.log is not None and o.attributed else None,
        "attributed_by": o.attributed_by or None,
        "late": o.late,  # the log's, but past the attribution window: not applied
        "applied": o.applies,
        "withheld": o.withheld or None,  # why the log's report is not applied
    } for o in outcomes]


@bounces_app.command("parse")
def parse(ctx: typer.Context, files: list[Path], as_json: bool = JsonOption) -> None:
    """Parse bounce files and show what they say (changes nothing)."""
    service = state(ctx).app().bounces
    results: list[dict[str, Any]] = []
    for path in files:  # one bad file is reported alone; the others are still read
        try:
            data = sources.read_capped(path)
            parsed, outcomes = service.examine(data)
        except InputError as exc:
            results.append({"file": str(path), "error": str(exc)})
            continue
        except Exception as exc:  # a bug met on this file: say so, go on
            results.append({"file": str(path), "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        results.append({"file": str(path), "kind": parsed.kind,
                        "recipients": _outcomes_json(outcomes)})
    if as_json:
        emit_json(results)
    else:
        table = Table("file", "kind", "recipient", "status", "type", "reason", "rule", "log")
        for result in results:
            if "error" in result:
                table.add_row(result["file"], "error", result["error"])
            for r in result.get("recipients") or []:
                table.add_row(result["file"], result["kind"], r.get("recipient") or "",
                              r.get("status") or "", str(r.get("failure_type") or ""),
                              r.get("reason_label", ""), r.get("rule") or "",
                              str(r.get("log") or ""))
        console.print(table)
    if any("error" in result for result in results):
        raise typer.Exit(1)


@bounces_app.command("fetch")
def fetch(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(None, help=".eml files to take in."),
    imap: str | None = typer.Option(None, help="imap[s]://USER@HOST[:PORT]/FOLDER"),
    pop3: str | None = typer.Option(None, help="pop3[s]://USER@HOST[:PORT]"),
    maildir: Path | None = typer.Option(None, help="A Maildir folder."),
    mbox: Path | None = typer.Option(None, help="An mbox file (read, never changed)."),
    keep: bool = typer.Option(False, help="Leave fetched mail in the mailbox."),
    process: bool = typer.Option(True, "--process/--no-process",
                                 help="Process what was stored right away."),
    as_json: bool = JsonOption,
) -> None:
    """Store bounce mail from a mailbox or files (then remove it there), and process it.

    The mailbox password comes from the URL or $POSTROOM_MAILBOX_PASSWORD.
    """
    postroom = state(ctx).app()
    messages: list[Any] = []
    if files:
        messages.append(sources.from_files(files))
    if maildir is not None:
        messages.append(sources.from_maildir(maildir, remove=not keep))
    if mbox is not None:
        messages.append(sources.from_mbox(mbox))
    if imap is not None:
        messages.append(sources.from_imap(imap, remove=not keep))
    if pop3 is not None:
        messages.append(sources.from_pop3(pop3, remove=not keep))
    if not messages:
        raise InputError("nothing to fetch: give files, --maildir, --mbox, --imap or --pop3")
    fetched = [postroom.bounces.take(source) for source in messages]
    total = {key: sum(getattr(f, key) for f in fetched)
             for key in ("received", "stored", "duplicates", "refused")}
    refused = [error for f in fetched for error in f.errors]
    summary = postroom.bounces.process() if process else None
    processed = summary.to_json() if summary is not None else None
    if as_json:
        emit_json({"fetched": {**total, "errors": refused}, "processed": processed})
    else:
        console.print(f"received {total['received']}, stored {total['stored']}, "
                      f"already known {total['duplicates']}, refused {total['refused']}",
                      highlight=False)
        for error in refused:
            err_console.print(f"refused: {error}", markup=False, highlight=False)
        if summary is not None:
            console.print(f"processed {summary.processed}: attributed {summary.attributed}, "
                          f"unattributed {summary.unattributed}, unrecognized "
                          f"{summary.unrecognized}, logs failed {summary.failures_applied}, "
                          f"bounces failed {summary.failed}", highlight=False)
            _print_failed(summary)
    if refused or (summary is not None and summary.failed):
        raise typer.Exit(1)


def _print_failed(summary: ProcessSummary) -> None:
    for bounce_id, reason in summary.errors:
        err_console.print(f"bounce {bounce_id} failed (kept, state failed): {reason}",
                          markup=False, highlight=False)


@bounces_app.command("process")
def process_(ctx: typer.Context,
             retry_failed: bool = typer.Option(False, help="Try bounces set aside as failed "
                                               "again (after a fix)."),
             as_json: bool = JsonOption) -> None:
    """Process stored bounces that are still new (exit 1 if one of them failed)."""
    summary = state(ctx).app().bounces.process(retry_failed=retry_failed)
    if as_json:
        emit_json(summary.to_json())
    else:
        console.print(summary.to_json(), markup=False)
        _print_failed(summary)
    if summary.failed:
        raise typer.Exit(1)


@bounces_app.command("serve")
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Listen address."),
    port: int = typer.Option(2525, help="Listen port."),
    domain: list[str] = typer.Option([], help="Accept mail only for these domains."),
    every: float = typer.Option(5.0, help="Process stored bounces every N seconds."),
) -> None:
    """Receive bounces over SMTP for the errors-to domain; store, then process them."""
    from postroom.inbound.receiver import BounceReceiver

    postroom = state(ctx).app()
    receiver = BounceReceiver(postroom.bounces.receive, host=host, port=port,
                              domains=frozenset(d.lower() for d in domain))
    receiver.start()
    console.print(f"receiving bounces on {host}:{receiver.port} (Ctrl-C stops)")
    try:
        while True:
            time.sleep(every)
            try:
                _print_failed(postroom.bounces.process())
            except Exception as exc:  # the database, say: receiving goes on; try again later
                err_console.print(f"error: processing bounces: {type(exc).__name__}: {exc}"
                                  [:1000], markup=False, highlight=False)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()


@bounces_app.command("list")
def list_(ctx: typer.Context, state_: str | None = typer.Option(None, "--state"),
          limit: int = typer.Option(50, min=1), as_json: bool = JsonOption) -> None:
    """Stored bounces, newest first (state: new, processed, unattributed, unrecognized,
    failed)."""
    postroom = state(ctx).app()
    rows: list[dict[str, Any]] = [{"id": b.id, "state": b.state, "kind": b.kind,
                                   "source": b.source,
             "received_at": b.received_at.isoformat(), "size": len(b.data),
             "detail": b.detail, "results": postroom.bounces.bounce_results_of(b.id)}
            for b in postroom.bounces.list_bounces(state=state_, limit=limit)]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "state", "kind", "source", "received", "recipients")
    for r in rows:
        table.add_row(str(r["id"]), r["state"], r["kind"], r["source"], r["received_at"],
                      ", ".join(x["recipient"] for x in r["results"]))
    console.print(table)


# -- rules --------------------------------------------------------------------------------------


@rules_app.command("list")
def rules_list(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """The rules, in the order they are tried."""
    rows = state(ctx).app().bounces.rules()
    if as_json:
        emit_json([asdict(r) for r in rows])
        return
    table = Table("pos", "id", "status", "pattern", "type", "reason")
    for r in rows:
        table.add_row(str(r.position), r.id, r.status, r.pattern[:50],
                      r.failure_type,
                      FailureReason(r.reason).label)
    console.print(table)


@rules_app.command("add")
def rules_add(
    ctx: typer.Context, rule_id: str,
    failure_type: str = typer.Option(..., "--type", help="hard, soft, ignored, undefined."),
    reason: int = typer.Option(..., help="Failure reason code (DESIGN.md §5)."),
    pattern: str = typer.Option("", help="Regular expression on the text (any case)."),
    status: str = typer.Option("", help="Enhanced status prefix, e.g. 5.1.1 or 4.2."),
    description: str = typer.Option(""),
    position: int | None = typer.Option(None, help="Order (lower first); default: last."),
) -> None:
    """Add a rule."""
    row = state(ctx).app().bounces.add_rule(
        rule_id=rule_id, pattern=pattern, status=status, failure_type=failure_type,
        reason=reason, description=description, position=position)
    console.print(f"added rule {row.id} at position {row.position}")


@rules_app.command("edit")
def rules_edit(
    ctx: typer.Context, rule_id: str,
    failure_type: str | None = typer.Option(None, "--type"),
    reason: int | None = typer.Option(None), pattern: str | None = typer.Option(None),
    status: str | None = typer.Option(None), description: str | None = typer.Option(None),
    position: int | None = typer.Option(None),
) -> None:
    """Change a rule (built-in ones too)."""
    row = state(ctx).app().bounces.edit_rule(
        rule_id, failure_type=failure_type, reason=reason, pattern=pattern, status=status,
        description=description, position=position)
    console.print(f"rule {row.id}: {row.failure_type}, reason {row.reason}")


@rules_app.command("delete")
def rules_delete(ctx: typer.Context, rule_id: str) -> None:
    """Delete a rule."""
    state(ctx).app().bounces.delete_rule(rule_id)
    console.print(f"deleted rule {rule_id}")


@rules_app.command("test")
def rules_test(ctx: typer.Context, text: str,
               status: str | None = typer.Option(None, help="Enhanced status code."),
               as_json: bool = JsonOption) -> None:
    """Which rule a reply or diagnostic text matches, and the verdict."""
    result = state(ctx).app().bounces.test_rule(text, status)
    emit_json(result) if as_json else console.print(
        f"{result['failure_type']}, {result['reason_label']} ({result['reason']}), "
        f"rule {result['rule'] or '(none: to qualify)'}", highlight=False)


@rules_app.command("unqualified")
def rules_unqualified(ctx: typer.Context, limit: int = typer.Option(50, min=1),
                      as_json: bool = JsonOption) -> None:
    """Texts no rule matched, most frequent first (add rules for them)."""
    rows = state(ctx).app().bounces.list_unqualified(limit)
    if as_json:
        emit_json(rows)
        return
    table = Table("count", "normalized text", "first seen")
    for r in rows:
        table.add_row(str(r["count"]), r["normalized"][:90], str(r["first_seen"]))
    console.print(table)


# -- quarantine ---------------------------------------------------------------------------------


def _address_json(row: Any) -> dict[str, Any]:
    return {"address": row.address, "status": row.status, "error_count": row.error_count,
            "last_error_at": row.last_error_at.isoformat() if row.last_error_at else None,
            "last_reason": row.last_reason, "last_text": row.last_text,
            "status_since": row.status_since.isoformat()}


@quarantine_app.command("list")
def quarantine_list(
    ctx: typer.Context,
    status: list[str] = typer.Option(["quarantine", "denylisted"],
                                     help="quarantine, denylisted, with_errors."),
    domain: str | None = typer.Option(None), limit: int = typer.Option(200, min=1),
    as_json: bool = JsonOption,
) -> None:
    """Addresses in quarantine or on the denylist."""
    rows = state(ctx).app().quarantine.list_addresses(statuses=status, domain=domain,
                                                           limit=limit)
    if as_json:
        emit_json([_address_json(r) for r in rows])
        return
    table = Table("address", "status", "errors", "since", "last error")
    for r in rows:
        table.add_row(r.address, r.status, str(r.error_count), r.status_since.isoformat(),
                      r.last_text[:60])
    console.print(table)


@quarantine_app.command("show")
def quarantine_show(ctx: typer.Context, address: str, as_json: bool = JsonOption) -> None:
    """One address's status and its last error."""
    address = normalize_address(address)  # the domain's case does not matter
    row = state(ctx).app().quarantine.get_address(address)
    data = _address_json(row) if row else {"address": address, "status": "valid"}
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        console.print(f"{key}: {escape(str(value))}", highlight=False)


@quarantine_app.command("release")
def quarantine_release(
    ctx: typer.Context,
    addresses: list[str] = typer.Argument(None, help="Addresses to release."),
    domain: str | None = typer.Option(None, help="Release every address of this domain..."),
    since: datetime | None = typer.Option(None, help="...quarantined at or after this time"),
    until: datetime | None = typer.Option(None, help="...and before this time (UTC)."),
    denylisted: bool = typer.Option(False, help="Also release denylisted addresses."),
) -> None:
    """Release addresses from quarantine (one, several, or in bulk by domain and window)."""
    count = state(ctx).app().quarantine.release_addresses(
        addresses or [], domain=domain, since=_utc(since), until=_utc(until),
        denylisted=denylisted)
    if domain and not count and not addresses:
        console.print(f"no address of {domain} to release in that window")
        return
    console.print(f"released {count} addresses")


def _utc(value: datetime | None) -> datetime | None:
    from datetime import UTC

    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@reports_app.command("non-deliverables")
def non_deliverables(ctx: typer.Context,
                     since: datetime | None = typer.Option(None, help="Failures since (UTC)."),
                     as_json: bool = JsonOption) -> None:
    """Failures across deliveries by type, reason and domain, and the quarantine."""
    data = state(ctx).app().reports.non_deliverables(since=_utc(since)).to_json()
    if as_json:
        emit_json(data)
        return
    for title, key in (("by reason", "failed_by_reason"), ("by type", "failed_by_type"),
                       ("by domain", "failed_by_domain"), ("addresses", "addresses")):
        console.print(f"[bold]{title}[/]: " + ", ".join(f"{k} {v}"
                                                       for k, v in data[key].items()))
