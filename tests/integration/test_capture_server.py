"""Integration tests for postroom.testing.CaptureServer (real aiosmtpd + aiosmtplib)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiosmtplib
import pytest

from postroom.testing import CaptureServer, Drop, Received, Script, Sleep, is_rejected

SENDER = "sender@postroom.test"
MESSAGE = (
    b"From: sender@postroom.test\r\nTo: alice@example.com\r\nSubject: hello\r\n\r\nbody line\r\n"
)


def sendmail(
    srv: CaptureServer, rcpts: Sequence[str], message: bytes = MESSAGE, timeout: float = 5.0
) -> dict[str, aiosmtplib.SMTPResponse]:
    """Send one message in a fresh connection; return aiosmtplib's per-recipient errors."""

    async def go() -> dict[str, aiosmtplib.SMTPResponse]:
        client = aiosmtplib.SMTP(hostname=srv.host, port=srv.port, timeout=timeout)
        async with client:
            errors, _ = await client.sendmail(SENDER, list(rcpts), message)
            return errors

    return asyncio.run(go())


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as srv:
        yield srv


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def scripted(script: Script) -> Iterator[CaptureServer]:
    with CaptureServer(script=script) as srv:
        yield srv


def test_accepts_and_records(server: CaptureServer) -> None:
    assert server.running and server.port != 0
    before = time.time()
    assert sendmail(server, ["alice@example.com", "Bob@Example.com"]) == {}

    [msg] = server.messages
    assert isinstance(msg, Received)
    assert msg.mail_from == SENDER
    assert msg.rcpt_tos == ("alice@example.com", "Bob@Example.com")
    assert msg.data == MESSAGE
    assert msg.peer.startswith("127.0.0.1:")
    assert before <= msg.received_at <= time.time()
    assert server.rcpt_attempts == ["alice@example.com", "Bob@Example.com"]
    assert server.rejected == {}
    assert server.received_for("bob@example.com") == [msg]
    assert server.received_for("carol@example.com") == []
    with pytest.raises(AttributeError):
        msg.data = b""  # type: ignore[misc]


def test_ehlo_extensions(server: CaptureServer) -> None:
    async def go() -> dict[str, str]:
        async with aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=5) as client:
            await client.ehlo()
            return dict(client.esmtp_extensions)

    extensions = asyncio.run(go())
    assert {"8bitmime", "smtputf8", "size"} <= set(extensions)
    assert extensions["size"] == str(server.data_size_limit)
    # aiosmtpd 1.4.x does not advertise PIPELINING; we stay faithful to that.
    assert "pipelining" not in extensions


def test_data_is_byte_identical(server: CaptureServer) -> None:
    message = (
        b"From: sender@postroom.test\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
        b"\r\n"
        b".leading dot is dot-stuffed on the wire\r\n"
        b".\r\n"
        b"..\r\n"
        b"8bit: caf\xc3\xa9\r\n"
        b"\r\n"
        b"trailing line\r\n"
    )
    sendmail(server, ["alice@example.com"], message)
    # The CRLF in front of <CRLF>.<CRLF> belongs to the message: exact round trip.
    assert server.messages[0].data == message

    # aiosmtplib appends the missing final CRLF, so that is what the server sees.
    sendmail(server, ["alice@example.com"], b"Subject: x\r\n\r\nno final newline")
    assert server.messages[1].data == b"Subject: x\r\n\r\nno final newline\r\n"


def test_reject_ratio_is_deterministic_and_predictable() -> None:
    rcpts = [f"user{i}@Example.com" for i in range(40)]
    expected = {a for a in rcpts if is_rejected(a, 0.5)}
    assert 0 < len(expected) < len(rcpts)
    assert all(is_rejected(a.upper(), 0.5) == (a in expected) for a in rcpts)
    assert not any(is_rejected(a, 0.0) for a in rcpts)
    assert all(is_rejected(a, 1.0) for a in rcpts)

    with CaptureServer(reject_ratio=0.5) as srv:
        errors = sendmail(srv, rcpts)
        assert set(errors) == expected
        assert sendmail(srv, rcpts).keys() == errors.keys()  # same decision every time

        some = sorted(expected)[0]
        assert errors[some].code == 550
        assert srv.rejected[some] == (
            f"550 5.1.1 <{some}>: Recipient address rejected: User unknown"
        )
        assert set(srv.rejected) == expected
        accepted = tuple(a for a in rcpts if a not in expected)
        assert [m.rcpt_tos for m in srv.messages] == [accepted, accepted]
        assert srv.rcpt_attempts == rcpts * 2


