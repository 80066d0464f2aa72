"""The `postroom` command as a user runs it: a real process, a real SQLite file, a real relay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from postroom.testing.smtp_server import CaptureServer

ARCHIVE = "archive@compliance.example"


class Cli:
    def __init__(self, tmp_path: Path, relay_port: int, *, bcc: str | None = ARCHIVE):
        self.dir = tmp_path
        self.config = tmp_path / "postroom.toml"
        archive = f'enabled = true\nbcc_address = "{bcc}"' if bcc else "enabled = false"
        self.config.write_text(
            f'database_url = "sqlite:///{tmp_path / "p.db"}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {relay_port}\ntimeout_seconds = 5\n'
            f'[sending]\nquick_retry_seconds = 0.05\n'
            f'[defaults]\nfrom_address = "news@postroom.example"\n'
            f'[archive]\n{archive}\ndrain_seconds = 5\n', encoding="utf-8")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
        self.env["POSTROOM_CONFIG"] = str(self.config)
        self.env["COLUMNS"] = "200"
        self.run("init", ok=None)  # other commands refuse to create a database

    def run(self, *args: str, ok: bool | None = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "postroom", *args], capture_output=True, text=True,
            env={**self.env, **(env or {})}, cwd=self.dir, timeout=120)
        if ok is True:
            assert result.returncode == 0, result.stdout + result.stderr
        elif ok is False:
            assert result.returncode != 0, result.stdout + result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.dir / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture
def relay(capture: Callable[..., CaptureServer]) -> CaptureServer:
    return capture()


@pytest.fixture
def cli(tmp_path: Path, relay: CaptureServer) -> Cli:
    return Cli(tmp_path, relay.port)


def _template(cli: Cli, name: str = "news", *, html: str = "<p>Hi {{ recipient.first_name }}</p>",
              extra: str = "") -> Path:
    cli.write(f"{name}.html", html)
    cli.write(f"{name}.txt", "Hi {{ recipient.first_name }}\n")
    return cli.write(f"{name}.toml", f'name = "{name}"\nsubject = "News for '
                     f'{{{{ recipient.first_name }}}}"\nhtml_file = "{name}.html"\n'
                     f'text_file = "{name}.txt"\n{extra}')


def test_bad_csv_rows_are_reported_and_good_rows_imported(cli: Cli) -> None:
    csv = (b"email,first_name,email_format,opted_out,city\n"
           b"ok1@Example.COM,Ann,html,no,Lisboa\n"
           b"not an address,Bob,,,Porto\n"
           b"ok2@example.com,Cy,fancy,,Faro\n"
           b"ok3@example.com,D\xe9bora,text,,Braga\n"
           b"ok4@example.com,Eve,text,maybe,Braga\n"
           b",Nobody,,,Braga\n"
           b"ok5@example.com,Fay,unknown,yes,Evora\n")
    report = cli.json("recipients", "import", str(cli.write("people.csv", csv)))
    assert report["rows"] == 7 and report["inserted"] == 2 and report["rejected"] == 5
    reasons = {e["line"]: e["reason"] for e in report["errors"]}
    assert set(reasons) == {3, 4, 5, 6, 7}
    assert "invalid email" in reasons[3]
    assert "email_format" in reasons[4] and "fancy" in reasons[4]
    assert "not valid utf-8" in reasons[5]
    assert "opted_out" in reasons[6]
    assert "email is empty" in reasons[7]
    assert cli.json("recipients", "count") == {"recipients": 2}
    # Re-import updates by email (domain case ignored after normalization).
    again = cli.json("recipients", "import", str(cli.write("again.csv",
                     "email,first_name\nok1@example.com,Annie\n")))
    assert again["inserted"] == 0 and again["updated"] == 1


def test_csv_without_email_column_is_refused_whole(cli: Cli) -> None:
    result = cli.run("recipients", "import", str(cli.write("x.csv", "mail,name\na@b.c,A\n")),
                     ok=False)
    assert "no 'email' column" in result.stderr and "Traceback" not in result.stderr
    assert cli.json("recipients", "count") == {"recipients": 0}


def test_full_flow_with_filter_report_and_logs(cli: Cli, relay: CaptureServer) -> None:
    cli.run("recipients", "import", str(cli.write("p.csv",
            "email,first_name,city\na@example.com,Ana,Lisboa\nb@example.com,Bo,Porto\n"
            "c@example.com,Cy,Lisboa\n")))
    created = cli.json("templates", "create", str(_template(cli)))
    assert created["name"] == "news" and created["problems"] == []
    delivery = cli.json("deliveries", "create", "-t", "news", "--filter", "city=Lisboa",
                        "--set", "email_bcc=true", "--name", "Lisboa news")
    assert delivery["email_bcc"] is True and delivery["state"] == "editing"
    sent = cli.json("deliveries", "send", str(delivery["id"]))
    assert sent["sent"] == 2 and sent["state"] == "finished"
    to_people = sorted(m.rcpt_tos[0] for m in relay.messages if m.rcpt_tos != (ARCHIVE,))
    assert to_people == ["a@example.com", "c@example.com"]
    report = cli.json("deliveries", "report", str(delivery["id"]))
    assert report["by_status"] == {"sent": 2}
    assert report["archive"]["archived"] == 2  # archive relay defaults to the sending relay
    assert len(relay.received_for(ARCHIVE)) == 2
    logs = cli.json("deliveries", "logs", str(delivery["id"]), "--status", "sent")
    assert {log["email"] for log in logs} == {"a@example.com", "c@example.com"}
    assert all(log["archive"] == "archived" and log["sha256"] for log in logs)
    status = cli.json("archive", "status")
    assert status["deliveries"][0]["archived"] == 2
    human = cli.run("deliveries", "report", str(delivery["id"])).stdout
    assert "sent" in human and "archived 2" in human


def test_send_with_helper_and_archive_processes_from_a_config_file(
    cli: Cli, relay: CaptureServer,
) -> None:
    """`sending.processes` and `archive.own_process` read from postroom.toml: the settings
    reach the child processes (they once could not be pickled, and the send failed)."""
    config = cli.config.read_text(encoding="utf-8")
    cli.config.write_text(config.replace("[sending]\n", "[sending]\nprocesses = 2\n")
                          .replace("[archive]\n", "[archive]\nown_process = true\n"),
                          encoding="utf-8")
    people = "".join(f"p{i:03d}@example.com,P{i}\n" for i in range(300))
    cli.run("recipients", "import", str(cli.write("p.csv", "email,first_name\n" + people)))
    cli.json("templates", "create", str(_template(cli)))
    delivery = cli.json("deliveries", "create", "-t", "news", "--set", "email_bcc=true")

    sent = cli.json("deliveries", "send", str(delivery["id"]))

    assert sent["helper_errors"] == [] and sent["state"] == "finished"
    assert (sent["sent"], sent["archived"], sent["archive_pending"]) == (300, 300, 0)
    report = cli.json("deliveries", "report", str(delivery["id"]))
    assert report["by_status"] == {"sent": 300} and report["archive"]["archived"] == 300
    copies = [m for m in relay.messages if m.rcpt_tos == (ARCHIVE,)]
    assert len(copies) == 300 and len(relay.messages) == 600


@pytest.mark.parametrize(("html", "expected"), [
    ("<p>{{ recipient.loyalty }}</p>", "recipient.loyalty"),
    ("<p>{% if %}</p>", "html, line 1"),
])
def test_template_errors_fail_analysis_before_anything_is_sent(
    cli: Cli, relay: CaptureServer, html: str, expected: str,
) -> None:
    cli.run("recipients", "import", str(cli.write("p.csv", "email,first_name\na@example.com,A\n")))
    cli.run("templates", "create", str(_template(cli)))
    # A template that does not compile is refused at create; a delivery's own content is
    # checked by its analysis.
    delivery = cli.json("deliveries", "create", "-t", "news", "--html-file",
                        str(cli.write("own.html", html)))
    analysis = cli.run("deliveries", "analyze", str(delivery["id"]), "--json", ok=False)
    errors = json.loads(analysis.stdout)["errors"]
    assert any(expected in e for e in errors), errors
    if "loyalty" in expected:
        assert any("a@example.com" in e for e in errors)  # names the recipient
    send = cli.run("deliveries", "send", str(delivery["id"]), ok=False)
    assert expected in send.stderr
    assert relay.messages == [] and relay.rcpt_attempts == []
    [row] = cli.json("deliveries", "list")
    assert row["state"] == "failed" and expected in row["last_error"]


def test_templates_past_their_limits_fail_analysis_and_list_never_compiles(
    cli: Cli, relay: CaptureServer,
) -> None:
    """Issue 12, finding 3: `{{ 'a' * 10**9 }}` cost 4 GB when compiled, nested loops hung
    analysis, and one such template made `templates list` die with a MemoryError."""
    cli.config.write_text(cli.config.read_text(encoding="utf-8")
                          + "[templates]\nrender_cpu_seconds = 0.5\n", encoding="utf-8")
    cli.run("recipients", "import", str(cli.write("p.csv", "email,first_name\na@example.com,A\n")))
    cli.run("templates", "create", str(_template(cli, "huge", html="{{ 'a' * 10**8 }}")))
    cli.run("templates", "create", str(_template(
        cli, "loops", html="{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% endfor %}{% endfor %}")))
    listed = cli.json("templates", "list")
    assert [t["name"] for t in listed if not t["builtin"]] == ["huge", "loops"]
    assert all("problems" not in t for t in listed)  # listing compiles nothing
    for name, expected in (("huge", "templates.max_output_chars"),
                           ("loops", "more than 0.5 s of CPU (templates.render_cpu_seconds)")):
        delivery = cli.json("deliveries", "create", "-t", name)
        analysis = cli.run("deliveries", "analyze", str(delivery["id"]), "--json", ok=False)
        errors = json.loads(analysis.stdout)["errors"]
        assert any(expected in e and "a@example.com" in e for e in errors), errors
        assert "Traceback" not in analysis.stderr
    assert relay.messages == []


def test_bcc_requested_without_the_capability_fails_analysis(
    tmp_path: Path, relay: CaptureServer,
) -> None:
    cli = Cli(tmp_path, relay.port, bcc=None)
    cli.run("recipients", "import", str(cli.write("p.csv", "email\na@example.com\n")))
    cli.run("templates", "create", str(_template(cli, extra="email_bcc = true\n")))
    delivery = cli.json("deliveries", "create", "-t", "news")
    result = cli.run("deliveries", "analyze", str(delivery["id"]), ok=False)
    assert "email_bcc" in result.stdout and "archive" in result.stdout
    assert relay.messages == []


def test_two_bcc_addresses_are_refused_naming_the_key(tmp_path: Path,
                                                      relay: CaptureServer) -> None:
    cli = Cli(tmp_path, relay.port, bcc="a@archive.example, b@archive.example")
    result = cli.run("config", "show", ok=False)
    assert "archive.bcc_address" in result.stderr and "exactly one" in result.stderr
    assert "Traceback" not in result.stderr
    listed = cli.run("config", "show", ok=False,
                     env={"POSTROOM_ARCHIVE__BCC_ADDRESS": '["x@a.example", "y@a.example"]'})
    assert "archive.bcc_address" in listed.stderr


def test_config_show_masks_secrets(cli: Cli) -> None:
    secret = "s3cr3t-Pa55"
    shown = cli.run("config", "show", "--json", env={"POSTROOM_SMTP__PASSWORD": secret})
    assert secret not in shown.stdout and secret not in shown.stderr
    assert json.loads(shown.stdout)["smtp"]["password"] == "********"
    plain = cli.run("config", "show", env={"POSTROOM_SMTP__PASSWORD": secret})
    assert secret not in plain.stdout


def test_builtin_template_is_read_only_but_can_be_duplicated(cli: Cli) -> None:
    names = [t["name"] for t in cli.json("templates", "list")]
    assert "default" in names
    change = cli.write("change.toml", 'subject = "changed"\n')
    refused = cli.run("templates", "update", "default", str(change), ok=False)
    assert "built-in" in refused.stderr
    cli.run("templates", "delete", "default", ok=False)
    copy = cli.json("templates", "duplicate", "default", "mine")
    assert copy["builtin"] is False
    updated = cli.json("templates", "update", "mine", str(change))
    assert updated["properties"]["subject"] == "changed"
    assert cli.json("templates", "show", "default")["properties"]["subject"] != "changed"
    cli.run("templates", "delete", "mine")
    assert "mine" not in [t["name"] for t in cli.json("templates", "list")]


def test_delivery_keeps_its_copy_when_the_template_changes(cli: Cli) -> None:
    cli.run("templates", "create", str(_template(cli)))
    delivery = cli.json("deliveries", "create", "-t", "news", "--set", "subject=Override")
    cli.run("templates", "update", "news", str(cli.write("u.toml", 'subject = "New"\n')))
    [row] = cli.json("deliveries", "list")
    assert row["id"] == delivery["id"]
    bad = cli.run("deliveries", "create", "-t", "news", "--set", "colour=red", ok=False)
    assert "colour" in bad.stderr


def test_list_audience_with_duplicates_and_opt_outs(cli: Cli, relay: CaptureServer) -> None:
    cli.run("templates", "create", str(_template(cli)))
    target = cli.write("list.csv", "email,first_name,opted_out\nx@example.com,X,no\n"
                       "y@example.com,Y,yes\nX@example.com,X2,no\nbroken,Z,no\n"
                       "x@example.com,X,no\n")
    delivery = cli.json("deliveries", "create", "-t", "news", "--list", str(target))
    assert delivery["list_import"]["rejected"] == 1
    analysis = cli.json("deliveries", "analyze", str(delivery["id"]))
    assert analysis["ok"] and analysis["to_send"] == 1
    assert analysis["excluded"] == {"double": 2, "opted out": 1}
    cli.json("deliveries", "send", str(delivery["id"]))
    assert [m.rcpt_tos for m in relay.messages] == [("x@example.com",)]


def test_pause_resume_and_stop(cli: Cli, relay: CaptureServer) -> None:
    cli.run("recipients", "import", str(cli.write("p.csv", "email\na@example.com\n"
                                                  "b@example.com\n")))
    cli.run("templates", "create", str(_template(cli)))
    first = cli.json("deliveries", "create", "-t", "news")["id"]
    cli.json("deliveries", "analyze", str(first))
    cli.run("deliveries", "pause", str(first), ok=False)  # ready, not sending
    second = cli.json("deliveries", "create", "-t", "news")["id"]
    cli.run("deliveries", "stop", str(second))
    assert cli.run("deliveries", "send", str(second), ok=False).returncode != 0
    assert relay.messages == []
    sent = cli.json("deliveries", "send", str(first))
    assert sent["sent"] == 2


@pytest.mark.parametrize(("env", "args", "expected"), [
    ({"POSTROOM_DATABASE_URL": "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/x"},
     ("templates", "list"), "database_url postgresql+psycopg://postgres:***@127.0.0.1:1/x: "
     "cannot open the database: connection failed"),
    ({"POSTROOM_DATABASE_URL": "not a url"}, ("templates", "list"),
     "database_url (unparsable URL hidden): not a database URL"),
    ({"POSTROOM_DATABASE_URL": "mysql+nodriver://x/y"}, ("templates", "list"),
     "database_url mysql+nodriver://x/y: unknown database or driver"),
    ({}, ("bounces", "fetch", "--imap", "imap://u:hunter2@host:xx/INBOX"),
     "bad mailbox URL (Port could not be cast to integer value as 'xx')"),
    ({}, ("bounces", "fetch", "--pop3", "pop3://u@[::1"), "bad mailbox URL (Invalid IPv6 URL)"),
    ({"POSTROOM_DKIM": '[{"domain": "shop.example", "selector": "s1", '
                       '"private_key_file": "bad.pem"}]'},
     ("templates", "list"), "dkim[0].private_key_file: bad.pem is not an RSA private key"),
])
def test_user_errors_print_one_line_not_a_traceback(
    cli: Cli, env: dict[str, str], args: tuple[str, ...], expected: str,
) -> None:
    """Issue 12: each of these printed a traceback."""
    cli.write("bad.pem", "-----BEGIN PRIVATE KEY-----\nnotbase64\n-----END PRIVATE KEY-----\n")
    result = cli.run(*args, ok=False, env={**env, "COLUMNS": "60"})
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and expected in line, line
    assert "hunter2" not in result.stdout + result.stderr
