"""`postroom serve` and `postroom mirror ...`"""

from __future__ import annotations

import typer

from postroom.cli.common import JsonOption, console, emit_json, state

mirror_app = typer.Typer(help="Mirror pages.", no_args_is_help=True)


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Listen address (default: web.host)."),
    port: int | None = typer.Option(None, help="Port (default: web.port)."),
) -> None:
    """Serve mirror pages and one-click unsubscribe over HTTP."""
    import uvicorn

    from postroom.web.app import create_app

    postroom = state(ctx).postroom()
    web = postroom.settings.web
    uvicorn.run(create_app(postroom), host=host or web.host, port=port or web.port,
                log_level="info", access_log=False)


@mirror_app.command("purge")
def purge(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Delete mirror pages whose resource validity has ended."""
    removed = state(ctx).app().links.purge_mirrors()
    emit_json({"purged": removed}) if as_json else console.print(f"purged {removed} pages")
