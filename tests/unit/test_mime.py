"""compose.mime: rendered content + header values → the exact, legal bytes of one message."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any

import pytest

from postroom.compose.mime import (
    EncodingError,
    HeaderValues,
    Parts,
    build_message,
    header_text,
    html_to_text,
    make_message_id,
    parts_for,
)
from postroom.compose.personalize import RenderedContent
from postroom.compose.tokens import message_id_log
from postroom.domain.models import EmailFormat
from postroom.domain.properties import MessageFormat
from postroom.errors import InputError

HEADERS = HeaderValues(
    from_name="Postroom News",
    from_address="news@example.com",
    to_name="Ann Lee",
    to_address="ann@example.org",
    reply_to="",
    subject="ignored: the subject comes from the content",
    message_id="<7.3.salt@example.com>",
    date=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
)
HTML = '<h1>Spring</h1><p>Hello <a href="https://example.com/offer">our offer</a></p>'
CONTENT = RenderedContent(subject="Spring news", html=HTML, text="Hello, plain text\n")


def build(parts: Parts, content: RenderedContent = CONTENT, **headers: Any) -> bytes:
    return build_message(content=content, parts=parts, headers=replace(HEADERS, **headers))


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def assert_legal(data: bytes) -> EmailMessage:
    """No defects anywhere, CRLF everywhere, no line over 998 octets."""
    assert data.endswith(b"\r\n")
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None, "bare CR or LF"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    msg = parse(data)
    assert msg.defects == []
    for part in msg.walk():
        assert part.defects == [], part.get_content_type()
    return msg


def body(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    content: str = part.get_content()
    return content


def same_lines(decoded: str, original: str) -> bool:
    return decoded.splitlines() == original.splitlines()


# --- structure per Parts ---------------------------------------------------------------------


def test_multipart_alternative_with_both_bodies() -> None:
    msg = assert_legal(build(Parts.MULTIPART))
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert same_lines(body(msg, "plain"), CONTENT.text)
    assert same_lines(body(msg, "html"), HTML)
    assert msg.get_all("MIME-Version") == ["1.0"]
    assert all("MIME-Version" not in part for part in msg.iter_parts())


def test_html_only() -> None:
    msg = assert_legal(build(Parts.HTML))
    assert msg.get_content_type() == "text/html"
    assert msg.get_content_charset() == "utf-8"
    assert same_lines(body(msg, "html"), HTML)


def test_text_only() -> None:
    msg = assert_legal(build(Parts.TEXT))
    assert msg.get_content_type() == "text/plain"
    assert same_lines(body(msg, "plain"), CONTENT.text)
    assert b"<h1>" not in build(Parts.TEXT)


@pytest.mark.parametrize("parts", [Parts.MULTIPART, Parts.TEXT])
def test_text_is_generated_from_html_when_empty(parts: Parts) -> None:
    msg = assert_legal(build(parts, replace(CONTENT, text="  ")))
    text = body(msg, "plain")
    assert "Spring" in text and "Hello" in text
    assert "https://example.com/offer" in text  # links stay readable
    assert "<" not in text


def test_html_to_text_keeps_links_and_ends_with_a_newline() -> None:
    assert html_to_text('<p>See <a href="https://x.example/a">this</a></p>') == (
        "See [this](https://x.example/a)\n"
    )


def test_headers() -> None:
    msg = parse(build(Parts.MULTIPART, reply_to="help@example.com"))
    assert msg["From"] == "Postroom News <news@example.com>"
    assert msg["To"] == "Ann Lee <ann@example.org>"
    assert msg["Reply-To"] == "help@example.com"
    assert msg["Subject"] == "Spring news"
    assert msg["Message-ID"] == "<7.3.salt@example.com>"
    assert msg["Date"].datetime == HEADERS.date


def test_reply_to_with_a_display_name() -> None:
    data = build(Parts.TEXT, reply_to="help@xn--bcher-kva.example", reply_to_name="Büro")
    assert b"\r\nReply-To: =?utf-8?B?QsO8cm8=?= <help@xn--bcher-kva.example>\r\n" in data
    assert parse(data)["Reply-To"] == "Büro <help@xn--bcher-kva.example>"


def test_a_raw_non_ascii_address_fails_with_an_error_naming_its_header() -> None:
    with pytest.raises(EncodingError, match=r"^From: .*needs SMTPUTF8"):
        build(Parts.TEXT, from_address="jörg@xn--bcher-kva.example")
    # For an SMTPUTF8 recipient the same header goes out in UTF-8 (RFC 6532).
    data = build_message(content=CONTENT, parts=Parts.TEXT, utf8_headers=True,
                         headers=replace(HEADERS, from_address="jörg@xn--bcher-kva.example"))
    assert "jörg@xn--bcher-kva.example".encode() in data


def test_no_reply_to_header_when_empty() -> None:
    assert "Reply-To" not in parse(build(Parts.TEXT))


# --- line lengths and encodings --------------------------------------------------------------


@pytest.mark.parametrize("parts", list(Parts))
@pytest.mark.parametrize("char", ["x", "é", "🎉"])
def test_long_single_line_html_body_is_legal(parts: Parts, char: str) -> None:
    html = "<p>" + char * 5000 + "</p>"
    msg = assert_legal(build(parts, RenderedContent("s", html, "")))
    if parts is not Parts.TEXT:
        assert same_lines(body(msg, "html"), html)
    if parts is not Parts.HTML:
        assert char * 100 in body(msg, "plain")


def test_long_single_line_text_body_is_legal() -> None:
    text = "word" * 2000
    msg = assert_legal(build(Parts.TEXT, replace(CONTENT, text=text)))
    assert same_lines(body(msg, "plain"), text)


@pytest.mark.parametrize("subject", ["x" * 2000, "word " * 400, "Zoë 🎉 " * 300])
def test_very_long_subject_is_folded_and_decodes_back(subject: str) -> None:
    msg = assert_legal(build(Parts.MULTIPART, replace(CONTENT, subject=subject)))
    assert msg["Subject"] == subject.strip()


def test_non_ascii_and_emoji_headers_decode_back() -> None:
    data = build(Parts.MULTIPART, replace(CONTENT, subject="Héllo 🎉 wörld, «soldes»"),
                 to_name="Zoë Müller 🎉", from_name="Café Ünïcode")
    assert data.isascii()
    msg = assert_legal(data)
    assert msg["Subject"] == "Héllo 🎉 wörld, «soldes»"
    assert msg["To"].addresses[0].display_name == "Zoë Müller 🎉"
    assert msg["To"].addresses[0].addr_spec == "ann@example.org"
    assert msg["From"].addresses[0].display_name == "Café Ünïcode"


def test_display_name_with_specials_is_quoted() -> None:
    msg = assert_legal(build(Parts.TEXT, to_name='Lee, "Ann" <boss@evil.example>'))
    (address,) = msg["To"].addresses
    assert address.display_name == 'Lee, "Ann" <boss@evil.example>'
    assert address.addr_spec == "ann@example.org"


def test_bare_line_ends_in_content_become_crlf() -> None:
    msg = assert_legal(build(Parts.TEXT, replace(CONTENT, text="a\nb\rc\r\nd\n")))
    assert body(msg, "plain").splitlines() == ["a", "b", "c", "d"]


def test_encoded_word_lookalike_in_data_decodes_to_itself() -> None:
    lookalike = "=?utf-8?b?SGVsbG8=?="  # decodes to "Hello"
    msg = parse(build(Parts.TEXT, replace(CONTENT, subject=lookalike), to_name=lookalike))
    assert msg["Subject"] == lookalike
    assert msg["To"].addresses[0].display_name == lookalike


# --- header injection ------------------------------------------------------------------------

INJECTION = "Ann\r\nBcc: attacker@example.com"


@pytest.mark.parametrize("parts", list(Parts))
@pytest.mark.parametrize(
    "where", ["to_name", "subject", "from_name", "all"]
)
def test_no_header_injection(parts: Parts, where: str) -> None:
    content = CONTENT
    headers: dict[str, Any] = {}
    if where in ("subject", "all"):
        content = replace(CONTENT, subject=INJECTION)
    if where in ("to_name", "all"):
        headers["to_name"] = INJECTION
    if where in ("from_name", "all"):
        headers["from_name"] = INJECTION
    data = build(parts, content, **headers)
    msg = assert_legal(data)
    assert msg.get_all("Bcc") is None
    assert len(msg.get_all("To") or []) == 1
    assert len(msg.get_all("Subject") or []) == 1
    assert [a.addr_spec for a in msg["To"].addresses] == ["ann@example.org"]
    assert not re.search(rb"^Bcc:", data, re.I | re.M)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("a\r\nBcc: x@y", "a Bcc: x@y"),
        ("a\nb\rc", "a b c"),
        ("a\x00b\x1fc\x7fd", "a b c d"),
        ("a\u2028b\u2029c\x85d", "a b c d"),
        ("  lead\r\n\r\ntrail \n", "lead trail"),
        ("tab\there", "tab here"),
    ],
)
def test_header_text(value: str, expected: str) -> None:
    assert header_text(value) == expected


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("parts", list(Parts))
def test_same_inputs_same_bytes(parts: Parts) -> None:
    assert build(parts) == build(parts)


def test_boundary_derives_from_message_id() -> None:
    first = parse(build(Parts.MULTIPART)).get_boundary()
    other = parse(build(Parts.MULTIPART, message_id="<8.3.salt@example.com>")).get_boundary()
    assert first is not None and first.startswith("=_pr_")
    assert first != other
    assert first == parse(build(Parts.MULTIPART, to_name="Someone Else")).get_boundary()


def test_make_message_id_carries_a_mac_over_its_ids() -> None:
    secret = b"k" * 32
    value = make_message_id(log_id=12, delivery_id=3, secret=secret, domain="example.com")
    assert value == make_message_id(log_id=12, delivery_id=3, secret=secret,
                                    domain="example.com")  # deterministic: same bytes again
    assert re.fullmatch(r"<12\.3\.[A-Za-z0-9_-]{22}@example\.com>", value)
    assert message_id_log(secret, value) == 12
    assert message_id_log(secret, f"In-Reply-To: {value} (x)") == 12
    assert message_id_log(b"other" * 8, value) is None


def test_another_message_id_cannot_be_derived_from_ones_own() -> None:
    secret = b"k" * 32
    own = make_message_id(log_id=12, delivery_id=3, secret=secret, domain="example.com")
    mac = own.split(".")[2].split("@")[0]
    for forged in (own.replace("<12.", "<13."), own.replace(".3.", ".4."),
                   f"<13.3.{mac}@example.com>", own.replace(mac, mac[:-1] + "A"),
                   own.replace(mac, mac.lower())):
        if forged != own:
            assert message_id_log(secret, forged) is None, forged


@pytest.mark.parametrize("value", [
    "<12345678901234567890.1.AAAAAAAAAAAAAAAAAAAAAA@x>", "<" + "9" * 5000 + ".1.x@y>",
    "<1." + "9" * 5000 + ".AAAAAAAAAAAAAAAAAAAAAA@y>", "", "<>", "<1.2.3@x>", "1" * 100_000,
])
def test_hostile_message_ids_name_no_log_and_raise_nothing(value: str) -> None:
    assert message_id_log(b"k" * 32, value) is None


# --- parts_for -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email_format", "expected"),
    [
        (EmailFormat.TEXT, Parts.TEXT),
        (EmailFormat.HTML, Parts.HTML),
        (EmailFormat.UNKNOWN, Parts.MULTIPART),
    ],
)
def test_parts_for_recipient_format(email_format: EmailFormat, expected: Parts) -> None:
    got = parts_for(MessageFormat.RECIPIENT, email_format, has_html=True, has_text=True)
    assert got is expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (MessageFormat.MULTIPART, Parts.MULTIPART),
        (MessageFormat.HTML, Parts.HTML),
        (MessageFormat.TEXT, Parts.TEXT),
    ],
)
@pytest.mark.parametrize("email_format", list(EmailFormat))
def test_parts_for_fixed_format_ignores_recipient(
    fmt: MessageFormat, expected: Parts, email_format: EmailFormat
) -> None:
    assert parts_for(fmt, email_format, has_html=True, has_text=False) is expected


@pytest.mark.parametrize("fmt", list(MessageFormat))
def test_parts_for_without_html_is_text(fmt: MessageFormat) -> None:
    assert parts_for(fmt, EmailFormat.HTML, has_html=False, has_text=True) is Parts.TEXT


@pytest.mark.parametrize("fmt", list(MessageFormat))
def test_parts_for_without_any_content(fmt: MessageFormat) -> None:
    with pytest.raises(InputError, match="neither HTML nor text"):
        parts_for(fmt, EmailFormat.UNKNOWN, has_html=False, has_text=False)
