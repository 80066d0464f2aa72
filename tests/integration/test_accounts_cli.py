"""`postroom users|tokens|audit` as a user runs them: a real process, a real SQLite file; the
CLI's changes are audited under the OS user, and the token is printed once, never stored."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from postroom.settings import Settings
from postroom.testing.smtp_server import CaptureServer
from postroom.wiring import build
from tests.integration.test_cli import Cli

PASSWORD = "long enough password"


@pytest.fixture
def cli(tmp_path: Path, capture: Callable[..., CaptureServer]) -> Cli:
    return Cli(tmp_path, capture().port)


def _stdin(cli: Cli, *args: str, data: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postroom", *args], input=data,
                          capture_output=True, text=True, env=cli.env, cwd=cli.dir, timeout=120)


def test_users_tokens_and_the_audit_log(cli: Cli, tmp_path: Path) -> None:
    made = _stdin(cli, "users", "create", "olga", "--role", "operator", "--password-stdin",
                  data=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert "created user 'olga' (operator)" in made.stdout
    bad = _stdin(cli, "users", "create", "root", "--role", "superuser", "--password-stdin",
                 data=PASSWORD + "\n")
    assert bad.returncode == 2 and "not a role" in bad.stderr
    assert [(u["name"], u["role"], u["disabled"]) for u in cli.json("users", "list")] == [
        ("olga", "operator", False)]

    shown = cli.run("tokens", "create", "--user", "olga", "--role", "viewer", "--name", "ci")
    token = shown.stdout.strip().splitlines()[-1]
    assert token.startswith("pr_") and "shown only now" in shown.stdout
    listed = cli.run("tokens", "list").stdout
    assert "olga" in listed and "ci" in listed and token not in listed
    [info] = cli.json("tokens", "list", "--user", "olga")
    assert info["role"] == "viewer" and info["revoked_at"] is None
    cli.run("tokens", "revoke", str(info["id"]))
    assert cli.json("tokens", "list")[0]["revoked_at"] is not None
    cli.run("users", "disable", "olga")
    assert cli.json("users", "list")[0]["disabled"] is True
    assert "no user named 'nobody'" in cli.run("users", "disable", "nobody", ok=False).stderr

    entries = cli.json("audit", "--limit", "20")
    me = getpass.getuser()
    assert [(e["actor"], e["origin"], e["action"], e["outcome"]) for e in reversed(entries)] == [
        (me, "cli", "accounts.create_user", "ok"),
        (me, "cli", "accounts.create_user", "error"),
        (me, "cli", "accounts.list_users", "ok"),
        (me, "cli", "accounts.create_token", "ok"),
        (me, "cli", "accounts.list_tokens", "ok"),
        (me, "cli", "accounts.list_tokens", "ok"),
        (me, "cli", "accounts.revoke_token", "ok"),
        (me, "cli", "accounts.list_tokens", "ok"),
        (me, "cli", "accounts.disable_user", "ok"),
        (me, "cli", "accounts.list_users", "ok"),
        (me, "cli", "accounts.disable_user", "error"),
    ]
    assert entries[2]["before"]["disabled"] is False and entries[2]["after"]["disabled"]
    shown_audit = cli.run("audit", "--outcome", "error", "--limit", "5").stdout
    assert "nobody" in shown_audit and "root" in shown_audit and "olga" not in shown_audit
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as conn:
        everything = json.dumps([[str(v) for v in row] for table in
                                 ("users", "api_tokens", "audit_log")
                                 for row in conn.execute(text(f"SELECT * FROM {table}"))])
    engine.dispose()
    assert PASSWORD not in everything and token not in everything and token[3:] not in everything


def test_the_demo_makes_an_admin_whose_password_it_prints_once(cli: Cli, tmp_path: Path) -> None:
    out = cli.json("demo", "--dir", str(tmp_path / "demo"), "--recipients", "3")
    console = out["console"]
    assert console["user"] == "admin" and len(console["password"]) >= 16
    assert console["serve"].endswith("postroom.toml serve") and console["url"].startswith("http")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'demo' / 'postroom.db'}")
    postroom = build(settings)
    try:
        admin = postroom.accounts.authenticate_password("admin", console["password"],
                                                        remote=None)
        assert admin.role == "admin"
        actions = [e.action for e in reversed(postroom.accounts.audit())]
        assert actions[:3] == ["accounts.create_user", "recipients.import_recipients",
                               "templates.create_template"]
        assert "sending.send" in actions
    finally:
        postroom.close()
    listed = subprocess.run(
        [sys.executable, "-m", "postroom", "--config", str(tmp_path / "demo" / "postroom.toml"),
         "users", "list", "--json"], capture_output=True, text=True, env=cli.env, timeout=120)
    assert [u["name"] for u in json.loads(listed.stdout)] == ["admin"]
