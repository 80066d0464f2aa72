"""Analysis and forced charsets (issue 3, point 2), and the mirror_mode rules.

Static content the charset cannot represent fails analysis (static_checks) naming the character,
the field, and its line and column; recipient data that cannot be represented fails that
recipient alone (Plan.render raises EncodingError; analyze() writes one failed log).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postroom.compose.mime import EncodingError
from postroom.delivery.analysis import analyze, static_checks
from postroom.delivery.plan import Plan, make_plan
from postroom.domain.models import Audience, Delivery, Recipient, Target
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.properties import MirrorMode, Properties
from postroom.domain.states import DeliveryState, LogStatus
from tests.unit.analysis_store import MemoryStore
from tests.unit.plan_settings import DEFAULTS, LINKS, SENDING

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
EURO = "the character '€' (U+20AC)"
LATIN1 = "cannot be encoded in iso-8859-1"


def delivery(**props: Any) -> Delivery:
    properties = Properties(**{
        "subject": "Hello {{ recipient.first_name }}",
        "html": "<p>Hello {{ recipient.first_name }}</p>",
        "text": "",
        "charset": "iso-8859-1",
        **props,
    })
    return Delivery(
        id=5, name="Latin", template_name="default", state=DeliveryState.EDITING,
        properties=properties, audience=Audience(), salt="s4lt", last_error="",
        created_at=T0,
    )


def plan(**props: Any) -> Plan:
    return make_plan(delivery(**props), defaults=DEFAULTS, sending=SENDING,
                     archive_available=True, links=LINKS)


def problems(**props: Any) -> list[str]:
    return static_checks(plan(**props), archive_available=True)


# --- static content --------------------------------------------------------------------------


def test_euro_in_subject_names_character_field_line_and_column() -> None:
    assert problems(subject="Only 5 € for {{ recipient.first_name }}") == [
        f"subject: {EURO} at line 1, column 8 {LATIN1}"]


def test_euro_in_html_names_html_and_its_position() -> None:
    html = "<p>Hello {{ recipient.first_name }}</p>\n<p>Only\n  5 €</p>"
    assert problems(html=html) == [f"html: {EURO} at line 3, column 5 {LATIN1}"]


def test_euro_after_a_block_tag_on_a_later_line() -> None:
    text = "a\n{% if recipient.first_name %}\n  €{% endif %}"
    assert problems(text=text) == [f"text: {EURO} at line 3, column 3 {LATIN1}"]


def test_euro_in_from_name() -> None:
    assert problems(from_name="Büro €") == [
        f"from_name: {EURO} at position 6 {LATIN1}"]


def test_euro_in_the_reply_to_name() -> None:
    assert problems(reply_to="Büro € <help@example.com>") == [
        f"reply_to: {EURO} at position 6 {LATIN1}"]


def test_euro_in_an_extra_header() -> None:
    assert problems(extra_headers="X-Note: 5 €") == [
        f"header X-Note: {EURO} at position 3 {LATIN1}"]


def test_every_field_is_reported_once() -> None:
    found = problems(subject="€ €", html="€ and €", text="x €", from_name="€")
    assert [p.split(":")[0] for p in found] == ["subject", "html", "text", "from_name"]
    assert all(EURO in p for p in found)


def test_representable_content_has_no_problem() -> None:
    assert problems(subject="Crème brûlée à Zürich", html="<p>Ærø · ½ · ÿ</p>",
                    from_name="Café Zürich") == []


def test_euro_is_fine_in_windows_1252_and_utf_8() -> None:
    for charset in ("windows-1252", "utf-8", "iso-8859-15"):
        assert problems(subject="Only 5 €", charset=charset) == []


def test_template_comments_are_not_content() -> None:
    assert problems(html="<p>{# 5 € #}ok</p>") == []


def test_raw_blocks_are_content() -> None:
    assert problems(html="<p>{% raw %}€{% endraw %}</p>") == [
        f"html: {EURO} at line 1, column 13 {LATIN1}"]


def test_japanese_charset_reports_accented_static_text() -> None:
    assert problems(subject="日本語 Crème", charset="iso-2022-jp") == [
        "subject: the character 'è' (U+00E8) at line 1, column 7 cannot be encoded in "
        "iso-2022-jp"]


@pytest.mark.parametrize(
    ("html", "line", "column"),
    [
        ("<p>Line one</p>\r\n<p>Only 5 €</p>", 2, 11),
        ("{{ recipient.first_name }} then\r\n\r\nx €", 3, 3),
    ],
)
def test_crlf_sources_report_the_right_position(html: str, line: int, column: int) -> None:
    assert problems(html=html) == [f"html: {EURO} at line {line}, column {column} {LATIN1}"]


def test_literal_in_an_expression_fails_analysis() -> None:
    assert any(EURO in p and p.startswith("html") for p in problems(html="<p>{{ '€' }}</p>"))


# --- recipient data --------------------------------------------------------------------------

LUKASZ = Recipient(id=21, email="lukasz@example.org", first_name="Łukasz", last_name="Nowak")
JOSE = Recipient(id=22, email="jose@example.org", first_name="José", last_name="García")


def test_lukasz_in_the_display_name_fails_naming_to() -> None:
    p = plan(subject="Hello", html="<p>Hello</p>")
    with pytest.raises(EncodingError) as info:
        p.render(Target(1, 0, LUKASZ), NOW)
    assert str(info.value) == (
        "to: the character 'Ł' (U+0141) at position 1 cannot be encoded in iso-8859-1")


def test_lukasz_in_the_subject_fails_naming_subject() -> None:
    nick = replace(LUKASZ, first_name="Lukasz", fields={"nick": "Łukasz"})
    p = plan(subject="hi {{ recipient.nick }}")
    with pytest.raises(EncodingError) as info:
        p.render(Target(1, 0, nick), NOW)
    assert str(info.value) == (
        "subject: the character 'Ł' (U+0141) at position 4 cannot be encoded in iso-8859-1")


def test_lukasz_in_a_proof_subject_fails_naming_subject() -> None:
    """Proofs have no display name: the personalized subject is the first field to fail."""
    with pytest.raises(EncodingError, match=r"^subject: the character 'Ł' \(U\+0141\)"):
        plan().render_proof(LUKASZ, "proof@example.net", 1, NOW)


def test_lukasz_in_the_html_body_fails_naming_html() -> None:
    nick = replace(LUKASZ, first_name="Lukasz", fields={"nick": "Łukasz"})
    p = plan(subject="Hi", html="<p>Hi</p>\n<p>{{ recipient.nick }}</p>", format="html")
    with pytest.raises(EncodingError) as info:
        p.render(Target(1, 0, nick), NOW)
    assert str(info.value) == (
        "html: the character 'Ł' (U+0141) at position 4 cannot be encoded in iso-8859-1")


def test_representable_recipient_renders() -> None:
    data = plan().render(Target(1, 0, JOSE), NOW).data
    assert b'charset="iso-8859-1"' in data
    assert b"=?iso-8859-1?" in data


FakeStore = MemoryStore  # the AnalysisStore protocol in memory (also for other tests)


def run_analysis(audience: list[Recipient], **props: Any) -> tuple[Any, MemoryStore]:
    store = MemoryStore(delivery(**props), audience)
    report = analyze(store, 5, planner=lambda d: make_plan(
        d, defaults=DEFAULTS, sending=SENDING, archive_available=True, links=LINKS),
        archive_available=True, now=NOW)
    return report, store


def test_analysis_fails_lukasz_alone_with_a_clear_reason() -> None:
    report, store = run_analysis([JOSE, LUKASZ])
    assert report.ok and report.errors == []
    assert (report.pending, report.failed) == (1, 1)
    jose, lukasz = store.logs
    assert (jose.email, jose.status) == ("jose@example.org", LogStatus.PENDING)
    assert (lukasz.email, lukasz.status) == ("lukasz@example.org", LogStatus.FAILED)
    assert lukasz.failure_type is FailureType.HARD
    assert lukasz.failure_reason is FailureReason.UNDEFINED
    assert lukasz.detail == ("message not built: to: the character 'Ł' (U+0141) at position 1 "
                             "cannot be encoded in iso-8859-1")
    assert store.states[-1] == (DeliveryState.READY, "")


def test_analysis_fails_on_static_euro_in_subject_before_any_log() -> None:
    report, store = run_analysis([JOSE], subject="Only 5 € today")
    assert not report.ok
    assert report.errors == [f"subject: {EURO} at line 1, column 8 {LATIN1}"]
    assert store.logs == []
    assert store.states[-1] == (DeliveryState.FAILED, report.errors[0])


# --- mirror_mode -----------------------------------------------------------------------------

LINKED = '<p>Hi</p><a href="{{ mirror_url }}">view</a>'


@pytest.mark.parametrize(
    ("mode", "html", "text", "expected"),
    [
        (MirrorMode.AUTO, LINKED, "", []),
        (MirrorMode.FORCE, LINKED, "", []),
        (MirrorMode.FORCE, "<p>Hi</p>", "", []),
        (MirrorMode.NEVER, "<p>Hi</p>", "", []),
        (MirrorMode.ID_ONLY, "<p>Hi</p>", "", []),
        (MirrorMode.NEVER, LINKED, "",
         ["mirror_mode: the content uses mirror_url but mirror_mode is never"]),
        (MirrorMode.NEVER, "", "see {{ mirror_url }}",
         ["mirror_mode: the content uses mirror_url but mirror_mode is never"]),
        (MirrorMode.ID_ONLY, LINKED, "",
         ["mirror_mode: id_only pages are reached only from the delivery log; remove "
          "mirror_url from the content or choose auto or force"]),
        (MirrorMode.FORCE, "", "text only",
         ["mirror_mode: a mirror page needs HTML content (also for text-only sends)"]),
        (MirrorMode.ID_ONLY, "", "text only",
         ["mirror_mode: a mirror page needs HTML content (also for text-only sends)"]),
        (MirrorMode.AUTO, "", "see {{ mirror_url }}",
         ["mirror_mode: a mirror page needs HTML content (also for text-only sends)"]),
        (MirrorMode.AUTO, "", "text only", []),
        (MirrorMode.NEVER, "", "text only", []),
    ],
)
def test_mirror_mode_rules(mode: MirrorMode, html: str, text: str,
                           expected: list[str]) -> None:
    found = problems(html=html, text=text, mirror_mode=mode, charset="utf-8")
    assert [p for p in found if p.startswith("mirror_mode")] == expected


@pytest.mark.parametrize(
    ("mode", "html", "mirrored"),
    [(MirrorMode.AUTO, LINKED, True), (MirrorMode.AUTO, "<p>Hi</p>", False),
     (MirrorMode.FORCE, "<p>Hi</p>", True), (MirrorMode.ID_ONLY, "<p>Hi</p>", True),
     (MirrorMode.NEVER, "<p>Hi</p>", False)],
)
def test_mirror_page_is_made_exactly_when_the_mode_says(mode: MirrorMode, html: str,
                                                         mirrored: bool) -> None:
    message = plan(html=html, mirror_mode=mode, charset="utf-8").render(
        Target(9, 0, JOSE), NOW)
    assert (message.mirror_html is not None) is mirrored
    if mirrored:
        assert message.mirror_html is not None
        assert b"<p>Hi</p>" in message.mirror_html


def test_mirror_page_bytes_are_in_the_delivery_charset() -> None:
    message = plan(html="<p>Crème {{ recipient.first_name }}</p>",
                   mirror_mode=MirrorMode.FORCE).render(Target(9, 0, JOSE), NOW)
    assert message.mirror_html == "<p>Crème José</p>\r\n".encode("iso-8859-1")
