"""`postroom users ...`, `postroom tokens ...` and `postroom audit`.

Like every command, these act as `cli_actor()` (the OS user, every permission) through
`State.app()`, so what they change is audited like a change made in the console or the API.
"""

from __future__ import annotations

import sys
from datetime import datetime

import typer

from postroom.accounts.records import AuditFilter
from postroom.app import Postroom
from postroom.cli.common import JsonOption, Table, console, emit_json, state
from postroom.errors import InputError

users_app = typer.Typer(help="User accounts of the console and the API.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (Authorization: Bearer <token>).",
                         no_args_is_help=True)


def acting(ctx: typer.Context) -> Postroom:
    return state(ctx).app()


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def read_password(from_stdin: bool) -> str:
    """The first line of standard input, or a hidden prompt asked twice."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise InputError("--password-stdin: standard input is empty")
        return line.rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("create")
def users_create(
    ctx: typer.Context,
    name: str,
    role: str = typer.Option(..., help="admin, operator, sender, viewer or compliance."),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from standard input."),
    as_json: bool = JsonOption,
) -> None:
    """Create a user (the password is asked for, or read with --password-stdin)."""
    password = read_password(password_stdin)
    user = acting(ctx).accounts.create_user(name, role, password)
    emit_json(user.to_json()) if as_json else console.print(
        f"created user {user.name!r} ({user.role})", highlight=False)


@users_app.command("list")
def users_list(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Every user, with role and state."""
    users = acting(ctx).accounts.list_users()
    if as_json:
        emit_json([u.to_json() for u in users])
        return
    table = Table("name", "role", "state", "created")
    for u in users:
        table.add_row(u.name, u.role, "disabled" if u.disabled else "active",
                      _when(u.created_at))
    console.print(table)


@users_app.command("disable")
def users_disable(ctx: typer.Context, name: str, as_json: bool = JsonOption) -> None:
    """Disable a user: no more log-ins, and the user's API tokens stop working."""
    user = acting(ctx).accounts.disable_user(name)
    emit_json(user.to_json()) if as_json else console.print(f"disabled user {user.name!r}",
                                                            highlight=False)


@users_app.command("password")
def users_password(
    ctx: typer.Context, name: str,
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from standard input."),
) -> None:
    """Set a user's password."""
    acting(ctx).accounts.set_password(name, read_password(password_stdin))
    console.print(f"password of {name!r} changed", highlight=False)


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    user: str = typer.Option(..., "--user", help="The user the token acts as."),
    role: str | None = typer.Option(None, help="A narrower role than the user's."),
    name: str = typer.Option("", help="What the token is for (shown in `tokens list`)."),
    as_json: bool = JsonOption,
) -> None:
    """Create an API token and print it: this is the only time it is shown."""
    made = acting(ctx).accounts.create_token(user, role=role, name=name)
    if as_json:
        emit_json({**made.info.to_json(), "token": made.token})
        return
    role_text = made.info.role or "the user's role"
    console.print(f"token #{made.info.id} for {made.info.user!r} ({role_text}); it is shown "
                  "only now:",
                  highlight=False)
    typer.echo(made.token)


@tokens_app.command("list")
def tokens_list(
    ctx: typer.Context,
    user: str | None = typer.Option(None, "--user", help="Only this user's tokens."),
    as_json: bool = JsonOption,
) -> None:
    """API tokens (never the tokens themselves)."""
    tokens = acting(ctx).accounts.list_tokens(user)
    if as_json:
        emit_json([t.to_json() for t in tokens])
        return
    table = Table("id", "user", "name", "role", "created", "last used", "revoked")
    for t in tokens:
        table.add_row(str(t.id), t.user, t.name, t.role or "(user's)", _when(t.created_at),
                      _when(t.last_used_at), _when(t.revoked_at))
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(ctx: typer.Context, token_id: int, as_json: bool = JsonOption) -> None:
    """Revoke an API token by its id (see `tokens list`)."""
    token = acting(ctx).accounts.revoke_token(token_id)
    emit_json(token.to_json()) if as_json else console.print(
        f"revoked token #{token.id} of {token.user!r}", highlight=False)


def audit(
    ctx: typer.Context,
    limit: int = typer.Option(50, min=1, max=1000, help="How many entries, newest first."),
    before: int | None = typer.Option(None, help="Only entries older than this id (paging)."),
    actor: str | None = typer.Option(None, help="Only this actor's entries."),
    action: str | None = typer.Option(None, help="A concern (templates) or concern.method."),
    outcome: str | None = typer.Option(None, help="ok, denied or error."),
    as_json: bool = JsonOption,
) -> None:
    """The audit log: who changed what, when, from where."""
    if outcome not in (None, "ok", "denied", "error"):
        raise InputError(f"--outcome {outcome!r}: use ok, denied or error")
    entries = acting(ctx).accounts.audit(
        AuditFilter(actor=actor, action=action, outcome=outcome),  # type: ignore[arg-type]
        limit=limit, before_id=before)
    if as_json:
        emit_json([e.to_json() for e in entries])
        return
    table = Table("id", "at", "actor", "role", "from", "action", "target", "outcome")
    for e in entries:
        table.add_row(str(e.id), _when(e.at), e.actor, e.role,
                      e.origin + (f" {e.remote}" if e.remote else ""), e.action, e.target,
                      e.outcome)
    console.print(table)
