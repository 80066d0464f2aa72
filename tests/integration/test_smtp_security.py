"""STARTTLS and AUTH against a real aiosmtpd server with a certificate made for the test."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from postroom.app import Postroom
from postroom.domain.outcomes import Verdict
from postroom.settings import SmtpRelay, TlsMode
from postroom.testing.smtp_server import CaptureServer
from postroom.transport.routing import RoutingSettings
from postroom.transport.smtp import SmtpConnection
from tests.conftest import write_csv

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: t\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def secure_server(ca: trustme.CA, capture: Callable[..., CaptureServer]) -> CaptureServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return capture(tls_context=context, credentials=("mailer", "correct horse"))


def _send(relay: SmtpRelay) -> Verdict:
    async def go() -> Verdict:
        connection = SmtpConnection(relay, helo_name="localhost")
        try:
            return (await connection.send("a@example.com", "b@example.com", MESSAGE)).verdict
        finally:
            await connection.close()

    return asyncio.run(go())


def _relay(server: CaptureServer, ca_file: Path | None, password: str, **kw: object) -> SmtpRelay:
    return SmtpRelay.model_validate({
        "host": "127.0.0.1", "port": server.port, "tls": TlsMode.STARTTLS, "ca_file": ca_file,
        "username": "mailer", "password": SecretStr(password), "timeout_seconds": 5, **kw})


def test_starttls_and_auth(secure_server: CaptureServer, ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    assert _send(_relay(secure_server, ca_file, "correct horse")) is Verdict.SENT
    assert len(secure_server.messages) == 1


def test_wrong_password_is_a_relay_fault_not_a_recipient_failure(
    secure_server: CaptureServer, ca: trustme.CA, tmp_path: Path,
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    assert _send(_relay(secure_server, ca_file, "wrong")) is Verdict.DEFERRED
    assert secure_server.messages == []


def test_untrusted_certificate_is_refused(secure_server: CaptureServer) -> None:
    assert _send(_relay(secure_server, None, "correct horse")) is Verdict.DEFERRED
    assert secure_server.messages == []


def test_plain_session_is_refused_when_the_server_requires_starttls(
    secure_server: CaptureServer,
) -> None:
    relay = _relay(secure_server, None, "correct horse", tls=TlsMode.NONE, username="")
    assert _send(relay) is not Verdict.SENT
    assert secure_server.messages == []


# --- TLS to MX hosts and static routes (issue 12) -------------------------------------------


def _tls_server(ca: trustme.CA, capture: Callable[..., CaptureServer],
                *, require: bool) -> CaptureServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.offers.example").configure_cert(context)  # a name that does not match
    return capture(tls_context=context, require_tls=require)


def test_routes_use_starttls_when_offered_and_required_tls_refuses_cleartext(
    ca: trustme.CA, capture: Callable[..., CaptureServer],
    make_postroom: Callable[..., Postroom], sqlite_url: str, tmp_path: Path,
) -> None:
    """Opportunistic by default: STARTTLS with a server that offers it (and with one that
    requires it: that failed before), cleartext with one that lacks it; `tls = "required"`
    sends nothing to a server without STARTTLS."""
    offers, requires = _tls_server(ca, capture, require=False), _tls_server(ca, capture,
                                                                            require=True)
    lacks, lacks_too = capture(), capture()
    postroom = make_postroom(sqlite_url, capture(), bcc=False, sending={"quick_retries": 0},
                             routing={"routes": {
        "offers.example": f"127.0.0.1:{offers.port}",
        "requires.example": {"host": f"127.0.0.1:{requires.port}"},
        "lacks.example": {"host": f"127.0.0.1:{lacks.port}", "tls": "opportunistic"},
        "strict.example": {"host": f"127.0.0.1:{lacks_too.port}", "tls": "required"},
        "strict-ok.example": {"host": f"127.0.0.1:{offers.port}", "tls": "required"},
    }})
    domains = ("offers", "requires", "lacks", "strict", "strict-ok")
    postroom.recipients.import_recipients(write_csv(tmp_path / "r.csv", [
        {"email": f"u@{name}.example"} for name in domains]))
    postroom.templates.create_template("t", {"subject": "Hi", "text": "Hello\n"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    summary = asyncio.run(postroom.sending.send(delivery.id))
    assert summary.sent == 4
    assert [(m.rcpt_tos, m.tls) for m in requires.messages] == [(("u@requires.example",), True)]
    assert sorted((m.rcpt_tos, m.tls) for m in offers.messages) == [
        (("u@offers.example",), True), (("u@strict-ok.example",), True)]
    assert [(m.rcpt_tos, m.tls) for m in lacks.messages] == [(("u@lacks.example",), False)]
    assert lacks_too.messages == [] and lacks_too.rcpt_attempts == []
    [strict] = [log for log in postroom.deliveries.logs(delivery.id)
                if log.email == "u@strict.example"]
    assert strict.status.value == "pending" and "does not offer STARTTLS" in strict.detail


def test_a_route_table_is_checked() -> None:
    with pytest.raises(ValueError, match="tls"):
        RoutingSettings.model_validate({"routes": {"a.example": {"host": "h:25",
                                                                 "tls": "maybe"}}})
    with pytest.raises(ValueError, match="host:port"):
        RoutingSettings.model_validate({"routes": {"a.example": {"host": "h"}}})
