"""`postroom demo`: a real delivery with Email BCC against embedded parts, checked.

SQLite in a folder, two local capture SMTP servers (the recipients' relay, which refuses a share
of recipients, and the archive relay), ~1,000 sample recipients, a personalized template, one
delivery with Email BCC on. At the end it checks that the archive holds exactly one
byte-identical copy of each accepted message and none of the refused ones.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import secrets
import shlex
import shutil
from pathlib import Path

import typer

from postroom.accounts.actor import cli_actor
from postroom.app.deliveries import MAX_LOGS
from postroom.app.templates import load_template_file
from postroom.cli.common import console, emit_json, progress_bar
from postroom.domain.states import LogStatus
from postroom.errors import InputError
from postroom.settings import (
    ArchiveSettings,
    DefaultsSettings,
    SendingSettings,
    Settings,
    SmtpRelay,
    WebSettings,
)
from postroom.testing.archive_check import check_archive
from postroom.testing.smtp_server import CaptureServer, Script, is_rejected

ARCHIVE_ADDRESS = "archive@compliance.example"
DEMO_ADMIN = "admin"
MARKER = ".postroom-demo"  # written in every folder the demo creates: only those it resets
_FIRST = ["Ada", "Björn", "Chloé", "Dmitri", "Eun-ji", "Farah", "Gonzalo", "Hana", "Ivo", "Józef"]
_LAST = ["Lovelace", "Järvinen", "Dubois", "Petrov", "Kim", "Haddad", "Ruiz", "Sato", "Novak"]
_CITIES = ["Lisboa", "Zürich", "Kraków", "Osaka", "Montréal", "Nairobi"]

TEMPLATE_TOML = """\
name = "demo-newsletter"
from_name = "Postroom Demo"
from_address = "news@postroom.example"
reply_to = "help@postroom.example"
errors_to = "bounces@postroom.example"
subject = "{{ recipient.first_name }}, your {{ recipient.city }} update ✉"
html_file = "newsletter.html"
text_file = "newsletter.txt"
format = "multipart"
email_bcc = true
max_retries = 0  # the demo's content-filter refusals (soft) fail at once instead of retrying
"""
TEMPLATE_HTML = """\
<html><body>
<h1>Hello {{ recipient.first_name }} {{ recipient.last_name }}!</h1>
<p>News for members in <b>{{ recipient.city }}</b> (member #{{ recipient.member_id }}).</p>
<p>Thanks for reading — the Postroom team.</p>
</body></html>
"""
TEMPLATE_TEXT = """\
Hello {{ recipient.first_name }} {{ recipient.last_name }}!

News for members in {{ recipient.city }} (member #{{ recipient.member_id }}).

Thanks for reading - the Postroom team.
"""


def write_recipients(path: Path, count: int, *, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "first_name", "last_name", "email_format", "opted_out",
                         "city", "member_id"])
        for n in range(count):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            writer.writerow([f"member{n:05d}@Example.ORG", first, last,
                             rng.choice(["unknown", "html", "text"]),
                             "yes" if n % 50 == 49 else "no", rng.choice(_CITIES), 10000 + n])
        writer.writerow(["not-an-address", "Broken", "Row", "", "", "Lisboa", 1])


def prepare_folder(directory: Path) -> None:
    """Make `directory` an empty demo folder. A folder the demo made before (it holds the
    marker file) is reset; an empty one is taken; anything else is refused, untouched."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--dir {directory}: exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()):
        if not (directory / MARKER).is_file():
            raise InputError(
                f"--dir {directory}: the folder is not empty and was not made by the demo; "
                "nothing was deleted. Choose a new or empty folder (a folder of a demo older "
                f"than this check has no {MARKER} file: delete it yourself)")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by `postroom demo`: it may delete this folder\n",
                                    encoding="utf-8")


def _serve_command(directory: Path) -> str:
    return f"postroom --config {shlex.quote(str(directory / 'postroom.toml'))} serve"


def _console_url() -> str:
    web = WebSettings()
    return f"http://{web.host}:{web.port}/"


def write_config(directory: Path) -> None:
    """A postroom.toml beside the demo's database, for `postroom --config ... serve`."""
    url = f"sqlite:///{(directory / 'postroom.db').resolve()}"
    (directory / "postroom.toml").write_text(
        "# written by `postroom demo`: the demo's database, for `postroom serve` and the CLI\n"
        f"database_url = {json.dumps(url)}\n", encoding="utf-8")


def demo(
    directory: Path = typer.Option(Path("postroom-demo"), "--dir",
                                   help="Work folder: a new or empty one, or one an earlier "
                                   "demo made (then reset)."),
    recipients: int = typer.Option(1000, min=1, help="Sample recipients to create."),
    reject_ratio: float = typer.Option(0.10, min=0, max=1, help="Share refused at RCPT (550)."),
    data_reject_ratio: float = typer.Option(0.02, min=0, max=1,
                                            help="Share refused at end of DATA (554)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run a real delivery with Email BCC against a local capture SMTP server and check it."""
    from postroom.wiring import build

    prepare_folder(directory)
    write_recipients(directory / "recipients.csv", recipients)
    (directory / "newsletter.toml").write_text(TEMPLATE_TOML, encoding="utf-8")
    (directory / "newsletter.html").write_text(TEMPLATE_HTML, encoding="utf-8")
    (directory / "newsletter.txt").write_text(TEMPLATE_TEXT, encoding="utf-8")
    write_config(directory)

    def refused_at_data(address: str) -> bool:
        return is_rejected("data:" + address, data_reject_ratio)

    script = Script().on_data(refused_at_data, "554 5.7.1 Message rejected by content filter")
    with CaptureServer(mail_dir=directory / "mail", reject_ratio=reject_ratio,
                       script=script) as relay, \
            CaptureServer(mail_dir=directory / "archive") as archive:
        settings = Settings(
            database_url=f"sqlite:///{directory / 'postroom.db'}",
            smtp=SmtpRelay(host="127.0.0.1", port=relay.port),
            sending=SendingSettings(connections=8, quick_retry_seconds=0.5),
            defaults=DefaultsSettings(),
            archive=ArchiveSettings(enabled=True, bcc_address=[ARCHIVE_ADDRESS],
                                    relay=SmtpRelay(host="127.0.0.1", port=archive.port)),
        )
        postroom = build(settings)
        app = postroom.acting_as(cli_actor())  # the demo's changes are audited, as the CLI's
        password = secrets.token_urlsafe(12)
        app.accounts.create_user(DEMO_ADMIN, "admin", password)
        imported = app.recipients.import_recipients(directory / "recipients.csv")
        name, data = load_template_file(directory / "newsletter.toml")
        assert name is not None
        app.templates.create_template(name, data)
        delivery, _ = app.deliveries.create_delivery(name, name="Demo newsletter")
        analysis = app.deliveries.analyze(delivery.id)
        with progress_bar("sending", analysis.pending, enabled=not as_json) as advance:
            summary = asyncio.run(app.sending.send(delivery.id, progress=advance))
        report = app.reports.report(delivery.id).to_json()
        logs = app.deliveries.logs(delivery.id, limit=min(10 * recipients + 10, MAX_LOGS))
        check = check_archive(logs, relay.messages, archive.messages, bcc_address=ARCHIVE_ADDRESS)
        if check.sent_logs == 0:
            check.problems.append("no message was sent")
        refused = [log for log in logs if log.status is LogStatus.FAILED]
        for log in refused:
            if archive.received_for(log.email) or any(
                    ARCHIVE_ADDRESS in m.rcpt_tos and log.message_id and
                    log.message_id.encode() in m.data for m in archive.messages):
                check.problems.append(f"refused message to {log.email} has an archive copy")
        postroom.close()
    result = {"import": imported.to_json(), "analysis": analysis.to_json(), "report": report,
              "archive_check": {"ok": check.ok, "sent_logs": check.sent_logs,
                                "refused_logs": check.failed_logs,
                                "relay_received": check.relay_received,
                                "archive_received": check.archive_received,
                                "problems": check.problems},
              "folder": str(directory),
              "console": {"user": DEMO_ADMIN, "password": password,
                          "serve": _serve_command(directory), "url": _console_url()}}
    if as_json:
        emit_json(result)
    else:
        console.print(f"imported {imported.inserted} recipients ({imported.rejected} bad rows "
                      f"reported: {'; '.join(str(e) for e in imported.errors)})")
        console.print(f"analysis: {analysis.pending} to send, excluded "
                      f"{ {r.label: n for r, n in analysis.excluded.items()} }")
        console.print(f"delivery #{delivery.id} {summary.state}: by status {report['by_status']}"
                      f", by reason {report['by_reason']}")
        console.print(f"archive: {report['archive']}")
        verdict = "[green]OK[/]" if check.ok else "[red]FAILED[/]"
        console.print(
            f"archive check {verdict}: {check.sent_logs} sent, {check.failed_logs} refused; "
            f"relay received {check.relay_received}, archive received "
            f"{check.archive_received}, each byte-identical, none for refused messages, "
            f"BCC address in no header")
        for problem in check.problems:
            console.print(f"  [red]{problem}[/]", highlight=False)
        console.print(f"messages as .eml files under {directory}/mail and {directory}/archive")
        console.print(f"console: run [bold]{_serve_command(directory)}[/] and open "
                      f"{_console_url()}; log in as [bold]{DEMO_ADMIN}[/] with the password "
                      f"[bold]{password}[/] (shown only now; `postroom users password "
                      f"{DEMO_ADMIN}` sets another)", highlight=False)
    if not check.ok:
        raise typer.Exit(1)
