"""The fast rendering paths (issue 6) against the plain definitions they replace.

Each reference below is the code as it was before rendering was made fast: straightforward and
slow. The fast code must give the same result, or the same error, for any input, not only for
the golden messages (tests/unit/test_render_golden.py).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from unittest import mock
from urllib.parse import quote

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from postroom.compose import dkim as postroom_dkim
from postroom.compose.charsets import _MIME_NAMES, Charset, charset_for, first_unrepresentable
from postroom.compose.dkim import DkimSigner
from postroom.compose.headers import _q, encoded_words
from postroom.compose.mime import EncodingError, _body, _QpLines, body_part, decoded_part
from postroom.compose.personalize import _HTML_ENV, _TEXT_ENV, _Compiled, _Named, _Undefined
from postroom.compose.tokens import UNSUBSCRIBE, make_token
from postroom.compose.wire import recipient_wire_address
from postroom.delivery.plan import Links
from postroom.domain.addresses import wire_address
from postroom.errors import InputError

CHARSETS = sorted({charset_for(name).mime for name in _MIME_NAMES.values()})
ALPHABET = ("abcXYZ019 .,;:!?'\"\\()<>=_-+*/#&%$~^`|{}\t"
            "éüßÅøÇñ«»¡¿àÿ€“”\u2013…" "日本語こんにちはカタカナ漢字、。" "ｶﾀｶﾅ¥‾"
            "🎉👍🏽Привет" "\u0301\u00a0\x00\x7f\u2028\u0085\r\n")
TEXT = st.text(alphabet=ALPHABET, max_size=160)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(call: Callable[[], Any]) -> Any:
    """What a call gives: its value, or its error's type and message."""
    try:
        return call()
    except Exception as exc:
        return type(exc).__name__, str(exc)


# --- RFC 2047 encoded words -----------------------------------------------------------------

_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_B_ONLY = frozenset({"iso-2022-jp", "shift_jis", "euc-jp", "euc-kr", "gb2312", "gbk"})


def reference_q(data: bytes) -> str:
    return "".join(
        chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in data
    )


def reference_encoded_words(text: str, charset: Charset) -> list[str]:
    data = charset.encode(text)
    mostly_ascii = sum(b < 0x80 for b in data) >= 0.8 * max(1, len(data))
    use_q = mostly_ascii and charset.mime not in _B_ONLY
    kind, encode = ("Q", reference_q) if use_q else (
        "B", lambda d: base64.b64encode(d).decode("ascii"))
    room = 66 - len(charset.mime) - 7
    words: list[str] = []
    chunk = ""
    for character in text:
        candidate = chunk + character
        if chunk and len(encode(charset.encode(candidate))) > room:
            words.append(f"=?{charset.mime}?{kind}?{encode(charset.encode(chunk))}?=")
            chunk = character
        else:
            chunk = candidate
    if chunk or not words:
        words.append(f"=?{charset.mime}?{kind}?{encode(charset.encode(chunk))}?=")
    return words


def test_q_encodes_every_byte_as_before() -> None:
    every = bytes(range(256))
    assert _q(every) == reference_q(every)


@FAST
@given(text=TEXT, charset=st.sampled_from(CHARSETS))
@example(text="", charset="utf-8")
@example(text="a" * 200, charset="iso-2022-jp")
@example(text="日本語" * 40 + "abc¥‾" * 10, charset="iso-2022-jp")
@example(text="🎉" * 30, charset="utf-8")
@example(text="x" + "é" * 80, charset="iso-8859-1")
def test_encoded_words_as_before(text: str, charset: str) -> None:
    fits = charset_for(charset)
    assert outcome(lambda: encoded_words(text, fits)) == outcome(
        lambda: reference_encoded_words(text, fits))


@FAST
@given(text=st.text(alphabet="日本語こんにちは¥‾abc ", max_size=120))
def test_encoded_words_iso_2022_jp_as_before(text: str) -> None:
    fits = charset_for("iso-2022-jp")
    assert encoded_words(text, fits) == reference_encoded_words(text, fits)


# --- charsets: what the fast paths assume of stateless ones -----------------------------------


EVERY_CHARACTER_BUT_LF = "".join(
    chr(code) for code in range(0x110000) if code != 0x0A and not 0xD800 <= code <= 0xDFFF)


