"""compose.dkim through Plan.render: messages verify with dkimpy against the published key.

The DNS answer is supplied by the test (no network): `dnsfunc` returns the TXT record of
`<selector>._domainkey.<domain>.` and nothing for any other name.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postroom.compose.dkim import DkimSigner
from postroom.delivery.plan import Plan, make_plan
from postroom.domain.models import Audience, Delivery, Recipient, Target
from postroom.domain.properties import Properties
from postroom.domain.states import DeliveryState
from tests.unit.plan_settings import DEFAULTS, LINKS, SENDING

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
DOMAIN = "news.example"
SELECTOR = "pr2024"
ANN = Recipient(id=11, email="ann@example.org", first_name="Zoë", last_name="Lee")
TARO = Recipient(id=12, email="taro@example.jp", first_name="太郎", last_name="山田")


def _key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode("ascii")


PRIVATE_PEM, PUBLIC_B64 = _key()
OTHER_PEM, OTHER_PUBLIC_B64 = _key()


def dns(public_b64: str = PUBLIC_B64) -> Callable[..., bytes | None]:
    record = f"v=DKIM1; k=rsa; p={public_b64}".encode()

    def txt(name: bytes, timeout: int = 5, **_: Any) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return txt


def plan(private_pem: bytes = PRIVATE_PEM, **props: Any) -> Plan:
    properties = Properties(**{
        "subject": "Hi {{ recipient.first_name }}",
        "html": "<p>Hello {{ recipient.first_name }} {{ recipient.last_name }}</p>",
        "text": "Hello {{ recipient.first_name }}\n",
        "from_name": "News",
        "from_address": f"letters@{DOMAIN}",
        "reply_to": f"help@{DOMAIN}",
        **props,
    })
    delivery = Delivery(
        id=3, name="DKIM", template_name="default", state=DeliveryState.SENDING,
        properties=properties, audience=Audience(), salt="s4lt", last_error="",
        created_at=T0 - timedelta(days=1), analyzed_at=T0, started_at=T0,
    )
    signer = DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key=private_pem)
    return make_plan(delivery, defaults=DEFAULTS, sending=SENDING, archive_available=False,
                     links=LINKS, signers={DOMAIN: signer})


def signed(recipient: Recipient = ANN, **props: Any) -> bytes:
    return plan(**props).render(Target(42, 0, recipient), NOW).data


def tags(data: bytes) -> dict[str, str]:
    assert data.startswith(b"DKIM-Signature:")
    header = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    match = re.match(r"DKIM-Signature:(.*?)\r\n(?![ \t])", header, re.S)
    assert match is not None
    value = re.sub(r"\s+", "", match.group(1))
    return dict(item.split("=", 1) for item in value.split(";") if item)


def verify(data: bytes, public_b64: str = PUBLIC_B64) -> bool:
    return bool(dkim.verify(data, dnsfunc=dns(public_b64)))


# --- signing and verifying -------------------------------------------------------------------


@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1"])
def test_signed_message_verifies(charset: str) -> None:
    data = signed(charset=charset)
    assert data.count(b"DKIM-Signature:") == 1
    assert verify(data)


@pytest.mark.parametrize(("charset", "recipient"), [("utf-8", TARO), ("iso-2022-jp", TARO),
                                                    ("utf-8", ANN), ("shift_jis", TARO)])
def test_japanese_and_utf8_messages_verify(charset: str, recipient: Recipient) -> None:
    data = signed(recipient, charset=charset, subject="こんにちは {{ recipient.first_name }}")
    assert f'charset="{"utf-8" if charset == "utf-8" else charset}"'.encode() in data
    assert verify(data)


def test_signature_tags() -> None:
    sig = tags(signed())
    assert sig["v"] == "1"
    assert sig["a"] == "rsa-sha256"
    assert sig["c"] == "relaxed/relaxed"
    assert sig["d"] == DOMAIN
    assert sig["s"] == SELECTOR
    signed_headers = sig["h"].lower().split(":")
    for name in ("from", "to", "subject", "date", "message-id", "reply-to", "mime-version",
                 "content-type", "list-unsubscribe", "list-unsubscribe-post"):
        assert name in signed_headers, name


def test_headers_are_oversigned_and_absent_ones_signed_as_absent() -> None:
    sig = tags(signed(reply_to="", list_unsubscribe=False))
    signed_headers = sig["h"].lower().split(":")
    assert "list-unsubscribe" not in signed_headers
    # Present headers appear twice (RFC 6376 §8.15), an absent Reply-To once: adding either
    # on the way breaks the signature.
    assert [signed_headers.count(h) for h in ("from", "to", "subject", "reply-to")] == [
        2, 2, 2, 1]


def test_text_only_message_signs_its_transfer_encoding() -> None:
    data = signed(format="text")
    assert "content-transfer-encoding" in tags(data)["h"].lower().split(":")
    assert verify(data)


def test_no_signer_for_other_domains() -> None:
    data = signed(from_address="letters@other.example")
    assert b"DKIM-Signature" not in data


def test_render_without_signing() -> None:
    data = plan().render(Target(42, 0, ANN), NOW, sign=False).data
    assert b"DKIM-Signature" not in data
    assert not verify(data)


# --- tampering -------------------------------------------------------------------------------


def _split(data: bytes) -> tuple[bytes, bytes]:
    head, body = data.split(b"\r\n\r\n", 1)
    return head, body


def test_modified_body_fails() -> None:
    data = signed(format="text")
    head, body = _split(data)
    assert b"Hello" in body
    assert not verify(head + b"\r\n\r\n" + body.replace(b"Hello", b"Hellp"))


def test_appended_body_fails() -> None:
    data = signed()
    assert not verify(data + b"extra line\r\n")


ASCII_SUBJECT = "Hi there {{ recipient.last_name }}"


def test_modified_subject_fails() -> None:
    data = signed(subject=ASCII_SUBJECT)
    assert b"\r\nSubject: Hi there Lee\r\n" in data
    assert verify(data)
    assert not verify(data.replace(b"Subject: Hi there", b"Subject: Hi where", 1))


def test_modified_encoded_subject_fails() -> None:
    data = signed(recipient=TARO, charset="iso-2022-jp")
    assert b"\r\nSubject: =?iso-2022-jp?" in data
    assert not verify(data.replace(b"\r\nSubject: =?iso-2022-jp?", b"\r\nSubject: X=?iso-2022-jp?",
                                   1))


def test_modified_to_fails() -> None:
    data = signed()
    assert not verify(data.replace(b"<ann@example.org>", b"<bob@example.org>", 1))


def test_modified_list_unsubscribe_fails() -> None:
    data = signed()
    assert b"https://mail.example.com/u/" in data
    assert not verify(data.replace(b"https://mail.example.com/u/",
                                   b"https://evil.example.net/u/", 1))


def test_subject_added_below_the_signed_one_fails() -> None:
    """Verifiers take the last instance of a signed header: an added last Subject is checked."""
    data = signed(subject=ASCII_SUBJECT)
    head, body = _split(data)
    assert not verify(head + b"\r\nSubject: You won\r\n\r\n" + body)


def test_relaxed_canonicalization_survives_whitespace_changes() -> None:
    data = signed(subject=ASCII_SUBJECT)
    refolded = data.replace(b"Subject: Hi there", b"Subject:   Hi\r\n  there", 1)
    assert refolded != data
    assert verify(refolded)


def test_wrong_public_key_fails() -> None:
    assert not verify(signed(), OTHER_PUBLIC_B64)
    assert verify(signed(private_pem=OTHER_PEM), OTHER_PUBLIC_B64)


def test_signature_time_is_the_render_time_not_the_system_clock() -> None:
    """t= is the `now` the message is rendered at (the engine's injected clock), so a frozen
    clock gives a fixed t=, whatever the system clock says; the message still verifies."""
    at = datetime(2024, 5, 1, 9, 30, 15, 750000, tzinfo=timezone(timedelta(hours=2)))
    with mock.patch.object(dkim.time, "time", return_value=2_000_000_000.0):
        data = plan().render(Target(42, 0, ANN), at).data
    assert tags(data)["t"] == str(int(at.timestamp())) == "1714548615"
    assert verify(data)
    proof, _wire = plan().render_proof(ANN, "proof@example.org", 1, at)
    assert tags(proof)["t"] == "1714548615"


def test_signing_is_deterministic_for_the_same_message() -> None:
    # RSA PKCS#1 v1.5 is deterministic and t= comes from `now`: the same bytes every time
    assert signed() == signed()
    assert tags(signed())["t"] == str(int(NOW.timestamp()))


def test_an_international_from_domain_is_signed_with_its_a_label() -> None:
    from pathlib import Path

    from postroom.settings import DkimKey

    a_label = "xn--bcher-kva.example"
    for configured in ("bücher.example", "Bücher.Example", a_label):
        key = DkimKey(domain=configured, selector=SELECTOR, private_key_file=Path("k.pem"))
        assert key.domain == a_label
    with pytest.raises(ValueError, match="not a valid domain"):
        DkimKey(domain="bad domain", selector=SELECTOR, private_key_file=Path("k.pem"))

    delivery = plan(from_address="letters@bücher.example").delivery
    signer = DkimSigner(domain=a_label, selector=SELECTOR, private_key=PRIVATE_PEM)
    idn = make_plan(delivery, defaults=DEFAULTS, sending=SENDING, archive_available=False,
                    links=LINKS, signers={a_label: signer})
    data = idn.render(Target(42, 0, ANN), NOW).data
    assert tags(data)["d"] == a_label
    record = f"v=DKIM1; k=rsa; p={PUBLIC_B64}".encode()
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5, **_: (
        record if name == f"{SELECTOR}._domainkey.{a_label}.".encode() else None))
