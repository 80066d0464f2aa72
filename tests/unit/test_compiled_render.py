"""The compiled message path (issue 16, ADR 0029) against the general writer, through Plan.render.

Each example makes one plan from generated properties (format, charset, DKIM, List-Unsubscribe,
CSS inlining, mirror mode, generated subject/HTML/text templates) and renders generated
recipients twice: with the compiled path (the production default) and with `compiled_path=False`
(every message through `MessageWriter`). The two must agree byte for byte, or fail with the same
error; and no recipient value may add a header line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import compat32
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from postroom.compose.charsets import _MIME_NAMES
from postroom.compose.compiled import CompiledShape
from postroom.compose.dkim import DkimSigner
from postroom.compose.mime import MessageWriter, Parts
from postroom.delivery.plan import Links, Plan, make_plan
from postroom.domain.models import Audience, Delivery, EmailFormat, Recipient, Target
from postroom.domain.properties import MessageFormat, MirrorMode, Properties
from postroom.domain.states import DeliveryState
from tests.unit.plan_settings import DEFAULTS, SENDING

NOW = datetime(2026, 3, 1, 10, 15, 30, tzinfo=UTC)
CHARSETS = sorted(set(_MIME_NAMES.values()))
LINKS = Links("https://mail.example.com", b"k" * 32, "")
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)
SIGNER = DkimSigner("platform.example", "sel", _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption()))
FAST = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Text that needs every encoding: ASCII, Latin, CJK, emoji, controls, CR/LF, NUL, QP-special.
ALPHABET = ("abcXYZ019 .,;:!?'\"\\()<>=_-+*/#&%$~^`|{}\t"
            "éüßÅøÇñ«»¡¿€“”\u2013…" "日本語こんにちはカタカナ" "ｶﾀｶﾅ¥‾" "🎉Привет"
            "\u00a0\x00\x7f\u2028\u0085\r\n")
VALUES = st.one_of(
    st.text(alphabet=ALPHABET, max_size=40),
    st.sampled_from([
        "", " ", "Ann", "Zürich", "Björn", "=?utf-8?q?x?=", "\r\nBcc: evil@example.com",
        "x\nSubject: injected", "Lee\r\nX-Injected: 1", "a" * 1100, "é" * 300, ".", "=",
        "trailing ", "<style>p{color:red}</style>", "le", "\r", "\n", "日本" * 60,
    ]),
)
SLOTS = ["{{ recipient.first_name }}", "{{ recipient.last_name }}", "{{ recipient.city }}",
         "{{ recipient.email }}", "{{ recipient.email_format }}", "{{ unsubscribe_url }}",
         "{{ mirror_url }}"]
PLAIN_LINES = "A line of plain ASCII text, long enough to tip the balance.\n" * 3
LITERALS = st.one_of(
    st.text(alphabet=ALPHABET.replace("{", "").replace("}", "").replace("%", "")
            .replace("#", ""), max_size=60),
    st.sampled_from(["\n", "\n\n", "<p>", "</p>\n", "<st", "<STY", "<style>b{x:y}</style>",
                     " \n", "=\n", ".\n", PLAIN_LINES, "a" * 1000, "é" * 200 + "\n", "\t\n",
                     "Hello ", "{0} }", "a { b", "}"]),
)
# Mostly templates the compiled path takes; some it leaves to the general writer.
OTHER = st.sampled_from(["{{ recipient.city|upper }}", "{% if recipient.city %}c{% endif %}",
                         "{{ recipient.missing }}", "{{ delivery.name }}", "{{ 1 + 1 }}",
                         "{{ recipient['city'] }}"])


def _template(pieces: list[str]) -> str:
    return "".join(pieces)


TEMPLATES = st.lists(st.one_of(LITERALS, st.sampled_from(SLOTS)), max_size=12).map(_template)
# A literal first, so that the text part is never blank (else it is made from the HTML).
MAYBE_OTHER = st.one_of(
    st.tuples(st.sampled_from(["Hello ", "<p>", "x"]), TEMPLATES).map(lambda t: "".join(t)),
    st.tuples(st.sampled_from(["Hello ", "<p>", "x"]), TEMPLATES).map(lambda t: "".join(t)),
    st.tuples(st.sampled_from(["Hello ", "<p>", "x"]), TEMPLATES).map(lambda t: "".join(t)),
    TEMPLATES,
    st.tuples(TEMPLATES, OTHER, TEMPLATES).map(lambda t: "".join(t)),
)
SUBJECTS = st.lists(st.one_of(st.text(alphabet=ALPHABET.replace("{", "").replace("}", "")
                                      .replace("%", "").replace("#", ""), max_size=30),
                              st.sampled_from(["{1}", "}{ ", *SLOTS[:4]])),
                    max_size=5).map(_template)
EMAILS = st.sampled_from(["ann@example.org", "Ann.Lee@Example.ORG", "zoe@bücher.example",
                          "jürgen@example.de", "o'brien+tag@example.com"])
RECIPIENTS = st.builds(
    lambda email, first, last, city, fmt: Recipient(
        id=5, email=email, first_name=first, last_name=last, email_format=fmt,
        fields={} if city is None else {"city": city}),
    EMAILS, VALUES, VALUES, st.one_of(st.none(), VALUES, st.just(7)),
    st.sampled_from(list(EmailFormat)))
PROPERTIES = st.fixed_dictionaries({
    "subject": SUBJECTS,
    "html": st.one_of(MAYBE_OTHER, MAYBE_OTHER, MAYBE_OTHER, st.just("")),
    "text": st.one_of(MAYBE_OTHER, MAYBE_OTHER, MAYBE_OTHER, st.just("")),
    "format": st.sampled_from(list(MessageFormat)),
    "charset": st.one_of(st.just("utf-8"), st.sampled_from(CHARSETS)),
    "list_unsubscribe": st.booleans(),
    "inline_css": st.booleans(),
    "mirror_mode": st.sampled_from(list(MirrorMode)),
    "from_name": st.sampled_from(["", "Postroom", "Café Zürich", "日本の店", "A \"quoted\" name"]),
    "extra_headers": st.sampled_from(["", "X-Campaign: spring", "X-Note: prière"]),
})


def _plan(props: dict[str, Any], *, dkim: bool) -> Plan:
    delivery = Delivery(
        id=3, name="Spring news", template_name="default", state=DeliveryState.SENDING,
        properties=Properties(**props), audience=Audience(), salt="s4lt", last_error="",
        created_at=NOW - timedelta(days=1), analyzed_at=NOW - timedelta(hours=1),
        started_at=NOW)
    return make_plan(delivery, defaults=DEFAULTS, sending=SENDING, archive_available=True,
                     links=LINKS, signers={"platform.example": SIGNER} if dkim else None)


def _outcome(plan: Plan, target: Target) -> Any:
    try:
        message = plan.render(target, NOW)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return message


def _assert_same(props: dict[str, Any], recipients: list[Recipient], dkim: bool,
                 record: Callable[[str], object] = lambda _: None) -> list[bool]:
    """Both ways agree for every recipient; which of them took the compiled path."""
    try:
        compiled = _plan(props, dkim=dkim)
    except Exception:  # a template that does not compile: nothing to render
        return []
    general = replace(compiled, compiled_path=False)
    written: list[bool] = []  # for the current recipient
    took: list[bool] = []
    original = CompiledShape.write

    def spy(self: CompiledShape, **kwargs: Any) -> Any:
        result = original(self, **kwargs)
        written.append(result is not None)
        return result

    for n, recipient in enumerate(recipients):
        target = Target(log_id=100 + n, attempts=0, recipient=recipient)
        written.clear()
        with mock.patch.object(CompiledShape, "write", spy):
            got = _outcome(compiled, target)
        expected = _outcome(general, target)
        assert got == expected
        took.append(bool(written and written[-1]))
        if took[-1]:
            encodings = re.findall(rb"Content-Transfer-Encoding: ([\w-]+)", got.data)
            record(f"compiled: {b', '.join(sorted(set(encodings))).decode()}")
        else:
            reasons = {compiled.fallback_reason(parts) for parts in Parts}
            record(f"general writer: {sorted(filter(None, reasons))[:1]}")
        if not isinstance(got, tuple):
            _assert_headers_are_ours(got.data)
    return took


_OUR_HEADERS = {"dkim-signature", "date", "from", "to", "reply-to", "subject", "message-id",
                "list-unsubscribe", "list-unsubscribe-post", "x-campaign", "x-note",
                "mime-version", "content-type", "content-transfer-encoding"}


def _assert_headers_are_ours(data: bytes) -> None:
    """No recipient value added a header line, and every line is CRLF-ended and short."""
    head = data.split(b"\r\n\r\n", 1)[0]
    names = {line.split(b":", 1)[0].decode().lower()
             for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")}
    assert names <= _OUR_HEADERS, names
    assert b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    message = BytesParser(policy=compat32).parsebytes(data)
    assert message.get_all("Bcc") is None and message.get_all("X-Injected") is None


@FAST
@given(props=PROPERTIES, recipients=st.lists(RECIPIENTS, min_size=1, max_size=3),
       dkim=st.booleans())
@example(props={"subject": "Hi {{ recipient.first_name }}", "html": "<p>{{ recipient.city }}",
                "text": "x {{ recipient.city }}", "format": MessageFormat.MULTIPART,
                "charset": "utf-8", "list_unsubscribe": True, "inline_css": True,
                "mirror_mode": MirrorMode.FORCE, "from_name": "", "extra_headers": ""},
         recipients=[Recipient(id=1, email="ann@example.org", first_name="Ann\r\nBcc: x@y.z",
                               fields={"city": "a\r"})], dkim=True)
@example(props={"subject": "", "html": "<st{{ recipient.city }}", "text": "t\n",
                "format": MessageFormat.HTML, "charset": "iso-8859-1", "list_unsubscribe": False,
                "inline_css": True, "mirror_mode": MirrorMode.AUTO, "from_name": "",
                "extra_headers": ""},
         recipients=[Recipient(id=1, email="ann@example.org", fields={"city": "yle>x"})],
         dkim=False)
def test_compiled_path_writes_what_the_general_writer_writes(
        props: dict[str, Any], recipients: list[Recipient], dkim: bool) -> None:
    _assert_same(props, recipients, dkim, event)


@pytest.mark.parametrize("charset", CHARSETS)
@pytest.mark.parametrize("fmt", list(MessageFormat))
@pytest.mark.parametrize("dkim", [False, True])
def test_every_format_charset_and_signing(charset: str, fmt: MessageFormat, dkim: bool) -> None:
    """The whole matrix, with content each charset can carry and a value it cannot."""
    props = {"subject": "News for {{ recipient.first_name }}",
             "html": "<p>Hello {{ recipient.first_name }} {{ recipient.last_name }}</p>\n"
                     "<p>" + "Static line. " * 12 + "</p>\n<p>{{ recipient.city }}</p>",
             "text": "Hello {{ recipient.first_name }},\n" + "Static line.\n" * 5
                     + "{{ recipient.city }}\n",
             "format": fmt, "charset": charset}
    people = [Recipient(id=1, email="ann@example.org", first_name="Ann", last_name="Lee",
                        fields={"city": "Porto"}),
              Recipient(id=2, email="bo@example.org", first_name="Björn", last_name="Ørsted",
                        email_format=EmailFormat.TEXT, fields={"city": "Zürich"}),
              Recipient(id=3, email="ken@example.org", first_name="健", last_name="日本",
                        email_format=EmailFormat.HTML, fields={"city": "東京"}),
              Recipient(id=4, email="x@example.org", first_name="🎉",
                        fields={"city": "a" * 2000})]
    written = _assert_same(props, people, dkim)
    if charset not in ("iso-2022-jp", "us-ascii"):
        assert any(written)  # the compiled path wrote some of them


BENCH_LIKE = {"subject": "{{ recipient.first_name }}, your {{ recipient.city }} update",
              "html": "<html><body>\n<p>Hello {{ recipient.first_name }},</p>\n"
                      "<p>Member #{{ recipient.member_id }}</p>\n</body></html>\n",
              "text": "Hello {{ recipient.first_name }},\nMember #{{ recipient.member_id }}\n",
              "format": "multipart"}


def _bench_target() -> Target:
    return Target(log_id=7, attempts=0, recipient=Recipient(
        id=7, email="ann@example.org", first_name="Chloé", last_name="Dubois",
        fields={"city": "Kraków", "member_id": "100007"}))


def test_plan_render_takes_the_compiled_path_for_the_bench_shape() -> None:
    plan = _plan(BENCH_LIKE, dkim=True)
    assert plan.fallback_reason(Parts.MULTIPART) is None
    expected = replace(plan, compiled_path=False).render(_bench_target(), NOW)
    with mock.patch.object(MessageWriter, "write", side_effect=AssertionError("general")):
        message = plan.render(_bench_target(), NOW)
    assert message == expected


@pytest.mark.parametrize(("change", "reason"), [
    ({"html": "<p>{{ recipient.first_name|upper }}</p>"},
     "the html template does more than print recipient fields and links"),
    ({"text": "{% for x in [1] %}{{ x }}{% endfor %}"},
     "the text template does more than print recipient fields and links"),
    ({"charset": "iso-2022-jp"}, "the charset iso-2022-jp is stateful"),
    ({"text": "{{ recipient.first_name }}"},
     "the text part may come out blank, and is then made from the HTML"),
    ({"text": ""}, "the text part may come out blank, and is then made from the HTML"),
    ({"html": "<style>p{color:red}</style><p>{{ recipient.first_name }}</p>"},
     "CSS inlining may change the HTML"),
])
def test_what_falls_back_says_why(change: dict[str, str], reason: str) -> None:
    plan = _plan({**BENCH_LIKE, **change}, dkim=False)
    assert plan.fallback_reason(Parts.MULTIPART) == reason
    general = replace(plan, compiled_path=False)
    assert _outcome(plan, _bench_target()) == _outcome(general, _bench_target())


def test_smtputf8_recipients_fall_back() -> None:
    plan = _plan(BENCH_LIKE, dkim=False)
    assert plan.fallback_reason(Parts.MULTIPART, utf8_headers=True) == (
        "the recipient's address needs SMTPUTF8 (raw UTF-8 headers)")


def test_a_text_only_message_with_a_mirror_page_falls_back() -> None:
    plan = _plan({**BENCH_LIKE, "mirror_mode": MirrorMode.FORCE}, dkim=False)
    assert plan.fallback_reason(Parts.MULTIPART) is None
    assert plan.fallback_reason(Parts.TEXT) == (
        "the mirror page of a text-only message is made from the HTML")


def test_hostile_values_cannot_add_headers_on_the_compiled_path() -> None:
    plan = _plan(BENCH_LIKE, dkim=True)
    target = Target(log_id=9, attempts=0, recipient=Recipient(
        id=9, email="ann@example.org", first_name="Ann\r\nBcc: evil@example.com",
        last_name="Lee\nX-Injected: 1",
        fields={"city": "Porto\r\nSubject: other", "member_id": "1\r\n\r\n<html>"}))
    with mock.patch.object(MessageWriter, "write", side_effect=AssertionError("general")):
        message = plan.render(target, NOW)
    _assert_headers_are_ours(message.data)
    assert message == replace(plan, compiled_path=False).render(target, NOW)


@pytest.mark.parametrize("fmt", [MessageFormat.TEXT, MessageFormat.HTML, MessageFormat.MULTIPART])
@pytest.mark.parametrize("value", ["", " \t ", "a  \t b \t", "x\n\n\n", "é \t\n \n"])
def test_dkim_body_hash_from_pieces(fmt: MessageFormat, value: str) -> None:
    """bh= from the pieces' canonical forms: whitespace runs, trailing whitespace and trailing
    empty lines, in literal text and in values, in each transfer encoding."""
    props = {"subject": "s", "format": fmt,
             "html": "<p>a \t b  </p>\n\n{{ recipient.city }}  \n\n\n",
             "text": "Hello  \t{{ recipient.city }} \t\n\n \n{{ recipient.city }}\n\n"}
    people = [Recipient(id=1, email="ann@example.org", fields={"city": value}),
              Recipient(id=2, email="bo@example.org", fields={"city": value + "é" * 30}),
              Recipient(id=3, email="cy@example.org", fields={"city": value + "日本" * 200})]
    assert all(_assert_same(props, people, dkim=True))