@pytest.mark.parametrize("charset", CHARSETS)
def test_only_a_line_feed_encodes_to_0x0a_in_a_stateless_charset(charset: str) -> None:
    fits = charset_for(charset)
    if not fits.stateless:
        assert codecs.lookup(fits.codec).name == "iso2022_jp"
        return
    # Character by character (stateless), what cannot be encoded becomes "?".
    assert b"\n" not in EVERY_CHARACTER_BUT_LF.encode(fits.codec, "replace")
    assert "\n".encode(fits.codec) == b"\n"


@pytest.mark.parametrize("charset", CHARSETS)
def test_only_a_carriage_return_encodes_to_0x0d(charset: str) -> None:
    """So a part's LF-separated bytes have no CR (quoted-printable line by line needs it)."""
    every = EVERY_CHARACTER_BUT_LF.replace("\r", "")
    assert b"\r" not in every.encode(charset_for(charset).codec, "replace")


@FAST
@given(text=TEXT, charset=st.sampled_from(CHARSETS))
def test_a_stateless_charset_encodes_character_by_character(text: str, charset: str) -> None:
    fits = charset_for(charset)
    if not fits.stateless or first_unrepresentable(text, fits) is not None:
        return
    assert fits.encode(text) == b"".join(fits.encode(c) for c in text)


# --- body parts ------------------------------------------------------------------------------


def reference_part_bytes(text: str, charset: Charset, where: str) -> list[bytes]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    encoded = []
    for line in lines:
        problem = first_unrepresentable(line, charset)
        if problem is not None:
            raise EncodingError(problem.describe(charset, where))
        encoded.append(charset.encode(line))
    return encoded


def reference_body_part(text: str, charset: Charset, where: str) -> tuple[str, bytes]:
    encoded = reference_part_bytes(text, charset, where)
    raw = b"\r\n".join(encoded) + b"\r\n"
    if raw.isascii() and b"\0" not in raw and all(len(line) <= 998 for line in encoded):
        return "7bit", raw
    qp = binascii.b2a_qp(b"\n".join(encoded) + b"\n", istext=True).replace(b"\n", b"\r\n")
    b64 = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return ("quoted-printable", qp) if len(qp) <= len(b64) else ("base64", b64)


BODIES = st.one_of(
    TEXT,
    st.lists(st.sampled_from(["a" * 1100, "é" * 400, "日本" * 300, " \t ", "", ".", "=",
                              "From x", "\x00", "\r\n", "\n", "\r", "ok "]),
             max_size=12).map("".join),
)


@FAST
@given(text=BODIES, charset=st.sampled_from(CHARSETS))
@example(text="", charset="utf-8")
@example(text="\ud800", charset="utf-8")
@example(text="ok\n\ud800", charset="iso-8859-1")
def test_body_part_as_before(text: str, charset: str) -> None:
    fits = charset_for(charset)
    assert outcome(lambda: body_part(text, fits, "html")) == outcome(
        lambda: reference_body_part(text, fits, "html"))
    assert outcome(lambda: decoded_part(text, fits, "html")) == outcome(
        lambda: b"\r\n".join(reference_part_bytes(text, fits, "html")) + b"\r\n")


SHARED_QP = _QpLines(limit=4096)  # shared by the examples: lines met before, and a full cache


@FAST
@given(text=BODIES, charset=st.sampled_from(CHARSETS))
def test_body_with_remembered_lines_as_before(text: str, charset: str) -> None:
    fits = charset_for(charset)
    assert outcome(lambda: _body(text, fits, "text", SHARED_QP)[:2]) == outcome(
        lambda: reference_body_part(text, fits, "text"))


@FAST
@given(lines=st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(
    b"\n", b"")) | st.sampled_from([b"", b".", b" ", b"\t", b"a ", b". ", b"=", b"x" * 80]),
    max_size=10))
def test_quoted_printable_goes_line_by_line(lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    assert SHARED_QP(data) == binascii.b2a_qp(data, istext=True)


# --- recipient addresses ---------------------------------------------------------------------

LOCAL = st.text(alphabet="abcXYZ09._+-!#$%&'*/=?^`{|}~\"é@ ", min_size=0, max_size=70)
LABEL = st.text(alphabet="abcxyz09-é_", min_size=0, max_size=66)
DOMAIN = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
PLAIN_LOCAL = st.from_regex(r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[a-zA-Z0-9-]{1,5}){0,2}",
                            fullmatch=True)
PLAIN_DOMAIN = st.from_regex(r"([a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\.){1,3}[a-z0-9-]{0,4}[a-z]",
                             fullmatch=True)
