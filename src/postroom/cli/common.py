"""What every command group shares: the lazily built Postroom, output as JSON or Rich.

Text in tables is printed as text: SMTP replies, bounce diagnostics, addresses and file names
come from other parties, and Rich markup in them (`550 5.7.1 [/] ...`) must neither be
interpreted nor crash the command. Styled cells are passed as `rich.text.Text`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import typer
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.style import StyleType
from rich.table import Table as RichTable
from rich.text import Text

from postroom import held_signal
from postroom.accounts.actor import cli_actor
from postroom.app import Postroom
from postroom.errors import ConfigError
from postroom.settings import Settings, config_sources, load_settings, sqlite_file

__all__ = ["JsonOption", "State", "Table", "console", "emit_json", "progress_bar", "state"]

_PIPED_WIDTH = 10_000


def _console(*, stderr: bool) -> Console:
    """A terminal's width is its own; piped or redirected output is never wrapped (Rich would
    wrap it at 80 columns), so that scripts and logs see whole lines."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty()
    return Console(stderr=stderr, soft_wrap=piped, width=_PIPED_WIDTH if piped else None)


console = _console(stderr=False)
err_console = _console(stderr=True)

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

    def postroom(self, *, create: bool = False, wait_for_database: bool = False) -> Postroom:
        """The Postroom of these settings. A SQLite file that does not exist is created only
        when `create` (`postroom init`): elsewhere it is an error, since it usually means the
        command ran outside the folder of its postroom.toml. `wait_for_database`: a database
        that is down at start is waited for (sending.database_wait_seconds), as a worker does,
        until a held SIGTERM (held_signal) ends the wait."""
        if self._postroom is None:
            from postroom.wiring import build

            settings = self.settings()
            path = sqlite_file(settings.database_url)
            if path is not None and not path.exists():
                if not create:
                    raise ConfigError(self._missing_database(path))
                path.parent.mkdir(parents=True, exist_ok=True)
            self._postroom = build(settings, wait_for_database=settings.sending
                                   .database_wait_seconds if wait_for_database else 0.0,
                                   stop_waiting=held_signal.received)
        return self._postroom

    def app(self, *, wait_for_database: bool = False) -> Postroom:
        """The services as the CLI's user reaches them: through `acting_as(cli_actor())`, so
        every call is checked against the permission table and every change audited under the
        OS user's name. Typed as the container, whose services (and only those) it exposes."""
        view = self.postroom(wait_for_database=wait_for_database).acting_as(cli_actor())
        return cast(Postroom, view)

    def _missing_database(self, path: Path) -> str:
        config_file, environment, _ = config_sources(self.config)
        origin = ("$POSTROOM_DATABASE_URL" if "POSTROOM_DATABASE_URL" in environment
                  else str(config_file) if config_file else "the default")
        where = (f"settings from {config_file}" if config_file else
                 f"no configuration file (no --config, no $POSTROOM_CONFIG, no "
                 f"./postroom.toml in {Path.cwd()})")
        return (f"database_url (from {origin}): the SQLite database {path.resolve()} does not "
                f"exist; {where}. Run from the folder of your postroom.toml or pass --config; "
                "`postroom init` creates a new database")


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
