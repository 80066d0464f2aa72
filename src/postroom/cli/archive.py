"""`postroom archive ...`: the Email BCC outbox."""

from __future__ import annotations

from typing import Any

import typer

from postroom.cli.common import JsonOption, Table, console, emit_json, state

app = typer.Typer(help="Email BCC archive copies.", no_args_is_help=True)


@app.command("status")
def status(
    ctx: typer.Context,
    delivery: int | None = typer.Option(None, help="Only this delivery."),
    as_json: bool = JsonOption,
) -> None:
    """Pending / archived / failed copies per delivery, with the latest replies."""
    postroom = state(ctx).postroom()
    counts = postroom.store.archive_counts(delivery)
    rows: list[dict[str, Any]] = []
    for delivery_id in sorted(counts):
        states = counts[delivery_id]
        rows.append({"delivery": delivery_id, "pending": states.get("pending", 0),
                     "archived": states.get("archived", 0), "failed": states.get("failed", 0),
                     "recent": [{"log": log, "state": st, "reply": reply} for log, st, reply
                                in postroom.store.archive_replies(delivery_id, limit=5)]})
    settings = postroom.settings.archive
    if as_json:
        emit_json({"enabled": settings.enabled, "deliveries": rows})
        return
    console.print(f"Email BCC is {'on' if settings.enabled else 'off'} on this instance")
    table = Table("delivery", "pending", "archived", "failed", "latest reply")
    for row in rows:
        recent = row["recent"]
        latest = f"{recent[0]['state']}: {recent[0]['reply']}" if recent else ""
        table.add_row(str(row["delivery"]), str(row["pending"]), str(row["archived"]),
                      str(row["failed"]), latest[:70])
    console.print(table)


@app.command("flush")
def flush(
    ctx: typer.Context,
    delivery: int | None = typer.Option(None, help="Only this delivery."),
    wait: float = typer.Option(30.0, help="Seconds to keep retrying while copies are pending."),
    retry_failed: bool = typer.Option(False, help="Also retry copies that failed for good."),
    as_json: bool = JsonOption,
) -> None:
    """Send pending archive copies now (after the archive relay is back)."""
    left = state(ctx).postroom().archive_flush(delivery_id=delivery, wait_seconds=wait,
                                               retry_failed=retry_failed)
    if as_json:
        emit_json({"pending": left})
    else:
        console.print(f"{left} archive copies still pending")
    if left:
        raise typer.Exit(1)