ADDRESSES = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", PLAIN_LOCAL, PLAIN_DOMAIN),
    st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN),
    st.builds(lambda local, domain, tld: f"{local}@{domain}.{tld}",
              st.sampled_from(["ann", "a.b", "first.last+tag", "Postmaster", "info", "ab..c",
                               ".ann", "ann.", "x" * 64, "x" * 65, "jörg", '"q"']),
              st.sampled_from(["example", "sub.example", "a-b", "xn--bcher-kva", "ab--cd",
                               "-ab", "ab-", "1", "x" * 63, "x" * 64, "EXAMPLE", "local",
                               "home.arpa", "b" * 200]),
              st.sampled_from(["org", "com", "test", "invalid", "local", "onion", "arpa", "c0m",
                               "123", "x" * 63, "localhost", "Org", "co"])),
)


@settings(max_examples=1000, deadline=None)
@given(address=ADDRESSES)
@example(address="ann@example.org")
@example(address="abuse@example.org")
@example(address="ann@example.org\n")
@example(address=" ann@example.org")
def test_recipient_wire_address_is_wire_address(address: str) -> None:
    assert outcome(lambda: recipient_wire_address(address)) == outcome(
        lambda: wire_address(address))


def test_the_plain_addresses_of_the_bench_take_the_short_way() -> None:
    with mock.patch("postroom.compose.wire.wire_address", side_effect=AssertionError):
        assert recipient_wire_address("member0000001@example.org").address == (
            "member0000001@example.org")
    with pytest.raises(InputError):
        recipient_wire_address("member@example")


# --- links -----------------------------------------------------------------------------------


@pytest.mark.parametrize("log_id", [None, 0, 1, 42, 2**62 + 12345])
def test_list_unsubscribe_as_before(log_id: int | None) -> None:
    links = Links("https://m.example.com", b"secret", "leave@example.com")
    token = "proof" if log_id is None else make_token(links.secret, UNSUBSCRIBE, log_id)
    mailto = f"mailto:{links.unsubscribe_mailto}?subject={quote('unsubscribe ' + token)}"
    assert links.list_unsubscribe(log_id) == (
        f"<{mailto}>, <https://m.example.com/u/{token}>")


# --- the sandbox's short way to read recipient.x ---------------------------------------------

PLAIN_SANDBOX = ImmutableSandboxedEnvironment(undefined=_Undefined)


def _read(environment: Any, obj: Any, attribute: str) -> Any:
    value = environment.getattr(obj, attribute)
    if isinstance(value, _Undefined):
        return "undefined", value._undefined_message, value._undefined_exception
    if callable(value):  # a wrapped str.format is a new function each time
        return "callable", value.__qualname__, value("Z")
    return value


@pytest.mark.parametrize("attribute", [
    "first_name", "missing", "items", "keys", "name", "_values", "_label", "__class__",
    "__init__", "__getattr__", "format", "upper", "mro", "_private", "__dict__"])
@pytest.mark.parametrize("environment", [_HTML_ENV, _TEXT_ENV])
def test_getattr_of_named_as_the_sandbox(environment: Any, attribute: str) -> None:
    named = _Named("recipient", {"first_name": "Ann", "items": [1], "name": None,
                                 "_private": "x", "format": "{}".format, "upper": 3})
    assert _read(environment, named, attribute) == _read(PLAIN_SANDBOX, named, attribute)


TEMPLATES = [
    "Hi {{ recipient.first_name }} {{ recipient['last_name'] }} {{ delivery.name }}",
    "{% set x = recipient.first_name | upper %}{{ x }}{% for i in range(3) %}{{ loop.index }}"
    "{{ loop.cycle('a', 'b') }}{% endfor %}{{ mirror_url }}",
    "{% block b %}[{{ recipient.first_name }}]{% endblock %}{{ self.b() }}",
    "{% macro m(v) %}<{{ v }}>{% endmacro %}{{ m(recipient.first_name) }}",
    "{% set ns = namespace(n=0) %}{% for c in 'abc' %}{% set ns.n = ns.n + 1 %}{% endfor %}"
    "{{ ns.n }}{% set j = joiner('/') %}{% for c in 'ab' %}{{ j() }}{{ c }}{% endfor %}",
    "{{ recipient.missing }}", "{{ nothing }}", "{{ recipient.__class__ }}",
    "{{ recipient._values }}", "{{ 1 // 0 }}", "{% include 'other' %}",
    "{{ recipient.first_name.format(1) }}", "{{ '{0}'.format(recipient.first_name) }}",
    "{{ recipient.items }} {{ recipient.tags.append(1) }}", "{{ cycler('a', 'b').next() }}",
]