def test_on_rcpt_reply_with_times(scripted: CaptureServer, script: Script) -> None:
    script.on_rcpt("BOB@example.com", "550 5.1.1 no such user", times=2)
    script.on_rcpt(lambda a: a.endswith("@greylist.test"), "450 4.2.0 greylisted")

    for _ in range(2):
        errors = sendmail(scripted, ["alice@example.com", "bob@example.com"])
        assert {k: (v.code, v.message) for k, v in errors.items()} == {
            "bob@example.com": (550, "5.1.1 no such user")
        }
    assert sendmail(scripted, ["alice@example.com", "bob@example.com"]) == {}

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        sendmail(scripted, ["x@greylist.test"])

    assert scripted.rcpt_attempts.count("bob@example.com") == 3
    assert scripted.rejected == {
        "bob@example.com": "550 5.1.1 no such user",
        "x@greylist.test": "450 4.2.0 greylisted",
    }
    assert [m.rcpt_tos for m in scripted.received_for("bob@example.com")] == [
        ("alice@example.com", "bob@example.com")
    ]


def test_on_data_451_once_then_accept(scripted: CaptureServer, script: Script) -> None:
    script.on_data("alice@example.com", "451 4.3.0 try again later", times=1)

    with pytest.raises(aiosmtplib.SMTPDataError) as excinfo:
        sendmail(scripted, ["alice@example.com"])
    assert excinfo.value.code == 451
    assert scripted.messages == []

    assert sendmail(scripted, ["alice@example.com"]) == {}
    assert len(scripted.messages) == 1


def test_on_mail_reply(scripted: CaptureServer, script: Script) -> None:
    script.on_mail("421 4.3.2 service shutting down", times=1, sender=SENDER)
    with pytest.raises(aiosmtplib.SMTPResponseException) as excinfo:
        sendmail(scripted, ["alice@example.com"])
    assert excinfo.value.code == 421
    assert sendmail(scripted, ["alice@example.com"]) == {}


def test_drop_at_data_disconnects_client(scripted: CaptureServer, script: Script) -> None:
    script.on_data(lambda _: True, Drop(), times=1)

    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        sendmail(scripted, ["alice@example.com"])
    assert scripted.messages == []

    assert sendmail(scripted, ["alice@example.com"]) == {}  # server still healthy
    assert len(scripted.messages) == 1


def test_sleep_then_reply_and_client_timeout(scripted: CaptureServer, script: Script) -> None:
    script.on_rcpt("slow@example.com", Sleep(0.2, then="250 2.1.5 eventually"), times=1)
    script.on_rcpt("stuck@example.com", Sleep(30), times=1)

    started = time.monotonic()
    assert sendmail(scripted, ["slow@example.com"]) == {}
    assert time.monotonic() - started >= 0.2

    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        sendmail(scripted, ["stuck@example.com"], timeout=0.3)


def test_stop_while_client_connected_is_clean(script: Script) -> None:
    script.on_rcpt("stuck@example.com", Sleep(30))
    threads_before = set(threading.enumerate())
    srv = CaptureServer(script=script)
    srv.start()

    async def go() -> None:
        task = asyncio.create_task(
            asyncio.to_thread(sendmail, srv, ["stuck@example.com"], MESSAGE, 30.0)
        )
        while "stuck@example.com" not in srv.rcpt_attempts:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await asyncio.to_thread(srv.stop)
        assert time.monotonic() - started < 5
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await task

    asyncio.run(go())
    srv.stop()  # idempotent
    assert not srv.running
    assert set(threading.enumerate()) <= threads_before


def test_restart_reuses_port() -> None:
    srv = CaptureServer()
    try:
        srv.start()
        port = srv.port
        sendmail(srv, ["alice@example.com"])

        srv.stop()
        with pytest.raises(aiosmtplib.SMTPConnectError):
            sendmail(srv, ["alice@example.com"])

        srv.start()
        assert srv.port == port
        sendmail(srv, ["alice@example.com"])
        assert len(srv.messages) == 2
        with pytest.raises(RuntimeError):
            srv.start()
    finally:
        srv.stop()


def test_mail_dir_writes_one_eml_per_recipient(tmp_path: Path) -> None:
    other = MESSAGE.replace(b"hello", b"second")
    with CaptureServer(mail_dir=tmp_path, reject_ratio=0.0) as srv:
        sendmail(srv, ["alice@example.com", "bob@example.com"])
        sendmail(srv, ["alice@example.com"], other)

    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "alice@example.com/000001.eml",
        "alice@example.com/000002.eml",
        "bob@example.com/000001.eml",
    ]
    assert (tmp_path / "alice@example.com/000001.eml").read_bytes() == MESSAGE
    assert (tmp_path / "bob@example.com/000001.eml").read_bytes() == MESSAGE
    assert (tmp_path / "alice@example.com/000002.eml").read_bytes() == other


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        Script().on_rcpt("a@example.com", "hello")
    with pytest.raises(ValueError):
        Script().on_data("a@example.com", "451 later", times=0)
    with pytest.raises(ValueError):
        CaptureServer(reject_ratio=1.5)
