"""STARTTLS and AUTH against a real aiosmtpd server with a certificate made for the test."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from postroom.domain.outcomes import Verdict
from postroom.settings import SmtpRelay, TlsMode
from postroom.testing.smtp_server import CaptureServer
from postroom.transport.smtp import SmtpConnection

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
