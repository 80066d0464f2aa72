"""`postroom config ...`"""

from __future__ import annotations

import typer

from postroom.cli.common import JsonOption, console, emit_json, state
from postroom.settings import config_sources, mask_url, masked_dump, sqlite_file

app = typer.Typer(help="The instance configuration.", no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """The effective settings (environment over file over defaults), secrets masked, and
    where they come from: the file and the POSTROOM_* variables in effect."""
    data = masked_dump(state(ctx).settings())
    config_file, environment, ignored = config_sources(state(ctx).config)
    sources = {"file": str(config_file.resolve()) if config_file else None,
               "environment": environment, "ignored_environment": ignored}
    if as_json:
        emit_json({**data, "sources": sources})
        return
    console.print(f"# file: {sources['file'] or 'none (defaults and environment only)'}",
                  markup=False, highlight=False)
    console.print("# environment: " + (", ".join(environment) or "no POSTROOM_* variable"),
                  markup=False, highlight=False)
    if ignored:
        console.print("# ignored (not a setting): " + ", ".join(ignored), markup=False,
                      highlight=False)

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            console.print(f"{prefix} = {node!r}", markup=False, highlight=False)

    walk("", data)


def init(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Create the database at database_url (a new SQLite file, or the tables in an empty
    PostgreSQL database), or bring an existing one to the newest schema."""
    settings = state(ctx).settings()
    path = sqlite_file(settings.database_url)
    created = path is not None and not path.exists()
    state(ctx).postroom(create=True)
    config_file, _, _ = config_sources(state(ctx).config)
    where = str(path.resolve()) if path is not None else mask_url(settings.database_url)
    if as_json:
        emit_json({"database": where, "created": created,
                   "config_file": str(config_file.resolve()) if config_file else None})
        return
    console.print(f"{'created the database' if created else 'database ready (newest schema)'}"
                  f": {where}", markup=False, highlight=False)
    console.print(f"settings: {config_file.resolve() if config_file else 'no file (defaults)'}",
                  markup=False, highlight=False)
