"""`postroom worker`, `postroom workers`, `postroom health`: running and watching senders."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime

import typer

from postroom.cli.common import JsonOption, Table, console, emit_json, err_console, state
from postroom.delivery.engine import RunSummary
from postroom.delivery.worker import halting_on_signals
from postroom.errors import DatabaseUnavailable


def worker(
    ctx: typer.Context,
    until_idle: bool = typer.Option(False, "--until-idle",
                                    help="Exit when no delivery has anything due."),
    as_json: bool = JsonOption,
) -> None:
    """Send every delivery in state `sending`, with any number of other workers, until
    SIGTERM (in-flight messages finish and are recorded, the rest is given back).

    The database may be down for up to sending.database_wait_seconds, at start or later: the
    worker waits and retries; past that it exits 1 with the reason."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        postroom = state(ctx).app(wait_for_database=True)
    except DatabaseUnavailable as exc:
        if not exc.stopped:
            raise
        console.print(f"worker stopped before it started: {exc}", highlight=False)
        return

    def on_run(run: RunSummary) -> None:
        if not as_json:
            err_console.print(f"delivery #{run.delivery_id}: {run.state}; sent {run.sent}, "
                              f"failed {run.failed}, retry later {run.deferred}"
                              + (f"; {run.relay_faults} held by a relay fault: "
                                 f"{run.relay_fault}" if run.relay_faults else "")
                              + (f" — {run.paused_reason}" if run.paused_reason else ""),
                              highlight=False)

    halt = asyncio.Event()
    summary = asyncio.run(halting_on_signals(
        halt, postroom.sending.work(halt, until_idle=until_idle, on_run=on_run)))
    if as_json:
        emit_json({"worker": summary.worker_id, "sent": summary.sent,
                   "runs": [{"delivery": r.delivery_id, "state": r.state, "sent": r.sent,
                             "failed": r.failed, "deferred": r.deferred,
                             "in_doubt": r.in_doubt, "relay_faults": r.relay_faults,
                             "relay_fault": r.relay_fault or None} for r in summary.runs]})
    else:
        console.print(f"worker {summary.worker_id} stopped; sent {summary.sent}")


def workers(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Senders (workers and one-off sends): alive or not, what they hold, what they sent."""
    postroom = state(ctx).app()
    rows = postroom.operations.workers()
    now = datetime.now(UTC)
    data = [{"id": w.id, "kind": w.kind, "host": w.host, "pid": w.pid,
             "state": postroom.operations.worker_state(w), "error": w.error,
             "delivery": w.delivery_id, "leases": w.leases, "sent": w.sent,
             "heartbeat_age_seconds": round((now - w.heartbeat_at).total_seconds(), 1),
             "started_at": w.started_at.isoformat()} for w in rows]
    if as_json:
        emit_json(data)
        return
    table = Table("id", "kind", "state", "delivery", "leases", "sent", "last beat")
    for row in data:
        table.add_row(str(row["id"]), str(row["kind"]),
                      str(row["state"]) + (f": {row['error']}" if row["error"] else ""),
                      "" if row["delivery"] is None else f"#{row['delivery']}",
                      str(row["leases"]), str(row["sent"]),
                      f"{row['heartbeat_age_seconds']} s ago")
    console.print(table)


def health(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Exit 0 when healthy, 1 otherwise; for monitoring (also GET /health on `serve`)."""
    result = state(ctx).app().operations.health()
    if as_json:
        emit_json(result.to_json())
    else:
        console.print(f"{'ok' if result.ok else 'PROBLEM'}: {result.live_workers} live "
                      f"senders, {result.deliveries.get('sending', 0)} deliveries sending, "
                      f"archive {result.archive or 'empty'}", highlight=False)
        for line in result.problems:
            console.print(f"[red]problem:[/] {line}", highlight=False)
        for line in result.notes:
            console.print(f"note: {line}", highlight=False)
    raise typer.Exit(0 if result.ok else 1)
