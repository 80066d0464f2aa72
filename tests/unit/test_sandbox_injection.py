"""Header injection and template sandbox through Plan.render (issue 3, point 7).

Recipient data is data: line breaks cannot start a header, template syntax is never
evaluated, encoded-word lookalikes stay literal. Templates cannot reach Python internals: they
fail with TemplateError at render time, so analysis fails, and nothing executes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.header import decode_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default, strict
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest

from postroom.delivery.analysis import analyze, static_checks
from postroom.delivery.plan import Plan, make_plan
from postroom.domain.models import Audience, Delivery, Recipient, Target
from postroom.domain.properties import MessageFormat, Properties
from postroom.domain.states import DeliveryState
from postroom.errors import TemplateError
from tests.unit.plan_settings import DEFAULTS, LINKS, SENDING
from tests.unit.test_analysis_charsets import FakeStore

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)

SUBJECT = "Hi {{ recipient.first_name }} {{ recipient.last_name }} ({{ recipient.note }})"
HTML = "<p>{{ recipient.first_name }}|{{ recipient.last_name }}|{{ recipient.note }}</p>\n"
TEXT = "{{ recipient.first_name }}|{{ recipient.last_name }}|{{ recipient.note }}\n"

PAYLOADS = [
    "\r\nBcc: x@evil.example",
    "Ann\r\nBcc: x@evil.example\r\nCc: y@evil.example\r\n\r\nforged body",
    "Ann\nTo: z@evil.example",
    "{{ 7*7 }}",
    "{% raw %}",
    "{% for x in range(3) %}{{ x }}{% endfor %}",
    "{{ recipient.__class__ }}",
    "{{ recipient.email }}",
    "=?utf-8?q?x?=",
    "=?utf-8?b?QmNjOiB4QGV2aWwuZXhhbXBsZQ==?=",  # "Bcc: x@evil.example"
    '"Boss" <boss@evil.example>, other@evil.example',
]
FIELDS = ["first_name", "last_name", "note"]


def plan(**props: Any) -> Plan:
    properties = Properties(**{"subject": SUBJECT, "html": HTML, "text": TEXT, **props})
    delivery = Delivery(
        id=3, name="Inject", template_name="default", state=DeliveryState.SENDING,
        properties=properties, audience=Audience(), salt="s4lt", last_error="",
        created_at=T0 - timedelta(days=1), analyzed_at=T0, started_at=T0,
    )
    return make_plan(delivery, defaults=DEFAULTS, sending=SENDING, archive_available=False,
                     links=LINKS)


def recipient(field: str, payload: str) -> Recipient:
    values = {"first_name": "Ann", "last_name": "Lee", "note": "ok", field: payload}
    return Recipient(id=9, email="ann@example.org", first_name=values["first_name"],
                     last_name=values["last_name"], fields={"note": values["note"]})


def parse(data: bytes) -> EmailMessage:
    BytesParser(policy=strict).parsebytes(data)  # raises on any defect
    msg = BytesParser(policy=default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def one_line(value: str) -> str:
    """What a header shows of data: each run of line breaks became one space (header_text)."""
    return re.sub(r"[\r\n]+", " ", value).strip()


def to_display_name(data: bytes) -> str:
    """The To display name, decoded per RFC 2047 §6.2 (email.header.decode_header).

    Not `msg["To"].addresses[0].display_name`: Python 3.11's address parser keeps the white
    space between adjacent encoded words (CPython gh-128110) and would add spaces.
    """
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    (to,) = re.findall(r"^To:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.M)
    ((name, address),) = getaddresses([re.sub(r"\r\n(?=[ \t])", "", to)])
    assert address == "ann@example.org"
    return "".join(chunk.decode(charset or "ascii") if isinstance(chunk, bytes) else chunk
                   for chunk, charset in decode_header(name))


def lf(value: str) -> str:
    return value.replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1", "iso-2022-jp"])
@pytest.mark.parametrize("fmt", [MessageFormat.MULTIPART, MessageFormat.TEXT])
@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_recipient_data_is_inert(payload: str, field: str, fmt: MessageFormat,
                                 charset: str) -> None:
    p = plan(format=fmt, charset=charset)
    who = recipient(field, payload)
    data = p.render(Target(42, 0, who), NOW).data
    msg = parse(data)

    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head and b"\r\nCc:" not in head
    for part in msg.walk():
        assert part.get_all("Bcc") is None and part.get_all("Cc") is None
    assert len(msg.get_all("To") or []) == 1
    assert len(msg.get_all("Subject") or []) == 1
    assert len(msg.get_all("From") or []) == 1
    assert [a.addr_spec for a in msg["To"].addresses] == ["ann@example.org"]

    # the payload shows literally: nothing evaluated, nothing decoded twice
    first = payload if field == "first_name" else "Ann"
    last = payload if field == "last_name" else "Lee"
    note = payload if field == "note" else "ok"
    assert str(msg["Subject"]) == one_line(f"Hi {first} {last} ({note})")
    assert to_display_name(data) == one_line(f"{first} {last}")
    text = msg.get_body(("plain",))
    assert text is not None
    assert lf(text.get_content()) == lf(f"{first}|{last}|{note}\n")
    assert b"49" not in data and b"012" not in data
    if fmt is MessageFormat.MULTIPART:
        html = msg.get_body(("html",))
        assert html is not None
        escaped = {v: v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                   .replace('"', "&#34;").replace("'", "&#39;") for v in (first, last, note)}
        assert lf(html.get_content()) == lf(
            f"<p>{escaped[first]}|{escaped[last]}|{escaped[note]}</p>\n")


def test_line_breaks_in_the_sender_name_cannot_add_headers() -> None:
    data = plan(from_name="News\r\nBcc: x@evil.example").render(
        Target(42, 0, recipient("note", "ok")), NOW).data
    msg = parse(data)
    assert msg.get_all("Bcc") is None
    (sender,) = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("News Bcc: x@evil.example",
                                                       "postroom@platform.example")


def test_line_breaks_in_reply_to_fail_analysis() -> None:
    """Reply-To is written as given (an address): analysis must refuse anything else."""
    found = static_checks(plan(reply_to="help@example.com\r\nBcc: x@evil.example"),
                          archive_available=False)
    assert len(found) == 1 and found[0].startswith("reply_to: "), found


def test_reply_to_with_a_display_name_passes_analysis_and_its_address_is_checked() -> None:
    assert static_checks(plan(reply_to='"Help, Desk" <help@bücher.example>'),
                         archive_available=False) == []
    found = static_checks(plan(reply_to="Help <help@example.com\r\nBcc: x@evil.example>"),
                          archive_available=False)
    assert len(found) == 1 and found[0].startswith("reply_to: "), found


@pytest.mark.parametrize("field", ["from_address", "reply_to", "errors_to"])
def test_a_sender_address_with_a_non_ascii_local_part_fails_analysis(field: str) -> None:
    found = static_checks(plan(**{field: "jörg@bücher.example"}), archive_available=False)
    assert len(found) == 1 and found[0].startswith(f"{field}: "), found
    assert "non-ASCII local part" in found[0]
    # An internationalized domain alone is fine: it goes out as its A-label.
    assert static_checks(plan(**{field: "news@bücher.example"}),
                         archive_available=False) == []


def test_payload_in_the_subject_of_a_proof_is_inert() -> None:
    data, _ = plan().render_proof(recipient("first_name", "\r\nBcc: x@evil.example"),
                                  "proof@example.net", 1, NOW)
    msg = parse(data)
    assert msg.get_all("Bcc") is None
    assert str(msg["Subject"]) == "Proof #1 Hi  Bcc: x@evil.example Lee (ok)"


# --- sandbox ---------------------------------------------------------------------------------

ESCAPES = [
    "{{ recipient.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ lipsum.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ recipient._values }}",
    "{{ recipient.__getattr__('email') }}",
    "{{ delivery.__init__.__globals__ }}",
    "{{ mirror_url.__class__.__base__.__subclasses__() }}",
    "{% set x = recipient.__class__ %}{{ x }}",
    "{{ recipient | attr('__class__') }}",
]


@pytest.mark.parametrize("field", ["subject", "html", "text"])
@pytest.mark.parametrize("source", ESCAPES)
def test_template_cannot_reach_python_internals(source: str, field: str) -> None:
    p = plan(**{field: source})  # compiles: the sandbox acts at render time
    with pytest.raises(TemplateError) as info:
        p.render(Target(42, 0, recipient("note", "ok")), NOW)
    assert info.value.field == field
    assert "unsafe" in str(info.value) or "forbidden" in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ cycler.__init__.__globals__.os.system('touch MARK') }}",
        "{{ lipsum.__globals__['os'].popen('touch MARK').read() }}",
        "{{ ''.__class__.__mro__[1].__subclasses__()[0].__init__.__globals__"
        "['__builtins__']['open']('MARK', 'w').write('x') }}",
        "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch MARK') }}",
        "{{ namespace.__init__.__globals__.os.system('touch MARK') }}",
    ],
)
def test_nothing_executes(template: str, tmp_path: Path) -> None:
    mark = tmp_path / "pwned"
    source = template.replace("MARK", str(mark))
    with pytest.raises(TemplateError):
        plan(text=source).render(Target(42, 0, recipient("note", "ok")), NOW)
    assert not mark.exists()


def test_template_escape_fails_analysis() -> None:
    store = FakeStore(plan(subject="{{ cycler.__init__.__globals__.os }}").delivery,
                      [recipient("note", "ok")])
    report = analyze(store, 3, planner=lambda d: make_plan(
        d, defaults=DEFAULTS, sending=SENDING, archive_available=False, links=LINKS),
        archive_available=False, now=NOW)
    assert not report.ok
    assert len(report.errors) == 1
    assert report.errors[0].startswith("subject: forbidden in the sandbox: ")
    assert "unsafe" in report.errors[0]
    assert report.errors[0].endswith("1 recipient, for example recipient #9 <ann@example.org>")
    assert store.logs == []
