"""The `postroom` command: one sub-command group per concept, wired here."""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import typer
from rich.markup import escape

from postroom import held_signal
from postroom.app.errors import error_kind, mapping_for
from postroom.cli import (
    accounts,
    archive,
    bounces,
    config,
    deliveries,
    demo,
    recipients,
    templates,
    web,
    workers,
)
from postroom.cli.common import State, err_console
from postroom.errors import PostroomError

app = typer.Typer(
    name="postroom",
    help="Postroom: email deliveries with personalization, delivery logs and Email BCC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: Typer's Rich help shows flags as `--json <bool>`
)
app.add_typer(recipients.app, name="recipients")
app.add_typer(templates.app, name="templates")
app.add_typer(deliveries.app, name="deliveries")
app.add_typer(archive.app, name="archive")
app.add_typer(config.app, name="config")
app.add_typer(web.mirror_app, name="mirror")
app.add_typer(bounces.bounces_app, name="bounces")
app.add_typer(bounces.rules_app, name="rules")
app.add_typer(bounces.quarantine_app, name="quarantine")
app.add_typer(bounces.reports_app, name="reports")
app.add_typer(accounts.users_app, name="users")
app.add_typer(accounts.tokens_app, name="tokens")
app.command("audit")(accounts.audit)
app.command("init")(config.init)
app.command("demo")(demo.demo)
app.command("serve")(web.serve)
app.command("worker")(workers.worker)
app.command("workers")(workers.workers)
app.command("health")(workers.health)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"postroom {version('postroom')}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config_file: Path | None = typer.Option(
        None, "--config", "-c", help="Settings file (TOML). Default: $POSTROOM_CONFIG, "
        "then ./postroom.toml if present.", envvar="POSTROOM_CONFIG"),
    _show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
) -> None:
    ctx.obj = State(config_file)
    if ctx.invoked_subcommand != "worker":
        held_signal.release()  # only a worker holds a SIGTERM that comes while it starts


def main() -> None:
    """Entry point: user errors print one clear message and exit non-zero, never a traceback.

    Under --json the message is JSON too (`{"error": ..., "kind": ...}` on stderr), for the
    script that asked for JSON."""
    try:
        app()
    except PostroomError as exc:
        code = mapping_for(exc).exit_code
        if "--json" in sys.argv[1:]:
            err_console.print_json(json.dumps({"error": str(exc), "kind": error_kind(exc),
                                               "exit_code": code}, ensure_ascii=False))
        else:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                              soft_wrap=True)  # one line, whatever the terminal's width
        sys.exit(code)

