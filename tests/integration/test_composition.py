"""Composition end to end (issue 3): mirror pages, one-click unsubscribe, proofs, charsets,
IDN and SMTPUTF8, DKIM through the archive — against real SMTP servers and the real web app."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postroom.app import Postroom
from postroom.domain.states import LogStatus
from postroom.settings import DkimKey
from postroom.testing.smtp_server import CaptureServer
from tests.conftest import ARCHIVE, write_csv
from tests.integration.web_server import serving

HTML = ('<html><head><style>p { color: #123456 }</style></head><body>'
        '<p>Hello {{ recipient.first_name }}</p>'
        '<a href="{{ mirror_url }}">View in browser</a> '
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>')


def _parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def _html_part(message: EmailMessage) -> bytes:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload
    raise AssertionError("no HTML part")


def _setup(postroom: Postroom, tmp_path: Path, rows: list[dict[str, str]],
           **props: Any) -> int:
    postroom.recipients.import_recipients(write_csv(tmp_path / f"r{time.monotonic_ns()}.csv", rows))
    name = f"t{time.monotonic_ns()}"
    postroom.templates.create_template(name, {"subject": "News for {{ recipient.first_name }}",
                                              "html": HTML, "from_address": "news@shop.example",
                                              **props})
    delivery, _ = postroom.deliveries.create_delivery(name)
    return delivery.id


@pytest.fixture
def relay(capture: Callable[..., CaptureServer]) -> CaptureServer:
    return capture()


@pytest.fixture
def postroom(make_postroom: Callable[..., Postroom], sqlite_url: str,
             relay: CaptureServer) -> Postroom:
    return make_postroom(sqlite_url, relay, bcc=False)


@pytest.fixture
def web(postroom: Postroom) -> Iterator[httpx.Client]:
    with serving(postroom) as client:
        yield client


def test_mirror_page_is_the_html_the_recipient_got(postroom: Postroom, relay: CaptureServer,
                                                   tmp_path: Path, web: httpx.Client) -> None:
    delivery_id = _setup(postroom, tmp_path, [{"email": "ann@example.org", "first_name": "Ann"}])
    assert asyncio.run(postroom.sending.send(delivery_id)).sent == 1
    [received] = relay.messages
    message = _parse(received.data)
    html = _html_part(message)
    assert b'style="color: #123456;"' in html  # CSS was inlined
    [log] = postroom.deliveries.logs(delivery_id)
    url = postroom.links.mirror_url(log.id)
    assert url.encode() in html  # the link in the message is the page's URL
    client = web
    path = httpx.URL(url).path
    page = client.get(path)
    assert page.status_code == 200 and page.content == html
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    # One character changed in the token, or an unknown token: 404.
    token = path.rsplit("/", 1)[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.get(f"/m/{flipped}").status_code == 404
    assert client.get(f"/m/{log.id + 1000}.{token.split('.')[1]}").status_code == 404
    assert client.get("/m/proof").status_code == 404
    # Expired: 410, and purge removes it (then 404).
    later = postroom.clock() + timedelta(days=31)
    postroom.clock = lambda: later
    assert client.get(path).status_code == 410
    assert postroom.links.purge_mirrors() == 1
    assert client.get(path).status_code == 404


@pytest.mark.parametrize(("mode", "uses_link", "expect_page"), [
    ("never", False, False), ("auto", False, False), ("auto", True, True),
    ("force", False, True), ("id_only", False, True)])
def test_mirror_modes(postroom: Postroom, tmp_path: Path, web: httpx.Client, mode: str,
                      uses_link: bool, expect_page: bool) -> None:
    html = HTML if uses_link else "<p>Hello {{ recipient.first_name }}</p>"
    delivery_id = _setup(postroom, tmp_path, [{"email": "bo@example.org", "first_name": "Bo"}],
                         html=html, mirror_mode=mode, list_unsubscribe=False)
    asyncio.run(postroom.sending.send(delivery_id))
    [log] = postroom.deliveries.logs(delivery_id)
    assert log.status is LogStatus.SENT
    if expect_page:
        url = postroom.links.mirror_url(log.id)
        page = web.get(httpx.URL(url).path)
        assert page.status_code == 200 and b"Hello Bo" in page.content
    else:
        with pytest.raises(LookupError):
            postroom.links.mirror_url(log.id)


def test_mirror_link_with_mode_never_fails_analysis(postroom: Postroom, tmp_path: Path) -> None:
    delivery_id = _setup(postroom, tmp_path, [{"email": "c@example.org", "first_name": "C"}],
                         mirror_mode="never")
    report = postroom.deliveries.analyze(delivery_id)
    assert not report.ok and "mirror_url" in report.errors[0]


def test_one_click_unsubscribe_opts_out_and_forged_tokens_change_nothing(
    postroom: Postroom, relay: CaptureServer, tmp_path: Path, web: httpx.Client,
) -> None:
    rows = [{"email": "dee@example.org", "first_name": "Dee"},
            {"email": "eve@example.org", "first_name": "Eve"}]
    delivery_id = _setup(postroom, tmp_path, rows)
    asyncio.run(postroom.sending.send(delivery_id))
    by_rcpt = {m.rcpt_tos[0]: _parse(m.data) for m in relay.messages}
    header = str(by_rcpt["dee@example.org"]["List-Unsubscribe"])
    assert str(by_rcpt["dee@example.org"]["List-Unsubscribe-Post"]) == \
        "List-Unsubscribe=One-Click"
    https_link = header.split("<")[2].rstrip(">, ")
    mailto = header.split("<")[1].split(">")[0]
    assert mailto.startswith("mailto:unsubscribe@shop.example?subject=unsubscribe")
    client = web
    path = httpx.URL(https_link).path
    # GET shows a confirmation page and changes nothing.
    page = client.get(path)
    assert page.status_code == 200 and "dee@example.org" in page.text and "<form" in page.text
    # A forged token (other id, same MAC) changes nothing.
    token = path.rsplit("/", 1)[1]
    log_id, mac = token.split(".")
    forged = client.post(f"/u/{int(log_id) + 1}.{mac}", content="List-Unsubscribe=One-Click",
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert forged.status_code == 404
    assert not any(r.opted_out for r in postroom.store.iter_audience(
        postroom.store.get_delivery(delivery_id)))
    # The RFC 8058 one-click POST: no cookie, no page needed.
    done = client.post(path, content="List-Unsubscribe=One-Click",
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and not done.cookies
    # The next analysis excludes the recipient.
    again = _setup(postroom, tmp_path, rows)
    report = postroom.deliveries.analyze(again)
    assert report.pending == 1 and report.to_json()["excluded"] == {"opted out": 1}


def test_proofs_are_numbered_never_archived_and_not_reported(
    make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay, archive = capture(), capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive)
    delivery_id = _setup(postroom, tmp_path, [{"email": "fay@example.org", "first_name": "Fay"}],
                         email_bcc=True)
    first = asyncio.run(postroom.proofs.proof(delivery_id,
                                              to=["qa@shop.example", "boss@shop.example"]))
    second = asyncio.run(postroom.proofs.proof(delivery_id, to=["qa@shop.example"]))
    assert (first.number, second.number) == (1, 2) and first.sample == "fay@example.org"
    subjects = [str(_parse(m.data)["Subject"]) for m in relay.messages]
    assert subjects == ["Proof #1 News for Fay"] * 2 + ["Proof #2 News for Fay"]
    assert [m.rcpt_tos for m in relay.messages] == [
        ("qa@shop.example",), ("boss@shop.example",), ("qa@shop.example",)]
    html = _html_part(_parse(relay.messages[0].data))
    assert b"/m/proof" in html and b"/u/proof" in html  # links are inactive in proofs
    time.sleep(0.3)
    assert archive.messages == []
    assert postroom.reports.report(delivery_id).to_json()["total"] == 0
    # The real send afterwards is archived and counted as usual.
    assert asyncio.run(postroom.sending.send(delivery_id)).sent == 1
    assert len(archive.messages) == 1


def test_charset_failures_static_and_per_recipient(postroom: Postroom, relay: CaptureServer,
                                                    tmp_path: Path) -> None:
    euro = _setup(postroom, tmp_path, [{"email": "g@example.org", "first_name": "G"}],
                  subject="Only 5 € today", charset="iso-8859-1")
    report = postroom.deliveries.analyze(euro)
    assert not report.ok
    assert any("€" in e and "subject" in e for e in report.errors), report.errors
    rows = [{"email": "lukasz@example.org", "first_name": "Łukasz"},
            {"email": "jose@example.org", "first_name": "José"}]
    latin = _setup(postroom, tmp_path, rows, charset="iso-8859-1")
    result = postroom.deliveries.analyze(latin)  # g@ (from the first delivery), José and Łukasz
    assert result.ok and result.pending == 2 and result.failed == 1
    summary = asyncio.run(postroom.sending.send(latin))
    assert summary.sent == 2
    logs = {log.email: log for log in postroom.deliveries.logs(latin)}
    assert logs["lukasz@example.org"].status is LogStatus.FAILED
    assert "Ł" in logs["lukasz@example.org"].detail
    assert "iso-8859-1" in logs["lukasz@example.org"].detail
    [message] = [m for m in relay.messages if m.rcpt_tos == ("jose@example.org",)]
    parsed = _parse(message.data)
    assert str(parsed["Subject"]) == "News for José"
    assert parsed.get_content_charset() in (None, "iso-8859-1")
    assert "José" in _html_part(parsed).decode("iso-8859-1")


def test_idn_domains_go_out_as_a_labels_and_utf8_local_parts_need_smtputf8(
    postroom: Postroom, relay: CaptureServer, tmp_path: Path,
) -> None:
    rows = [{"email": "hans@bücher.example", "first_name": "Hans"},
            {"email": "jörg@bücher.example", "first_name": "Jörg"}]
    delivery_id = _setup(postroom, tmp_path, rows)
    summary = asyncio.run(postroom.sending.send(delivery_id))
    assert summary.sent == 2  # aiosmtpd offers SMTPUTF8
    rcpts = sorted(m.rcpt_tos[0] for m in relay.messages)
    assert rcpts == ["hans@xn--bcher-kva.example", "jörg@xn--bcher-kva.example"]
    hans = next(m for m in relay.messages if m.rcpt_tos[0].startswith("hans"))
    assert "hans@xn--bcher-kva.example" in str(_parse(hans.data)["To"])


def test_utf8_local_part_fails_alone_when_the_relay_lacks_smtputf8(
    make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture(smtputf8=False)
    postroom = make_postroom(sqlite_url, relay, bcc=False)
    rows = [{"email": "hans@bücher.example", "first_name": "Hans"},
            {"email": "jörg@bücher.example", "first_name": "Jörg"}]
    delivery_id = _setup(postroom, tmp_path, rows)
    summary = asyncio.run(postroom.sending.send(delivery_id))
    assert summary.sent == 1 and summary.failed == 1
    failed = postroom.deliveries.logs(delivery_id, status="failed")
    assert [log.email for log in failed] == ["jörg@bücher.example"]
    assert "SMTPUTF8" in failed[0].detail
    assert failed[0].failure_type == "ignored", "our relay's limit is not the address's fault"
    address = postroom.store.get_address(failed[0].email)
    assert address is None or address.status.value == "valid"


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("dkim") / "shop.example.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_dkim_signature_verifies_before_and_after_the_archive(
    make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
    tmp_path: Path, dkim_key: tuple[Path, bytes],
) -> None:
    from postroom.settings import Settings
    from postroom.wiring import build

    key_file, txt = dkim_key
    relay, archive = capture(), capture()
    base = make_postroom(f"sqlite:///{tmp_path / 'd.db'}", relay, archive=archive)
    settings = Settings.model_validate({
        **base.settings.model_dump(),
        "dkim": [DkimKey(domain="shop.example", selector="pr2026", private_key_file=key_file)],
    })
    base.store.close()
    postroom = build(settings)
    try:
        delivery_id = _setup(postroom, tmp_path,
                             [{"email": "ivy@example.org", "first_name": "Ivy"}],
                             email_bcc=True, charset="iso-2022-jp",
                             subject="こんにちは {{ recipient.first_name }}")
        assert asyncio.run(postroom.sending.send(delivery_id)).sent == 1
    finally:
        postroom.store.close()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return txt if name == b"pr2026._domainkey.shop.example." else b""

    [sent] = relay.messages
    [copy] = archive.messages
    assert copy.data == sent.data and copy.rcpt_tos == (ARCHIVE,)
    assert sent.data.startswith(b"DKIM-Signature:")
    signature = str(_parse(sent.data)["DKIM-Signature"])
    assert "list-unsubscribe" in signature.lower() and "c=relaxed/relaxed" in signature
    assert dkim.verify(sent.data, dnsfunc=dns)
    assert dkim.verify(copy.data, dnsfunc=dns)
    assert not dkim.verify(sent.data.replace(b"Ivy", b"Eve"), dnsfunc=dns)


def test_dkim_signature_time_is_the_send_clock_not_the_system_clock(
    make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
    tmp_path: Path, dkim_key: tuple[Path, bytes],
) -> None:
    """t= comes from the clock Postroom was built with (the time the message is rendered, as
    its Date), and the message still verifies."""
    from postroom.settings import Settings
    from postroom.wiring import build

    key_file, txt = dkim_key
    relay = capture()
    base = make_postroom(f"sqlite:///{tmp_path / 't.db'}", relay, bcc=False)
    settings = Settings.model_validate({
        **base.settings.model_dump(),
        "dkim": [DkimKey(domain="shop.example", selector="pr2026", private_key_file=key_file)],
    })
    base.store.close()
    shift = timedelta(days=400, seconds=17)
    postroom = build(settings, clock=lambda: datetime.now(UTC) - shift)
    try:
        delivery_id = _setup(postroom, tmp_path,
                             [{"email": "ivy@example.org", "first_name": "Ivy"}])
        assert asyncio.run(postroom.sending.send(delivery_id)).sent == 1
    finally:
        postroom.store.close()

    [sent] = relay.messages
    parsed = _parse(sent.data)
    signature = re.sub(r"\s+", "", str(parsed["DKIM-Signature"]))
    signed_at = int(dict(tag.split("=", 1) for tag in signature.split(";") if tag)["t"])
    assert signed_at == int(parsed["Date"].datetime.timestamp())
    assert time.time() - signed_at > shift.total_seconds() - 60
    assert dkim.verify(sent.data, dnsfunc=lambda name, timeout=5: (
        txt if name == b"pr2026._domainkey.shop.example." else b""))


def test_health_form_posts_and_html_escaping(
    postroom: Postroom, relay: CaptureServer, tmp_path: Path, web: httpx.Client,
) -> None:
    delivery_id = _setup(postroom, tmp_path, [{"email": "kim@example.org", "first_name": "Kim"}])
    asyncio.run(postroom.sending.send(delivery_id))
    [log] = postroom.deliveries.logs(delivery_id)
    path = httpx.URL(postroom.links.mirror_url(log.id)).path
    health = web.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert web.get(path).content == _html_part(_parse(relay.messages[0].data))
    unsubscribe = httpx.URL(postroom.planner.links.unsubscribe_url(log.id)).path
    reply = web.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})  # the page's form
    assert reply.status_code == 200 and "kim@example.org" in reply.text
    recipient = postroom.store.recipient_by_email("kim@example.org")
    assert recipient is not None and recipient.opted_out