@pytest.mark.parametrize("source", TEMPLATES)
@pytest.mark.parametrize("environment", [_HTML_ENV, _TEXT_ENV])
def test_compiled_renders_as_template_render(environment: Any, source: str) -> None:
    template = environment.from_string(source)
    variables = {"recipient": _Named("recipient", {"first_name": "<Ann>", "last_name": "Lee",
                                                   "items": 2, "tags": []}),
                 "delivery": _Named("delivery", {"id": 3, "name": "News & co"}),
                 "mirror_url": "https://m/x?a=1&b=2"}
    assert outcome(lambda: _Compiled(template).render(variables)) == outcome(
        lambda: template.render(variables))


# --- DKIM ------------------------------------------------------------------------------------


def _pem(private_format: serialization.PrivateFormat) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.private_bytes(serialization.Encoding.PEM, private_format,
                             serialization.NoEncryption())


KEYS = {"pkcs8": _pem(serialization.PrivateFormat.PKCS8),
        "pkcs1": _pem(serialization.PrivateFormat.TraditionalOpenSSL)}
MESSAGE = (b"Date: Wed, 01 May 2024 09:02:03 +0000\r\nFrom: News <news@news.example>\r\n"
           b"To: =?utf-8?Q?Zo=C3=AB?= <ann@example.org>\r\nSubject:  Hello \t there\r\n"
           b" folded\r\nMessage-ID: <1.2.s@news.example>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=\"utf-8\"\r\n"
           b"Content-Transfer-Encoding: 7bit\r\n\r\nHello  \t world \r\n\r\n\r\n")
SIGNED_AT = datetime(2024, 5, 1, 8, 0, 0, 999999, tzinfo=UTC)  # t= has whole seconds
BODY_LINES = st.lists(st.sampled_from([b"", b"  ", b"a  b\t", b"x" * 120, b".", b"=C3=AB"]),
                      max_size=8)


def reference_sign(signer: DkimSigner, message: bytes) -> bytes:
    present = {line.split(b":", 1)[0].strip().lower()
               for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
               if line and not line[:1].isspace()}
    headers = [h for h in postroom_dkim.SIGNED_HEADERS if h.lower() in present] + list(
        postroom_dkim.OVERSIGNED)
    signature: bytes = dkim.sign(
        message, signer.selector.encode(), signer.domain.encode(), signer.private_key,
        canonicalize=(b"relaxed", b"relaxed"), include_headers=headers, linesep=b"\r\n")
    return signature + message


@pytest.mark.parametrize("backend", ["openssl", "dkimpy"])
@pytest.mark.parametrize("key", list(KEYS))
@settings(max_examples=25, deadline=None)
@given(lines=BODY_LINES, subject=st.text(alphabet="ab =?\t", max_size=200))
def test_dkim_signature_as_dkim_sign(backend: str, key: str, lines: list[bytes],
                                     subject: str) -> None:
    signer = DkimSigner("news.example", "s2024", KEYS[key])
    message = MESSAGE.replace(b"Hello \t there", subject.encode()) + b"\r\n".join(lines)
    openssl = postroom_dkim._openssl_rsa if backend == "openssl" else lambda *_: None
    with mock.patch.object(postroom_dkim, "_openssl_rsa", openssl), \
            mock.patch.object(dkim.time, "time", return_value=SIGNED_AT.timestamp()):
        assert DkimSigner("news.example", "s2024", KEYS[key]).sign(message, now=SIGNED_AT) == (
            reference_sign(signer, message))


def test_openssl_signs_with_the_key_dkimpy_reads() -> None:
    signer = DkimSigner("news.example", "s2024", KEYS["pkcs8"])
    sign = signer._rsa
    assert sign is not None
    assert sign.__qualname__.startswith("_openssl_rsa")
    assert sign(hashlib.sha256(b"x")) == postroom_dkim._dkimpy_rsa(
        dkim.crypto.parse_pem_private_key(KEYS["pkcs8"]))(hashlib.sha256(b"x"))


def test_an_unreadable_key_fails_as_dkim_sign_does() -> None:
    signer = DkimSigner("news.example", "s2024", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END")
    assert outcome(lambda: signer.sign(MESSAGE, now=SIGNED_AT)) == outcome(
        lambda: reference_sign(signer, MESSAGE))
