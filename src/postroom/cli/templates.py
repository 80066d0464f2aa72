"""`postroom templates ...`"""

from __future__ import annotations

from pathlib import Path

import typer

from postroom.app.templates import content_problems, load_template_file
from postroom.cli.common import JsonOption, Table, console, emit_json, state
from postroom.domain.models import Template
from postroom.errors import InputError

app = typer.Typer(help="Delivery templates: reusable settings and content.", no_args_is_help=True)


def _describe(template: Template, *, check: bool = True) -> dict[str, object]:
    """The template as JSON; `check` compiles it to add its problems (never for `list`)."""
    described: dict[str, object] = {"name": template.name, "builtin": template.builtin}
    if check:
        described["problems"] = content_problems(template.properties)
    return described | {"properties": template.properties.model_dump(mode="json")}


@app.command("create")
def create(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="TOML definition; html_file/text_file name content."),
    name: str | None = typer.Option(None, help="Name (default: `name` in the file)."),
    as_json: bool = JsonOption,
) -> None:
    """Create a template from a TOML file."""
    file_name, data = load_template_file(file)
    chosen = name or file_name
    if not chosen:
        raise InputError(f"{file}: no `name` in the file; pass --name")
    template = state(ctx).app().templates.create_template(chosen, data)
    _show(template, as_json)


@app.command("update")
def update(ctx: typer.Context, name: str, file: Path, as_json: bool = JsonOption) -> None:
    """Change a template's properties to those in a TOML file (only the keys it sets)."""
    _, data = load_template_file(file)
    _show(state(ctx).app().templates.update_template(name, data), as_json)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """All templates."""
    templates = state(ctx).app().templates.list_templates()
    if as_json:
        emit_json([_describe(t, check=False) for t in templates])
        return
    table = Table("name", "built-in", "subject", "format", "email_bcc")
    for t in templates:
        p = t.properties
        table.add_row(t.name, "yes" if t.builtin else "", p.subject, p.format,
                      "on" if p.email_bcc else "off")
    console.print(table)


@app.command("show")
def show(ctx: typer.Context, name: str, as_json: bool = JsonOption) -> None:
    """One template's properties and content."""
    _show(state(ctx).app().templates.get_template(name), as_json)


@app.command("duplicate")
def duplicate(ctx: typer.Context, name: str, new_name: str, as_json: bool = JsonOption) -> None:
    """Copy a template (the way to change the built-in one)."""
    _show(state(ctx).app().templates.duplicate_template(name, new_name), as_json)


@app.command("delete")
def delete(ctx: typer.Context, name: str) -> None:
    """Delete a template (deliveries made from it keep their copy)."""
    state(ctx).app().templates.delete_template(name)
    console.print(f"deleted template {name!r}")


def _show(template: Template, as_json: bool) -> None:
    described = _describe(template)
    if as_json:
        emit_json(described)
        return
    console.print(f"[bold]{template.name}[/]" + (" (built-in, read-only)" if template.builtin
                                                 else ""))
    for key, value in template.properties.model_dump(mode="json").items():
        text = str(value)
        if key in ("html", "text") and len(text) > 60:
            text = text[:57].replace("\n", " ") + "..."
        console.print(f"  {key}: {text}", markup=False, highlight=False)
    for problem in content_problems(template.properties):
        console.print(f"  [red]problem:[/] {problem}", highlight=False)
