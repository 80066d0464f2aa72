"""Relay-level faults told as what they are (issue 10, point 3): a relay that refuses the
connection, one that refuses the credentials with a real 535, an archive relay that is down.
The real command in a subprocess, real capture servers."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from pydantic import SecretStr

from postroom.domain.outcomes import Fault
from postroom.settings import SmtpRelay, load_settings
from postroom.testing.smtp_server import CaptureServer
from postroom.transport.pipelined import PipelinedConnection
from postroom.transport.smtp import SmtpConnection
from postroom.web.app import create_app
from postroom.wiring import build
from tests.integration.test_cli import ARCHIVE, Cli


def _delivery(cli: Cli, count: int, *, bcc: bool = False) -> str:
    rows = "".join(f"u{i:03d}@example.com\n" for i in range(count))
    cli.run("recipients", "import", str(cli.write("p.csv", "email\n" + rows)))
    cli.write("t.toml", 'name = "t"\nsubject = "Hi"\ntext = "Hello\\n"\n')
    cli.run("templates", "create", str(cli.dir / "t.toml"))
    options = ["--set", "email_bcc=true"] if bcc else []
    return str(cli.json("deliveries", "create", "-t", "t", *options)["id"])


def _logs(cli: Cli, delivery: str) -> list[dict[str, Any]]:
    return list(cli.json("deliveries", "logs", delivery))


def _health(cli: Cli) -> tuple[int, dict[str, Any]]:
    result = cli.run("health", "--json", ok=None)
    return result.returncode, json.loads(result.stdout)


def _web_health_status(cli: Cli) -> int:
    postroom = build(load_settings(cli.config))

    async def get() -> int:
        transport = httpx.ASGITransport(app=create_app(postroom))
        async with httpx.AsyncClient(transport=transport, base_url="http://postroom") as client:
            return (await client.get("/health")).status_code

    try:
        return asyncio.run(get())
    finally:
        postroom.store.close()


def _down(capture: Callable[..., CaptureServer]) -> int:
    server = capture()
    port = server.port
    server.stop()  # nothing listens there now: every connection is refused
    return port


def test_a_refused_relay_is_reported_as_such_and_burns_no_attempt(
        tmp_path: Path, capture: Callable[..., CaptureServer]) -> None:
    port = _down(capture)
    cli = Cli(tmp_path, port, bcc=None)
    delivery = _delivery(cli, 20)

    sent = cli.run("deliveries", "send", delivery, ok=False)
    assert sent.returncode == 1, "nothing could be sent"
    out = sent.stdout
    assert "relay fault" in out and "could not be reached" in out, out
    assert "ConnectionRefusedError" in out
    assert "retry later 0" in out and "slowed" not in out
    assert f"postroom deliveries retry {delivery}" in out
    assert "Traceback" not in sent.stderr

    report = cli.json("deliveries", "report", delivery)
    assert report["slowed_domains"] == [], "a relay fault is not the recipients' domain's"
    assert report["relay_fault"]["messages_waiting"] == 20
    assert "could not be reached" in report["relay_fault"]["detail"]
    assert report["by_status"] == {"pending": 20}
    assert "wait for the relay" in cli.run("deliveries", "report", delivery).stdout
    assert all(log["attempts"] == 0 for log in _logs(cli, delivery))

    code, health = _health(cli)
    assert code == 1 and health["status"] == "problem"
    assert any(f"delivery #{delivery}: 20 messages wait for the relay" in p
               for p in health["problems"]), health
    assert _web_health_status(cli) == 503

    relay = capture(port=port)  # the relay is back
    assert cli.json("deliveries", "retry", delivery)["due_now"] == 20
    again = cli.json("deliveries", "send", delivery)
    assert again["state"] == "finished" and again["sent"] == 20 and again["relay_faults"] == 0
    assert len(relay.messages) == 20
    assert all(log["attempts"] == 1 for log in _logs(cli, delivery))
    assert _health(cli)[0] == 0


def test_retry_touches_only_what_waits_for_a_connection(
        tmp_path: Path, capture: Callable[..., CaptureServer]) -> None:
    port = _down(capture)
    cli = Cli(tmp_path, port, bcc=None)
    delivery = _delivery(cli, 3)
    cli.run("deliveries", "send", delivery, ok=False)
    relay = capture(port=port)
    cli.json("deliveries", "retry", delivery)
    cli.json("deliveries", "send", delivery)
    assert len(relay.messages) == 3
    # Nothing is left to retry: sent messages are never touched again.
    assert cli.json("deliveries", "retry", delivery)["due_now"] == 0
    assert len(relay.messages) == 3


def test_wrong_credentials_pause_the_delivery_instead_of_burning_retries(
        tmp_path: Path, capture: Callable[..., CaptureServer]) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    relay = capture(tls_context=context, credentials=("mailer", "correct horse"))
    cli = Cli(tmp_path, relay.port, bcc=None)
    settings = cli.config.read_text()
    cli.config.write_text(settings.replace(
        "timeout_seconds = 5\n",
        f'timeout_seconds = 5\ntls = "starttls"\nca_file = "{ca_file}"\n'
        'username = "mailer"\n'))
    cli.env["POSTROOM_SMTP__PASSWORD"] = "s3cret-wrong"
    delivery = _delivery(cli, 12)

    sent = cli.run("deliveries", "send", delivery, ok=False)
    assert sent.returncode == 1
    out = sent.stdout + sent.stderr
    assert "refused the credentials" in out and "535" in out, out
    assert f"postroom deliveries resume {delivery}" in out
    assert "s3cret-wrong" not in out, "secrets are never printed"
    logs = _logs(cli, delivery)
    assert {log["status"] for log in logs} == {"pending"}
    assert all(log["attempts"] == 0 for log in logs), "no retry burnt"
    assert all(log["failure_reason"] is None for log in logs), "no recipient blamed"
    report = cli.json("deliveries", "report", delivery)
    assert report["state"] == "paused" and "535" in report["last_error"]

    code, health = _health(cli)
    assert code == 1
    assert any(f"delivery #{delivery} paused" in p and "credentials" in p
               for p in health["problems"]), health
    assert "s3cret-wrong" not in json.dumps(health)

    cli.env["POSTROOM_SMTP__PASSWORD"] = "correct horse"
    resumed = cli.json("deliveries", "resume", delivery)
    assert resumed["state"] == "finished" and resumed["sent"] == 12
    assert len(relay.messages) == 12


def test_an_archive_outage_is_named_in_send_archive_status_and_health(
        tmp_path: Path, capture: Callable[..., CaptureServer]) -> None:
    relay = capture()
    archive_port = _down(capture)
    cli = Cli(tmp_path, relay.port)
    cli.config.write_text(cli.config.read_text() + (
        f'[archive.relay]\nhost = "127.0.0.1"\nport = {archive_port}\ntimeout_seconds = 2\n'))
    cli.config.write_text(cli.config.read_text().replace("drain_seconds = 5", "drain_seconds = 1"))
    delivery = _delivery(cli, 30, bcc=True)

    sent = cli.run("deliveries", "send", delivery)
    assert "archive relay fault" in sent.stdout and "unreachable?" not in sent.stdout
    assert len(relay.messages) == 30

    status = cli.run("archive", "status", "--delivery", delivery).stdout
    assert "archive relay fault" in status, status
    data = cli.json("archive", "status", "--delivery", delivery)
    assert all("archive relay fault" in r["reply"] for r in data["deliveries"][0]["recent"])
    [sink] = data["sinks"]
    assert "archive relay fault" in sink.pop("last_error")
    assert sink == {"sink": "smtp", "configured": True, "sent": 30, "archived": 0,
                    "pending": 30, "failed": 0, "in_doubt": 0}
    assert "archive sink smtp (configured): sent 30, archived 0, pending 30" in status
    code, health = _health(cli)
    assert code == 1
    assert any("30 archive copies wait for the archive relay" in p
               for p in health["problems"]), health

    archive = capture(port=archive_port)
    assert cli.json("archive", "flush") == {"pending": 0}
    assert len(archive.messages) == 30 and {m.rcpt_tos for m in archive.messages} == {
        (ARCHIVE,)}
    assert _health(cli)[0] == 0
    report = cli.json("deliveries", "report", delivery)
    assert report["archive_sinks"] == [{"sink": "smtp", "configured": True, "sent": 30,
                                        "archived": 30, "pending": 0, "failed": 0,
                                        "in_doubt": 0, "last_error": None}]
    human = cli.run("deliveries", "report", delivery).stdout
    assert "archive sink smtp (configured): sent 30, archived 30, pending 0, failed 0" in human


def test_a_tls_failure_is_named_and_burns_no_attempt(
        tmp_path: Path, capture: Callable[..., CaptureServer]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost", "127.0.0.1").configure_cert(context)
    relay = capture(tls_context=context)  # a certificate our default trust store refuses
    cli = Cli(tmp_path, relay.port, bcc=None)
    cli.config.write_text(cli.config.read_text().replace(
        "timeout_seconds = 5\n", 'timeout_seconds = 5\ntls = "starttls"\n'))
    delivery = _delivery(cli, 5)

    sent = cli.run("deliveries", "send", delivery, ok=False)
    assert sent.returncode == 1
    assert "TLS with the relay failed" in sent.stdout and "CERTIFICATE" in sent.stdout.upper()
    assert all(log["attempts"] == 0 for log in _logs(cli, delivery))
    assert relay.messages == []


@pytest.mark.parametrize("kind", ["pipelined", "aiosmtplib"])
def test_each_client_tells_why_no_session_could_be_opened(
        kind: str, capture: Callable[..., CaptureServer], tmp_path: Path) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    secure = capture(tls_context=context, credentials=("mailer", "correct horse"))
    port = _down(capture)
    client = PipelinedConnection if kind == "pipelined" else SmtpConnection

    def fault(**relay: Any) -> Fault | None:
        async def go() -> Fault | None:
            connection = client(SmtpRelay.model_validate({"timeout_seconds": 5, **relay}),
                                helo_name="localhost")
            try:
                return (await connection.send("a@example.com", "b@example.com",
                                              b"Subject: x\r\n\r\nx\r\n")).fault
            finally:
                await connection.close()

        return asyncio.run(go())

    tls = {"host": "127.0.0.1", "port": secure.port, "tls": "starttls"}
    assert fault(host="127.0.0.1", port=port) is Fault.CONNECT
    assert fault(**tls) is Fault.TLS  # the certificate is not trusted
    assert fault(**tls, ca_file=ca_file, username="mailer",
                 password=SecretStr("wrong")) is Fault.AUTH
    assert fault(**tls, ca_file=ca_file, username="mailer",
                 password=SecretStr("correct horse")) is None
    assert len(secure.messages) == 1
