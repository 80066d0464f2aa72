"""`postroom archive ...`: the Email BCC outbox."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from postroom.archive.ledger import Checkpoint, format_time
from postroom.archive.signing import Signer, new_private_key_hex
from postroom.archive.stores import ArchiveReader, imap_copies, parse_imap_url, tree_copies
from postroom.archive.verify import Scope, VerifyReport
from postroom.cli.common import (
    JsonOption,
    Table,
    console,
    emit_json,
    err_console,
    progress_bar,
    state,
)
from postroom.errors import PostroomError

app = typer.Typer(help="Email BCC archive copies.", no_args_is_help=True)


@app.command("status")
def status(
    ctx: typer.Context,
    delivery: int | None = typer.Option(None, help="Only this delivery."),
    as_json: bool = JsonOption,
) -> None:
    """Pending / archived / failed copies per delivery, with the latest replies."""
    result = state(ctx).app().archive.status(delivery)
    if as_json:
        emit_json(result.to_json())
        return
    console.print(f"Email BCC is {'on' if result.enabled else 'off'} on this instance; "
                  f"sink: {result.sink} ({result.target}); ledger: "
                  f"{result.ledger_entries} entries")
    table = Table("delivery", "pending", "archived", "failed", "latest reply")
    for row in result.deliveries:
        replied = [r for r in row["recent"] if r["reply"]]
        latest = (f"{replied[0]['state']}: {replied[0]['reply']}" if replied
                  else "pending: not attempted yet" if row["recent"] else "")
        table.add_row(str(row["delivery"]), str(row["pending"]), str(row["archived"]),
                      str(row["failed"]), latest)
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
    left = asyncio.run(state(ctx).app().archive.flush(
        delivery_id=delivery, wait_seconds=wait, retry_failed=retry_failed))
    if as_json:
        emit_json({"pending": left})
    else:
        console.print(f"{left} archive copies still pending")
    if left:
        raise typer.Exit(1)


@app.command("verify")
def verify(
    ctx: typer.Context,
    delivery: int | None = typer.Option(None, help="Only this delivery's copies."),
    since: datetime | None = typer.Option(None, help="Only messages sent at or after (UTC)."),
    until: datetime | None = typer.Option(None, help="Only messages sent before (UTC)."),
    maildir: Path | None = typer.Option(None, help="Read a Maildir folder (new/ and cur/)."),
    directory: Path | None = typer.Option(None, help="Read a directory sink (*.eml)."),
    imap: str | None = typer.Option(
        None, help="Read an IMAP folder: imaps://user@host/folder; the password from "
        "POSTROOM_ARCHIVE__IMAP_PASSWORD."),
    max_mb: float = typer.Option(64.0, help="Copies larger than this are reported unread."),
    as_json: bool = JsonOption,
) -> None:
    """Reconcile what was sent with what the archive holds; exit 1 if any copy is missing,
    altered or unexpected."""
    sources = [s for s in (maildir, directory, imap) if s is not None]
    if len(sources) != 1:
        err_console.print("give exactly one of --maildir, --directory, --imap")
        raise typer.Exit(2)
    limit = int(max_mb * 1024 * 1024)
    reader: ArchiveReader
    try:
        if imap is not None:
            password = state(ctx).settings().archive.imap_password.get_secret_value()
            reader = imap_copies(parse_imap_url(imap), password, max_bytes=limit)
        else:
            root = maildir if maildir is not None else directory
            assert root is not None
            reader = tree_copies(root, max_bytes=limit)
        postroom = state(ctx).app()
        scope = Scope(delivery, _utc(since), _utc(until))
        with progress_bar("reading the archive", None, enabled=not as_json) as advance:
            report = postroom.archive.verify(reader, scope, progress=advance)
    except PostroomError as exc:
        err_console.print(f"archive verify: {exc}")
        raise typer.Exit(2) from None
    if as_json:
        emit_json(report.as_dict())
    else:
        _print_verify(report)
    if not report.ok:
        raise typer.Exit(1)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _print_verify(report: VerifyReport) -> None:
    table = Table("expected", "verified", "missing", "duplicated", "altered", "unexpected",
                  "other deliveries", "read", "not acknowledged", "archive lag")
    lag = "none" if report.lag_seconds is None else f"{report.lag_seconds:.0f} s"
    table.add_row(*(str(n) for n in (report.expected, report.verified, report.missing,
                                     report.duplicated, report.altered, report.unexpected,
                                     report.out_of_scope, report.read,
                                     report.not_acknowledged)), lag)
    console.print(table)
    for category, items in report.items.items():
        for item in items:
            console.print(f"{category}: " + ", ".join(f"{k}={v}" for k, v in item.items()))
    console.print("archive verified" if report.ok else "[red]archive NOT verified[/red]")


ledger_app = typer.Typer(help="The archive hash ledger: verify, export, checkpoints, keys.",
                         no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


def _signer(ctx: typer.Context) -> Signer | None:
    key = state(ctx).settings().archive.ledger_key.get_secret_value()
    return Signer(key) if key else None


@ledger_app.command("verify")
def ledger_verify(
    ctx: typer.Context,
    public_key: str | None = typer.Option(
        None, help="Checkpoints must verify with this public key (hex); default: the key of "
        "archive.ledger_key."),
    as_json: bool = JsonOption,
) -> None:
    """Check the whole chain, its head and every signed checkpoint; exit 1 on any fault."""
    signer = _signer(ctx)
    key = public_key or (signer.public_key if signer else None)
    report = state(ctx).app().archive.verify_ledger(key)
    result = {"ok": report.ok, "entries": report.count, "head": report.head,
              "first_fault": None if report.fault is None else
              {"seq": report.fault.seq, "problem": report.fault.problem},
              "head_problem": report.head_problem,
              "checkpoints_verified": report.checkpoints_verified,
              "checkpoint_problems": report.checkpoint_problems,
              "public_key": key}
    if as_json:
        emit_json(result)
    else:
        console.print(f"{report.count} entries, head {report.head}")
        if report.fault is not None:
            console.print(f"[red]first broken entry: {report.fault}[/red]")
        if report.head_problem:
            console.print(f"[red]{report.head_problem}[/red]")
        for problem in report.checkpoint_problems:
            console.print(f"[red]{problem}[/red]")
        console.print(f"{report.checkpoints_verified} signed checkpoints verified"
                      + ("" if key else " (no public key given: each with the key it names)"))
        console.print("ledger OK" if report.ok else "[red]ledger NOT OK[/red]")
    if not report.ok:
        raise typer.Exit(1)


@ledger_app.command("export")
def ledger_export(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", "-o", help="JSON Lines file to write ('-': stdout)."),
    delivery: int | None = typer.Option(None, help="Only this delivery's entries in full."),
    since: datetime | None = typer.Option(
        None, help="Only entries acknowledged at or after this UTC time in full."),
) -> None:
    """Write entries (others as stubs that keep the chain) and checkpoints for an auditor."""
    postroom = state(ctx).app()
    moment = _utc(since)
    if str(out) == "-":
        full, stubs, signed = postroom.archive.export_ledger(sys.stdout, delivery_id=delivery,
                                                             since=moment)
        return
    with out.open("w", encoding="utf-8") as handle:
        full, stubs, signed = postroom.archive.export_ledger(handle, delivery_id=delivery,
                                                             since=moment)
    err_console.print(f"{full} entries, {stubs} stubs, {signed} checkpoints written to {out}")


@ledger_app.command("checkpoint")
def ledger_checkpoint(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Sign the chain head now (archive.ledger_key must be set)."""
    signer = _signer(ctx)
    if signer is None:
        err_console.print("archive.ledger_key is not set (POSTROOM_ARCHIVE__LEDGER_KEY): "
                          "nothing can be signed")
        raise typer.Exit(2)
    checkpoint = state(ctx).app().archive.ledger_checkpoint()
    if as_json:
        emit_json(checkpoint.export())
    else:
        _print_checkpoints([checkpoint])


