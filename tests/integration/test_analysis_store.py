"""The storage analysis uses (AudienceStore), on SQLite and PostgreSQL alike: the audience rows
are iter_audience's recipients in its order, the held addresses are those the join gave, the
bulk log writer stores what the Core insert stored, all or nothing; and analysis on a real
store gives the logs of a full render per target (tests/unit/test_analysis_equivalence.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert, select

from postroom.delivery.analysis import AnalysisReport, LogRow, _Abort, _fields, analyze
from postroom.delivery.plan import Links, Plan, make_plan
from postroom.domain.models import (
    Audience,
    Delivery,
    EmailFormat,
    NewLog,
    Recipient,
    RecipientRow,
)
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.properties import Properties
from postroom.domain.states import DeliveryState, LogStatus
from postroom.settings import DefaultsSettings, SendingSettings
from postroom.storage.schema import address_status, delivery_logs
from postroom.storage.sql import SqlStore, open_store
from tests.unit.test_analysis_equivalence import _reference_logs

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
DEFAULTS = DefaultsSettings(from_name="Postroom", from_address="postroom@platform.example",
                            errors_to="bounces@platform.example")
LINKS = Links("https://mail.example.com", b"k" * 32, "")

PEOPLE = [
    RecipientRow("zoe@example.org", "Zoë", "Müller", EmailFormat.HTML, False,
                 {"city": "Zürich", "note": "x"}),
    RecipientRow("Ann@example.org", "Ann", "Lee", EmailFormat.TEXT, False, {"city": "Osaka"}),
    RecipientRow("ann@example.org", "Anne", "Lee", EmailFormat.UNKNOWN, False,
                 {"city": "Porto"}),
    RecipientRow("bob@example.net", "Bob", "", EmailFormat.UNKNOWN, True, {"city": "Bergen"}),
    RecipientRow("lukasz@example.pl", "Łukasz", "Nowak", EmailFormat.UNKNOWN, False,
                 {"city": "Kraków"}),
    RecipientRow("held@example.com", "Held", "Back", EmailFormat.UNKNOWN, False,
                 {"city": "Lisboa"}),
    RecipientRow("deny@example.com", "Deny", "Me", EmailFormat.UNKNOWN, False, {"city": "X"}),
    RecipientRow("soft@example.com", "Soft", "Errors", EmailFormat.UNKNOWN, False,
                 {"city": "Nairobi", "n": 5}),
    RecipientRow("josé@bücher.de", "José", "García", EmailFormat.UNKNOWN, False,
                 {"city": "Montréal"}),
    RecipientRow("nocity@example.com", "No", "City", EmailFormat.UNKNOWN, False, {}),
    RecipientRow("ANN@example.org", "ANN", "LEE", EmailFormat.HTML, False, {"city": "Rome"}),
] + [RecipientRow(f"member{i:03d}@example.com", "Ada", "Lovelace", EmailFormat.UNKNOWN,
                  False, {"city": "Lisboa"}) for i in range(25)]
STATUS = {"held@example.com": "quarantine", "deny@example.com": "denylisted",
          "soft@example.com": "with_errors"}


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    store = open_store(database_url)
    store.upsert_recipients(PEOPLE, T0)
    with store.engine.begin() as conn:
        conn.execute(insert(address_status), [
            {"address": address, "domain": address.rpartition("@")[2], "status": status,
             "error_count": 1, "last_text": "", "status_since": T0, "updated_at": T0}
            for address, status in STATUS.items()])
    yield store
    store.close()


def _delivery(store: SqlStore, audience: Audience = Audience(), **props: Any) -> Delivery:
    properties = Properties(**{
        "subject": "Hello {{ recipient.first_name }} from {{ recipient.city }}",
        "html": "<p>Hi {{ recipient.first_name }} {{ recipient.last_name }}</p>",
        "text": "", "charset": "iso-8859-1", **props})
    return store.create_delivery(name="d", template_name="default", props=properties,
                                 audience=audience, salt="s4lt", now=T0)


def _plan(delivery: Delivery) -> Plan:
    return make_plan(delivery, defaults=DEFAULTS, sending=SendingSettings(),
                     archive_available=True, links=LINKS)


def _recipient(row: Any, held: dict[str, str]) -> Recipient:
    return Recipient(row[0], row[1], row[2], row[3], EmailFormat(row[4]), bool(row[5]),
                     _fields(row[6]), held.get(row[1], "valid"))


@pytest.mark.parametrize("batch_size", [1, 2, 7, 1000])
def test_audience_rows_are_iter_audience_in_its_order(store: SqlStore, batch_size: int) -> None:
    delivery = _delivery(store)
    held = store.held_addresses()
    rows = [row for batch in store.audience_rows(delivery, batch_size=batch_size)
            for row in batch]
    expected = list(store.iter_audience(delivery))
    assert [_recipient(row, held) for row in rows] == [
        r if r.address_status in ("quarantine", "denylisted") else
        Recipient(r.id, r.email, r.first_name, r.last_name, r.email_format, r.opted_out,
                  r.fields) for r in expected]
    assert all(isinstance(row[6], str) and json.loads(row[6]) == _recipient(row, {}).fields
               for row in rows)


def test_a_list_audience_keeps_its_positions_and_repeats(store: SqlStore) -> None:
    delivery = _delivery(store, Audience("list", (), "list.csv"))
    ids = store.recipient_ids([p.email for p in PEOPLE])
    chosen = [ids["member003@example.com"], ids["Ann@example.org"], ids["zoe@example.org"],
              ids["ann@example.org"], ids["member003@example.com"]]
    store.set_audience_list(delivery.id, chosen)
    rows = [row for batch in store.audience_rows(delivery, batch_size=2) for row in batch]
    assert [row[0] for row in rows] == [r.id for r in store.iter_audience(delivery)]
    assert len(rows) == 5


def test_held_addresses_are_the_quarantined_and_denylisted_ones(store: SqlStore) -> None:
    assert store.held_addresses() == {"held@example.com": "quarantine",
                                      "deny@example.com": "denylisted"}


def _core_logs(store: SqlStore, delivery_id: int, logs: list[NewLog]) -> None:
    """The log writing as it was: one Core insert of dicts."""
    with store.engine.begin() as conn:
        conn.execute(delete(delivery_logs).where(delivery_logs.c.delivery_id == delivery_id))
        conn.execute(insert(delivery_logs), [
            {"delivery_id": delivery_id, "recipient_id": log.recipient_id,
             "email": log.email, "domain": log.email.rpartition("@")[2].lower(),
             "status": log.status,
             "failure_type": log.failure_type or (
                 FailureType.IGNORED if log.status is LogStatus.IGNORED else None),
             "failure_reason": log.failure_reason, "detail": log.detail, "attempts": 0,
             "next_attempt_at": now if log.status is LogStatus.PENDING else None,
             "smtp_reply": "", "updated_at": now}
            for log in logs for now in [NOW]])


def _stored(store: SqlStore, delivery_id: int) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(delivery_logs).where(
            delivery_logs.c.delivery_id == delivery_id).order_by(delivery_logs.c.id)).all()
    return [{k: v for k, v in row._mapping.items() if k not in ("id", "delivery_id")}
            for row in rows]


def _raw(store: SqlStore, delivery_id: int) -> list[tuple[Any, ...]]:
    """The rows as the database keeps them (no type processing)."""
    with store.engine.connect() as conn:
        names = [c.name for c in delivery_logs.c if c.name not in ("id", "delivery_id")]
        return [tuple(row) for row in conn.exec_driver_sql(
            f"SELECT {', '.join(names)} FROM delivery_logs WHERE delivery_id = {delivery_id} "
            "ORDER BY id").all()]


def test_bulk_logs_are_stored_as_the_core_insert_stored_them(store: SqlStore) -> None:
    ids = store.recipient_ids([p.email for p in PEOPLE])
    logs = [
        NewLog(ids["zoe@example.org"], "zoe@example.org", LogStatus.PENDING),
        NewLog(ids["Ann@example.org"], "Ann@example.org", LogStatus.IGNORED,
               FailureReason.DOUBLE, "duplicate address in this delivery"),
        NewLog(ids["lukasz@example.pl"], "lukasz@example.pl", LogStatus.FAILED,
               FailureReason.UNDEFINED, "message not built: to: 'Ł'", FailureType.HARD),
        NewLog(None, "JOSÉ@BÜCHER.DE", LogStatus.PENDING),
        NewLog(ids["bob@example.net"], "bob@example.net", LogStatus.PENDING, None, "it's"),
        NewLog(ids["held@example.com"], "held@example.com", LogStatus.IGNORED,
               FailureReason.QUARANTINE, "the address is in quarantine"),
    ] + [NewLog(ids[f"member{i:03d}@example.com"], f"member{i:03d}@example.com",
                LogStatus.PENDING) for i in range(25)]
    old, new = _delivery(store), _delivery(store)
    _core_logs(store, old.id, logs)
    store.replace_logs(new.id, [_row(log) for log in logs], NOW)
    assert _stored(store, new.id) == _stored(store, old.id)  # in order: ids follow the logs
    assert _raw(store, new.id) == _raw(store, old.id)


def _row(log: NewLog) -> LogRow:
    return (log.recipient_id, log.email, log.status, log.failure_reason, log.detail,
            log.failure_type)


def test_bulk_logs_are_all_or_nothing(store: SqlStore) -> None:
    delivery = _delivery(store)
    first = [(None, f"x{i}@example.com", LogStatus.PENDING, None, "", None) for i in range(5)]
    store.replace_logs(delivery.id, first, NOW)
    before = _stored(store, delivery.id)

    def failing() -> Iterator[LogRow]:
        for i in range(50_000):  # past the first batch
            yield (None, f"y{i}@example.com", LogStatus.PENDING, None, "", None)
        raise RuntimeError("a template error for some recipient")

    with pytest.raises(RuntimeError):
        store.replace_logs(delivery.id, failing(), NOW)
    assert _stored(store, delivery.id) == before


@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1", "us-ascii"])
@pytest.mark.parametrize("filters", [(), ("city~o",)])
def test_analysis_on_a_real_store_gives_the_full_render_logs(
        store: SqlStore, charset: str, filters: tuple[str, ...]) -> None:
    delivery = _delivery(store, Audience("filter" if filters else "all", filters),
                         charset=charset, subject="Hello {{ recipient.first_name }}")
    reference = AnalysisReport(delivery.id)
    expected = list(_reference_logs(store, _plan(delivery), reference, NOW))  # type: ignore[arg-type]
    report = analyze(store, delivery.id, planner=_plan, archive_available=True, now=NOW)
    assert report.to_json() == {**reference.to_json(), "ok": True}
    core = _delivery(store)
    _core_logs(store, core.id, expected)
    assert _raw(store, delivery.id) == _raw(store, core.id)
    assert store.get_delivery(delivery.id).state is DeliveryState.READY
    assert report.excluded[FailureReason.DOUBLE] == 2


def test_analysis_on_a_real_store_fails_as_the_full_render_fails(store: SqlStore) -> None:
    """A recipient without `city` fails the analysis: nothing is written, the error said."""
    delivery = _delivery(store)
    reference = AnalysisReport(delivery.id)
    with pytest.raises(_Abort):
        list(_reference_logs(store, _plan(delivery), reference, NOW))  # type: ignore[arg-type]
    report = analyze(store, delivery.id, planner=_plan, archive_available=True, now=NOW)
    nocity = store.recipient_ids(["nocity@example.com"])["nocity@example.com"]
    assert not report.ok and report.errors == reference.errors == [
        "subject: undefined variable 'recipient.city' — 1 recipient, for example "
        f"recipient #{nocity} <nocity@example.com>"]
    assert _raw(store, delivery.id) == []
    assert store.get_delivery(delivery.id).state is DeliveryState.FAILED
