"""Analysis without full rendering (issue 6) against the analysis that rendered every message.

`reference_analyze` below is analysis as it was: every target's address validated with
email-validator and its message built in full. The fast analysis (delivery.screening, one full
render per shape) must give the same report, the same logs in the same order and the same
delivery state, or fail with the same error, for any audience and content: random recipients
with missing fields, values that Latin-1 or ASCII cannot represent, control characters and
surrogates, non-string fields, opted-out and held addresses, duplicates that differ in case,
invalid and internationalized addresses; contents that are simple or not (filters,
conditions, subscripts, undefined names, entities and `<style` that values could complete),
in every charset and format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from postroom.compose import personalize
from postroom.compose.mime import EncodingError
from postroom.delivery import screening
from postroom.delivery.analysis import (
    MAX_ERRORS,
    MAX_FAILED_RENDERS,
    AnalysisReport,
    _Abort,
    _fields,
    analyze,
    static_checks,
)
from postroom.delivery.audience import COLUMNS, matcher, parse_filter
from postroom.delivery.plan import Plan, make_plan
from postroom.delivery.screening import plain_address, screen
from postroom.domain.addresses import normalize_address
from postroom.domain.models import Audience, Delivery, EmailFormat, NewLog, Recipient, Target
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.properties import MessageFormat, MirrorMode, Properties
from postroom.domain.states import DeliveryState, LogStatus
from postroom.errors import InputError, PostroomError
from tests.unit.analysis_store import MemoryStore
from tests.unit.plan_settings import DEFAULTS, LINKS, SENDING

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


def planner(delivery: Delivery) -> Plan:
    return make_plan(delivery, defaults=DEFAULTS, sending=SENDING, archive_available=True,
                     links=LINKS)


# --- the reference: analysis as it was, a full render per target ---------------------------


def _reference_logs(store: MemoryStore, plan: Plan, report: AnalysisReport,
                    now: datetime) -> Iterator[NewLog]:
    delivery = plan.delivery
    wanted = matcher(delivery.audience.filters)
    previous_key: str | None = None
    custom = {parse_filter(f).field for f in delivery.audience.filters} - set(COLUMNS)
    known = set().union(*(r.fields for r in store.iter_audience(delivery))) if custom else set()
    for recipient in store.iter_audience(delivery):
        if not wanted(recipient):
            continue
        report.targets += 1
        key = recipient.email.lower()
        reason: FailureReason | None = None
        detail = ""
        if key == previous_key:
            reason, detail = FailureReason.DOUBLE, "duplicate address in this delivery"
        else:
            try:
                normalize_address(recipient.email)
            except InputError as exc:
                reason, detail = FailureReason.INVALID, str(exc)
        previous_key = key
        if reason is None and recipient.address_status == "denylisted":
            reason, detail = FailureReason.DENYLISTED, "the address is on the denylist"
        if reason is None and recipient.address_status == "quarantine":
            reason, detail = FailureReason.QUARANTINE, "the address is in quarantine"
        if reason is None and recipient.opted_out:
            reason, detail = FailureReason.OPTED_OUT, "the recipient opted out"
        if reason is not None:
            report.excluded[reason] += 1
            yield NewLog(recipient.id, recipient.email, LogStatus.IGNORED, reason, detail)
            continue
        try:
            plan.render(Target(0, 0, recipient), now, sign=False)
        except EncodingError as exc:
            report.failed += 1
            yield NewLog(recipient.id, recipient.email, LogStatus.FAILED,
                         FailureReason.UNDEFINED, f"message not built: {exc}",
                         FailureType.HARD)
            continue
        except InputError as exc:  # one error per distinct problem, with its count
            problem = str(exc).replace(f" for {recipient.email}", "")
            if problem not in report.render_problems and \
                    len(report.render_problems) >= MAX_ERRORS:
                report.errors += [*report.render_errors(), f"more than {MAX_ERRORS} distinct "
                                  f"problems; analysis stopped at recipient #{recipient.id}"]
                raise _Abort from None
            report.render_problems[problem] += 1
            report.render_examples.setdefault(
                problem, f"recipient #{recipient.id} <{recipient.email}>")
            if report.render_problems.total() >= MAX_FAILED_RENDERS:
                report.errors += [*report.render_errors(), f"analysis stopped after "
                                  f"{MAX_FAILED_RENDERS} recipients whose message cannot be "
                                  f"built (at recipient #{recipient.id}): the counts above "
                                  "are those seen so far"]
                raise _Abort from None
            continue
        report.pending += 1
        yield NewLog(recipient.id, recipient.email, LogStatus.PENDING)
    for name in sorted(custom - known):  # a filter on a field no recipient has
        filters = ", ".join(repr(f) for f in delivery.audience.filters
                            if parse_filter(f).field == name)
        report.errors.append(f"filter {filters}: no recipient has a field {name!r}; the "
                             "fields are " + ", ".join([*COLUMNS, *sorted(known)[:30]]))
    report.errors += report.render_errors()
    if report.errors:
        raise _Abort


def reference_analyze(store: MemoryStore, delivery_id: int, *,
                      planner: Callable[[Delivery], Plan], archive_available: bool,
                      now: datetime) -> AnalysisReport:
    report = AnalysisReport(delivery_id)
    delivery = store.move_delivery(delivery_id, DeliveryState.ANALYZING, now)
    try:
        plan = planner(delivery)
        report.errors = static_checks(plan, archive_available=archive_available)
        if not report.errors:
            store.replace_logs(delivery_id, _reference_logs(store, plan, report, now), now)
    except _Abort:
        pass
    except PostroomError as exc:
        report.errors.append(str(exc))
    except BaseException:
        store.move_delivery(delivery_id, DeliveryState.FAILED, now,
                            error="analysis interrupted")
        raise
    if report.errors:
        report.pending = report.failed = 0
        store.move_delivery(delivery_id, DeliveryState.FAILED, now,
                            error="\n".join(report.errors))
        return report
    report.ok = True
    store.move_delivery(delivery_id, DeliveryState.READY, now, error="")
    return report


def outcome(run: Callable[[MemoryStore], AnalysisReport], delivery: Delivery,
            audience: list[Recipient]) -> tuple[Any, ...]:
    """Everything an analysis leaves: report, logs, states; or its error, logs and states."""
    store = MemoryStore(delivery, audience)
    try:
        report: Any = run(store).to_json()
    except Exception as exc:
        report = (type(exc).__name__, str(exc))
    return report, store.logs, store.states


def assert_same(delivery: Delivery, audience: list[Recipient]) -> None:
    expected = outcome(lambda s: reference_analyze(
        s, delivery.id, planner=planner, archive_available=True, now=NOW), delivery, audience)
    found = outcome(lambda s: analyze(
        s, delivery.id, planner=planner, archive_available=True, now=NOW), delivery, audience)
    assert found == expected


# --- random audiences and contents ----------------------------------------------------------

EMAILS = [
    "ann@example.org", "Ann@example.org", "ANN@example.org", "bob@example.net",
    "carol+news@mail.example.co.uk", "dave.o'neil@example.com", "postmaster@example.org",
    "josé@example.org", "jose@bücher.de", "kim@xn--bcher-kva.de", "lee@x--y.com",
    "mo@ab--cd.example", "broken", "a@localhost", "a..b@example.com", "c@example.test",
    "d@ex ample.com", "e@example.org\n", "f@-bad.com", "g@example.c0m", "h@example",
    "i@EXAMPLE.org", "{j}@example.org", "k@example.local", '"q"@example.org', "@example.org",
    "l@" + "a" * 64 + ".com", "m" * 250 + "@e.co", "ünï@example.org",
]
TEXTS = [
    "", "Ann", "José", "Zoë", "Łukasz", "太郎", "Иван", "a\nb", "tab\there", "nul\x00", "\x7f",
    "nbsp\u00a0x", "  ", " ", "=?utf-8?q?x?=", "€uro", "'quo\"te", "<b>&amp;</b>", "\ud800",
    "x" * 300, "İ", "ß", "\u2028", "\u0301a", "ÿµ", "ｶﾀｶﾅ", "¥~\\", "eacute", "euro", "yle",
    "le>", "#8364",
]
VALUES = st.one_of(st.sampled_from(TEXTS), st.sampled_from([5, None, ["l"], True, 1.5]),
                   st.text(max_size=8))
FIELDS = st.dictionaries(st.sampled_from(["city", "nick", "note", "first_name", "_x"]), VALUES,
                         max_size=4)
STATUSES = ["valid", "valid", "valid", "with_errors", "quarantine", "denylisted"]


@st.composite
def audiences(draw: st.DrawFn) -> list[Recipient]:
    emails = draw(st.lists(st.sampled_from(EMAILS), min_size=0, max_size=14))
    status = {email: draw(st.sampled_from(STATUSES)) for email in emails}
    people = [
        Recipient(id=n + 1, email=email, first_name=draw(st.sampled_from(TEXTS)),
                  last_name=draw(st.sampled_from(TEXTS)),
                  email_format=draw(st.sampled_from(list(EmailFormat))),
                  opted_out=draw(st.booleans()), fields=draw(FIELDS),
                  address_status=status[email])
        for n, email in enumerate(emails)]
    return sorted(people, key=lambda r: (r.email.lower(), r.id))  # as the stores give them


SIMPLE = {
    "subject": "{{ recipient.first_name }}, your {{ recipient.city }} update",
    "html": "<p>Hello {{ recipient.first_name }} {{ recipient.last_name }}</p>\n"
            "<p>{{ recipient['city'] }}, {{ recipient.email }}</p>",
    "text": "Hello {{ recipient.first_name }}\n{{ recipient.note }}\n",
}
CONTENTS: list[dict[str, str]] = [
    SIMPLE,
    {**SIMPLE, "subject": "Hello", "text": ""},  # text made from the HTML
    {"subject": "{{ delivery.name }} #{{ delivery.id }}",
     "html": '<h1>{{ recipient["nick"] }}</h1><ul><li>{{ delivery.name }}</li></ul>'
             '<a href="{{ mirror_url }}">web</a> &euro; &amp; &nbsp; <a href="{{ '
             'unsubscribe_url }}">stop</a>', "text": ""},
    {"subject": "Hi", "html": "<p>{{ recipient.first_name }}</p>",
     "text": "{{ recipient.note }}"},  # the text may come out blank
    {"subject": "Hi", "html": "<p>{{ recipient.nick }}</p>",
     "text": "  {{ recipient.note }}{{ recipient.email_format }}\n"},
    {"subject": "Hi {{ recipient.nick }}", "html": "", "text": "Hi {{ recipient.first_name }}"},
    {"subject": "Hi", "html": "<style>p {color: red}</style><p>{{ recipient.nick }}</p>",
     "text": ""},
    {"subject": "Hi", "html": "<sty{{ recipient.nick }}>p {color: red}</style><p>x</p>",
     "text": ""},  # a value could switch CSS inlining on
    {"subject": "Hi", "html": "<p>&{{ recipient.nick }};</p><p>&#{{ recipient.note }};</p>",
     "text": ""},  # a value could complete an entity
    {"subject": "{{ recipient.first_name|upper }}", "html": "<p>{{ recipient.nick }}</p>",
     "text": "x"},  # a filter
    {"subject": "Hi", "html": "{% if recipient.city == 'Zürich' %}<b>Grüezi</b>{% endif %}"
                              "<p>{{ recipient.nick }}</p>", "text": "x"},
    {"subject": "Hi", "html": "<p>{{ recipient.nick[0] }}</p>", "text": "x"},
    {"subject": "Hi {{ customer.name }}", "html": "<p>x</p>", "text": ""},  # undefined
    {"subject": "Hi", "html": "<p>{{ recipient._values }}</p>", "text": ""},  # sandbox
    {"subject": "Hi", "html": "<p>{{ 'Zürich' }} {{ recipient.nick }}</p>", "text": ""},
    {"subject": "Hi {{ recipient.email }}", "html": "<p>{{ recipient.first_name }}</p>",
     "text": "{{ recipient.last_name }}"},
]
CHARSETS = ["utf-8", "iso-8859-1", "us-ascii", "windows-1252", "iso-2022-jp", "shift_jis",
            "koi8-r"]


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    props = Properties(
        **draw(st.sampled_from(CONTENTS)),
        charset=draw(st.sampled_from(CHARSETS)),
        format=draw(st.sampled_from(list(MessageFormat))),
        inline_css=draw(st.booleans()),
        mirror_mode=draw(st.sampled_from([MirrorMode.AUTO, MirrorMode.FORCE])),
        list_unsubscribe=draw(st.booleans()),
    )
    filters = draw(st.sampled_from([(), (), ("first_name!=Ann",), ("city~r",)]))
    return Delivery(
        id=7, name=draw(st.sampled_from(["Monthly", "Büro", "€ news", "a\x00b", ""])),
        template_name="default", state=DeliveryState.EDITING, properties=props,
        audience=Audience("filter" if filters else "all", filters), salt="s4lt",
        last_error="", created_at=T0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivery=deliveries(), audience=audiences())
def test_fast_analysis_gives_what_full_rendering_gives(delivery: Delivery,
                                                      audience: list[Recipient]) -> None:
    assert_same(delivery, audience)


def bench_like(n: int, **overrides: Any) -> list[Recipient]:
    cities = ["Lisboa", "Zürich", "Kraków", "Osaka", "Montréal"]
    return [Recipient(id=i, email=f"member{i:04d}@example.org", first_name="Ada",
                      last_name="Lovelace", fields={"city": cities[i % 5], "nick": "n",
                                                    "note": "x"}, **overrides)
            for i in range(n)]


@pytest.mark.parametrize("charset", CHARSETS)
@pytest.mark.parametrize("content", range(len(CONTENTS)))
@pytest.mark.parametrize("fmt", list(MessageFormat))
def test_every_content_charset_and_format(charset: str, content: int,
                                          fmt: MessageFormat) -> None:
    """Plain audiences (the fast path) with a few odd recipients in between."""
    props = Properties(**CONTENTS[content], charset=charset, format=fmt)
    delivery = Delivery(id=7, name="Monthly", template_name="default",
                        state=DeliveryState.EDITING, properties=props, audience=Audience(),
                        salt="s4lt", last_error="", created_at=T0)
    audience = bench_like(12)
    audience[3] = replace(audience[3], first_name="Łukasz")
    audience[5] = replace(audience[5], fields={"city": "東京"})
    audience[7] = replace(audience[7], email_format=EmailFormat.TEXT)
    audience[8] = replace(audience[8], email_format=EmailFormat.HTML, fields={
        "city": "Zürich", "nick": "", "note": " "})
    audience[9] = replace(audience[9], email="Member0008@example.org")
    assert_same(delivery, audience)


def test_the_fast_path_renders_one_target_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[int] = []
    original = Plan.render

    def counting(self: Plan, target: Target, now: datetime, *, sign: bool = True) -> Any:
        rendered.append(target.recipient.id)
        return original(self, target, now, sign=sign)

    monkeypatch.setattr(Plan, "render", counting)
    delivery = Delivery(id=7, name="Monthly", template_name="default",
                        state=DeliveryState.EDITING, properties=Properties(**SIMPLE),
                        audience=Audience(), salt="s4lt", last_error="", created_at=T0)
    audience = bench_like(50)
    audience[20] = replace(audience[20], first_name="Zoë\n")  # not plain: rendered
    store = MemoryStore(delivery, audience)
    report = analyze(store, 7, planner=planner, archive_available=True, now=NOW)
    assert report.ok and report.pending == 50
    assert rendered == [0, 20]


def test_content_that_is_not_simple_renders_every_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = Plan.render

    def counting(self: Plan, target: Target, now: datetime, *, sign: bool = True) -> Any:
        calls.append(target.recipient.id)
        return original(self, target, now, sign=sign)

    monkeypatch.setattr(Plan, "render", counting)
    props = Properties(**{**SIMPLE, "subject": "{{ recipient.first_name|upper }}"})
    delivery = Delivery(id=7, name="Monthly", template_name="default",
                        state=DeliveryState.EDITING, properties=props, audience=Audience(),
                        salt="s4lt", last_error="", created_at=T0)
    analyze(MemoryStore(delivery, bench_like(5)), 7, planner=planner, archive_available=True,
            now=NOW)
    assert calls == [0, 1, 2, 3, 4]


# --- the pieces ------------------------------------------------------------------------------


def _accepted(address: str) -> bool:
    try:
        validate_email(address.strip(), check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return False
    return True


ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-."
LABEL_CHARS = "abz09-"


@settings(max_examples=3000, deadline=None)
@given(local=st.text(alphabet=ATEXT + "@\" é", min_size=0, max_size=70),
       labels=st.lists(st.text(alphabet=LABEL_CHARS + "A.ü", min_size=0, max_size=66),
                       min_size=1, max_size=4),
       top=st.sampled_from(["org", "com", "c0m", "c", "local", "test", "arpa", "onion",
                            "invalid", "localhost", "x1y", "xn--p1ai", "a-b", "co-"]))
@example(local="a", labels=["x" * 63], top="com")
@example(local="a", labels=["x" * 64], top="com")
@example(local="a" * 240, labels=["ex"], top="co")
@example(local="a" * 250, labels=["ex"], top="co")
@example(local="a", labels=["ab--cd"], top="com")
def test_a_plain_address_is_one_email_validator_accepts(local: str, labels: list[str],
                                                        top: str) -> None:
    address = f"{local}@{'.'.join([*labels, top])}"
    if plain_address(address):
        assert _accepted(address)
        assert normalize_address(address)  # and so analysis's own check passes
    assert plain_address(address, {}) is plain_address(address)


@pytest.mark.parametrize(("address", "plain"), [
    ("member0001234@example.org", True), ("Member0001234@example.org", True),
    ("dave.o'neil@example.com", True), ("a@b.co", True), ("x@sub.ex-ample.com", True),
    ("a@x--y.com", False), ("a@b.local", False), ("a@b.test", False), ("a@localhost", False),
    ("a.@b.co", False), ("a..b@c.co", False), ('"a"@b.co', False), ("a@B.co", False),
    ("josé@example.org", False), ("a@bücher.de", False), ("a@b.c1", False),
    ("a" * 64 + "@b.co", True), ("a" * 65 + "@b.co", False),
])
def test_plain_addresses(address: str, plain: bool) -> None:
    assert plain_address(address) is plain
    if plain:
        assert _accepted(address)


def test_a_domain_verdict_is_kept() -> None:
    domains: dict[str, bool] = {}
    assert plain_address("a@example.org", domains) and domains == {"example.org": True}
    assert not plain_address("a..b@example.org", domains)
    assert not plain_address("a@example.test", domains)
    assert domains == {"example.org": True, "example.test": False}


@pytest.mark.parametrize("raw", [
    '{"city": "Z\\u00fcrich", "n": 1}', "{}", "null", "[]", '""', "0", ' {"a": 1}',
    '{"a": 1} ', '{"a": 1}x', "{", "", "nope", '{"a": "\\ud800"}', '[["a", 1]]', '"ab"',
    {"a": "b"}, None, "[1]",
])
def test_fields_are_what_json_loads_gives(raw: Any) -> None:
    def expected() -> Any:
        return dict((json.loads(raw) if isinstance(raw, str) else raw) or {})

    def call(function: Callable[[], Any]) -> Any:
        try:
            return function()
        except Exception as exc:
            return type(exc), str(exc)

    assert call(lambda: _fields(raw)) == call(expected)


def test_the_screen_parses_templates_as_personalization_does() -> None:
    parser = screening._PARSER
    for env in (personalize._TEXT_ENV, personalize._HTML_ENV):
        for option in ("block_start_string", "block_end_string", "variable_start_string",
                       "variable_end_string", "comment_start_string", "comment_end_string",
                       "line_statement_prefix", "line_comment_prefix", "trim_blocks",
                       "lstrip_blocks", "newline_sequence", "keep_trailing_newline"):
            assert getattr(parser, option) == getattr(env, option), option
        assert set(parser.extensions) == set(env.extensions)


@pytest.mark.parametrize("charset", CHARSETS)
def test_printable_ascii_fits_every_charset(charset: str) -> None:
    """Plain addresses are printable ASCII: every supported charset encodes them."""
    from postroom.compose.charsets import charset_for

    printable = "".join(chr(c) for c in range(0x20, 0x7F))
    assert screening._fits(charset_for(charset))(printable)


@pytest.mark.parametrize(("html", "inline", "simple"), [
    ("<p>{{ recipient.x }}</p>", True, True),
    ("<style>p{}</style><p>{{ recipient.x }}</p>", True, True),
    ("<STYLE>{{ recipient.x }}</STYLE>", True, True),
    ("<{{ recipient.x }}", True, False),
    ("<sty{{ recipient.x }}le>", True, False),
    ("<styl{{ recipient.x }}", True, False),
    ("<sty{{ recipient.x }}le>", False, True),
    ("<s{{ recipient.x }}>", True, False),
    ("<b>{{ recipient.x }}</b>", True, True),
])
def test_css_inlining_a_value_could_switch_on_is_not_simple(html: str, inline: bool,
                                                            simple: bool) -> None:
    plan = planner(Delivery(
        id=7, name="n", template_name="default", state=DeliveryState.EDITING,
        properties=Properties(subject="s", html=html, inline_css=inline), audience=Audience(),
        salt="s", last_error="", created_at=T0))
    assert (screen(plan) is not None) is simple


@pytest.mark.parametrize(("html", "charset", "simple"), [
    ("<p>&amp; {{ recipient.x }}</p>", "iso-8859-1", True),
    ("<p>&{{ recipient.x }};</p>", "iso-8859-1", False),
    ("<p>&eu{{ recipient.x }}</p>", "iso-8859-1", False),
    ("<p>&#{{ recipient.x }}</p>", "us-ascii", False),
    ("<a href='?a=1&b={{ recipient.x }}'>", "iso-8859-1", True),
    ("<p>&{{ recipient.x }};</p>", "utf-8", True),
])
def test_entities_a_value_could_complete_are_not_simple(html: str, charset: str,
                                                       simple: bool) -> None:
    plan = planner(Delivery(
        id=7, name="n", template_name="default", state=DeliveryState.EDITING,
        properties=Properties(subject="s", html=html, charset=charset), audience=Audience(),
        salt="s", last_error="", created_at=T0))
    assert (screen(plan) is not None) is simple


def test_shapes() -> None:
    plan = planner(Delivery(
        id=7, name="n", template_name="default", state=DeliveryState.EDITING,
        properties=Properties(subject="s {{ recipient.city }}", html="<p>h</p>",
                              text="{{ recipient.note }}", format=MessageFormat.RECIPIENT,
                              charset="iso-8859-1"),
        audience=Audience(), salt="s", last_error="", created_at=T0))
    screened = screen(plan)
    assert screened is not None and screened.custom == ("city", "note")
    shape = screened.shape
    assert shape("a@b.co", "A", "B", EmailFormat.TEXT, {"city": "x", "note": "y"}) == (
        EmailFormat.TEXT, False)
    assert shape("a@b.co", "A", "B", EmailFormat.HTML, {"city": "x", "note": " "}) == (
        EmailFormat.HTML, True)
    assert shape("a@b.co", "A", "B", EmailFormat.HTML, {"city": "x"}) is None  # missing
    assert shape("a@b.co", "A", "B", EmailFormat.HTML, {"city": 5, "note": ""}) is None
    assert shape("a@b.co", "Ł", "B", EmailFormat.HTML, {"city": "x", "note": ""}) is None
    assert shape("a@b.co", "A", "B\n", EmailFormat.HTML, {"city": "x", "note": ""}) is None
    assert shape("a@b.co", "A", "B", EmailFormat.HTML, {"city": "\u00a0", "note": ""}) is None