@ledger_app.command("checkpoints")
def ledger_checkpoints(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Print the signed checkpoints (head, count, time, public key, signature)."""
    checkpoints = state(ctx).app().archive.ledger_checkpoints()
    if as_json:
        emit_json([cp.export() for cp in checkpoints])
    else:
        _print_checkpoints(checkpoints)


def _print_checkpoints(checkpoints: list[Checkpoint]) -> None:
    for cp in checkpoints:
        console.print(f"count {cp.count}  time {format_time(cp.time)}\n  head      {cp.head}\n"
                      f"  key       {cp.public_key}\n  signature {cp.signature}")


@ledger_app.command("keygen")
def ledger_keygen(
    out: Path = typer.Option(..., "--out", "-o", help="File to write the private key to "
                             "(created with mode 600; it is never printed)."),
) -> None:
    """Make a checkpoint signing key; prints only the public key."""
    seed, public = new_private_key_hex()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        err_console.print(f"{out} exists: not overwritten")
        raise typer.Exit(2) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(seed + "\n")
    console.print(f"private key written to {out}; set POSTROOM_ARCHIVE__LEDGER_KEY from it")
    console.print(f"public key: {public}")


@ledger_app.command("public-key")
def ledger_public_key(ctx: typer.Context) -> None:
    """Print the public key of archive.ledger_key (what an auditor needs)."""
    signer = _signer(ctx)
    if signer is None:
        err_console.print("archive.ledger_key is not set (POSTROOM_ARCHIVE__LEDGER_KEY)")
        raise typer.Exit(2)
    console.print(signer.public_key)
