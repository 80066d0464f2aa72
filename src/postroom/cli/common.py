"""What every command group shares: the lazily built Postroom, output as JSON or Rich."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from postroom.service import Postroom
from postroom.settings import Settings, load_settings

__all__ = ["JsonOption", "State", "console", "emit_json", "progress_bar", "state"]

console = Console()
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")


@dataclass
class State:
    config: Path | None = None
    _settings: Settings | None = None
    _postroom: Postroom | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    def postroom(self, *, wait_for_database: bool = False) -> Postroom:
        """The instance; `wait_for_database`: a database that is down at start is waited for
        (sending.database_wait_seconds), as a worker does."""
        if self._postroom is None:
            from postroom.wiring import build

            settings = self.settings()
            self._postroom = build(settings, wait_for_database=settings.sending
                                   .database_wait_seconds if wait_for_database else 0.0)
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
