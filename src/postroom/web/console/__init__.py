"""The operator console, mounted at ``/console`` by `postroom serve` (docs/console.md)."""

from postroom.web.console.app import create_console

__all__ = ["create_console"]
