"""What every command group shares: the lazily built Postroom, output as JSON or Rich.

Text in tables is printed as text: SMTP replies, bounce diagnostics, addresses and file names
come from other parties, and Rich markup in them (`550 5.7.1 [/] ...`) must neither be
interpreted nor crash the command. Styled cells are passed as `rich.text.Text`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.style import StyleType
from rich.table import Table as RichTable
from rich.text import Text

from postroom.service import Postroom
from postroom.settings import Settings, load_settings

__all__ = ["JsonOption", "State", "Table", "console", "emit_json", "progress_bar", "state"]

console = Console()
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")


class Table(RichTable):
    """A Rich table whose string cells are plain text, never markup."""

    def add_row(self, *renderables: RenderableType | None, style: StyleType | None = None,
                end_section: bool = False) -> None:
        super().add_row(*(Text(cell) if isinstance(cell, str) else cell
                          for cell in renderables), style=style, end_section=end_section)


@dataclass
class State:
    config: Path | None = None
    _settings: Settings | None = None
    _postroom: Postroom | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    def postroom(self) -> Postroom:
        if self._postroom is None:
            from postroom.wiring import build

            self._postroom = build(self.settings())
        return self._postroom


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


@contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True) -> Iterator[
    Any
]:
    """A Rich progress bar on stderr; yields a function advancing it by n."""
    if not enabled:
        yield lambda n=1: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
