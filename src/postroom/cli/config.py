"""`postroom config ...`"""

from __future__ import annotations

import typer

from postroom.cli.common import JsonOption, console, emit_json, state
from postroom.settings import masked_dump

app = typer.Typer(help="The instance configuration.", no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """The effective settings (environment over file over defaults), secrets masked."""
    data = masked_dump(state(ctx).settings())
    if as_json:
        emit_json(data)
        return

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            console.print(f"{prefix} = {node!r}", markup=False, highlight=False)

    walk("", data)
