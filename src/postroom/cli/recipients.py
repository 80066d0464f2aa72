"""`postroom recipients ...`"""

from __future__ import annotations

from pathlib import Path

import typer

from postroom.cli.common import JsonOption, console, emit_json, progress_bar, state

app = typer.Typer(help="Import and count recipients.", no_args_is_help=True)


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV file with an `email` column."),
    encoding: str = typer.Option("utf-8", help="Character encoding of the file."),
    as_json: bool = JsonOption,
) -> None:
    """Import (or update, matched by email) recipients from a CSV file; exits 1 when every
    row was refused."""
    postroom = state(ctx).app()
    with progress_bar("importing", None, enabled=not as_json) as advance:
        report = postroom.recipients.import_recipients(file, encoding=encoding, progress=advance)
    if as_json:
        emit_json(report.to_json())
    else:
        console.print(f"{report.rows} rows: {report.inserted} new, {report.updated} updated, "
                      f"{report.rejected} rejected")
        for error in report.errors:
            console.print(f"  {file}: {error}", highlight=False, markup=False)
        if report.rejected > len(report.errors):
            console.print(f"  ... and {report.rejected - len(report.errors)} more")
    if report.rows and report.rejected == report.rows:
        raise typer.Exit(1)  # nothing imported: a script must not go on as if it had


@app.command("count")
def count(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """How many recipients the database holds."""
    total = state(ctx).app().recipients.count_recipients()
    emit_json({"recipients": total}) if as_json else console.print(f"{total} recipients")
