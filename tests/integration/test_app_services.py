"""The service methods the API and console need beyond the CLI's, on both stores: recipients
listed and searched, one recipient's history, a template preview, denylisting, the archive
status as one value."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from postroom.app import Postroom
from postroom.errors import InputError, NotFoundError
from postroom.settings import Settings
from postroom.wiring import build
from tests.conftest import write_csv

NOW = datetime(2031, 3, 4, 5, 6, tzinfo=UTC)


@pytest.fixture
def postroom(database_url: str) -> Iterator[Postroom]:
    built = build(Settings(database_url=database_url), clock=lambda: NOW)
    yield built
    built.close()


def _import(postroom: Postroom, tmp_path: Path) -> None:
    rows = [{"email": "ada@example.com", "first_name": "Ada", "last_name": "King"},
            {"email": "bob@example.org", "first_name": "Bob", "last_name": "Ross"},
            {"email": "cy@example.com", "first_name": "Cy", "last_name": "Ada"}]
    postroom.recipients.import_recipients(write_csv(tmp_path / "r.csv", rows))


def test_recipients_are_listed_searched_and_paged(postroom: Postroom, tmp_path: Path) -> None:
    _import(postroom, tmp_path)
    page = postroom.recipients.list_recipients(search="ADA", limit=1)
    assert page.total == 2  # ada@... by address, Cy by last name
    assert [r.email for r in page.recipients] == ["ada@example.com"]
    second = postroom.recipients.list_recipients(search="ada", limit=1, offset=1)
    assert [r.email for r in second.recipients] == ["cy@example.com"]
    assert postroom.recipients.list_recipients(search="100%").total == 0  # % is no wildcard
    assert postroom.recipients.list_recipients().to_json()["total"] == 3
    with pytest.raises(InputError):
        postroom.recipients.list_recipients(limit=10**6)


def test_recipients_are_listed_through_a_delivery_s_audience_filters(
        postroom: Postroom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The filters mean what they mean for a delivery's audience (one matcher), combine with
    the search and with each other, page and count across the scan's batches; a malformed
    filter is an input error, and so is a listing that would read past the bound."""
    import postroom.storage.recipient_reads as reads

    rows = [{"email": f"r{i:02d}@example.com", "first_name": f"R{i}",
             "city": "Lyon" if i % 3 == 0 else "Paris"} for i in range(30)]
    postroom.recipients.import_recipients(write_csv(tmp_path / "c.csv", rows))
    monkeypatch.setattr(reads, "_SCAN_BATCH", 7)  # several batches for 30 recipients
    lyon = postroom.recipients.list_recipients(filters=["city=Lyon"], limit=4, offset=2)
    assert lyon.total == 10
    assert [r.email for r in lyon.recipients] == [f"r{i:02d}@example.com" for i in (6, 9, 12,
                                                                                     15)]
    both = postroom.recipients.list_recipients(search="r1", filters=["city!=Lyon",
                                                                      "first_name~r1"])
    # "r1" finds R1 by first name and r10-r19 by address; the filters drop Lyon (r12, r15, r18)
    assert [r.email for r in both.recipients] == [f"r{i:02d}@example.com" for i in (
        1, 10, 11, 13, 14, 16, 17, 19)]
    assert both.total == 8
    past = postroom.recipients.list_recipients(filters=["city~LY"], offset=40)
    assert (past.total, past.recipients) == (10, [])
    with pytest.raises(InputError, match="expected FIELD=VALUE"):
        postroom.recipients.list_recipients(filters=["city Lyon"])
    with pytest.raises(InputError, match="at most 10"):
        postroom.recipients.list_recipients(filters=["city=Lyon"] * 11)
    monkeypatch.setattr("postroom.app.recipients.MAX_FILTER_SCAN", 20)
    with pytest.raises(InputError, match="more than 20 recipients"):
        postroom.recipients.list_recipients(filters=["city=Lyon"])


def test_the_report_counts_acceptances_over_time(postroom: Postroom, tmp_path: Path) -> None:
    """Per bucket between the first and the last acceptance (here 1 s wide): the report
    service, its JSON, and the console's chart all read the same figures."""
    from datetime import timedelta

    from postroom.domain.models import LogUpdate
    from postroom.domain.states import DeliveryState, LogStatus

    _import(postroom, tmp_path)
    postroom.templates.create_template("t", {"subject": "Hi", "text": "x\n"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    assert postroom.deliveries.analyze(delivery.id).ok
    assert postroom.reports.report(delivery.id).timeline is None  # nothing sent yet
    store = postroom.store
    store.move_delivery(delivery.id, DeliveryState.SENDING, NOW)
    taken = store.claim_due(delivery.id, NOW, 10, timedelta(seconds=60), worker="w")
    store.mark_attempting([t.log_id for t in taken], worker="w", now=NOW)
    offsets = [0.0, 0.4, 2.5]  # seconds after the first acceptance
    store.record([LogUpdate(log_id=t.log_id, status=LogStatus.SENT, attempts=1,
                            next_attempt_at=None, smtp_reply="250 OK",
                            sent_at=NOW + timedelta(seconds=offset), archive_data=None,
                            sha256=None)
                  for t, offset in zip(taken, offsets, strict=True)], NOW)
    timeline = postroom.reports.report(delivery.id).timeline
    assert timeline is not None
    assert (timeline.start, timeline.bucket_seconds, timeline.counts) == (NOW, 1.0, [2, 0, 1])
    shown = postroom.reports.report(delivery.id).to_json()["throughput_over_time"]
    assert shown == {"start": NOW.isoformat(), "bucket_seconds": 1.0, "sent": [2, 0, 1]}


def test_a_recipient_s_history_names_each_delivery_and_the_address_status(
        postroom: Postroom, tmp_path: Path) -> None:
    _import(postroom, tmp_path)
    postroom.templates.create_template("t", {"subject": "Hi", "text": "x\n"})
    first, _ = postroom.deliveries.create_delivery("t", name="first")
    second, _ = postroom.deliveries.create_delivery("t", name="second")
    for delivery in (first, second):
        assert postroom.deliveries.analyze(delivery.id).ok
    postroom.quarantine.denylist(["bob@example.org"])
    history = postroom.recipients.recipient_history("bob@example.org")
    assert [(h.delivery_name, h.status) for h in history.deliveries] == [
        ("second", "pending"), ("first", "pending")]
    assert history.to_json()["address"]["status"] == "denylisted"
    with pytest.raises(NotFoundError):
        postroom.recipients.recipient_history("nobody@example.com")


def test_denylisting_counts_only_new_entries_and_release_undoes_it(postroom: Postroom) -> None:
    assert postroom.quarantine.denylist(["Eve@Example.COM"]) == 1
    assert postroom.quarantine.denylist(["Eve@example.com"]) == 0  # the domain's case only
    [row] = postroom.quarantine.list_addresses(statuses=["denylisted"])
    assert (row.address, row.last_text) == ("Eve@example.com", "denylisted by an operator")
    assert postroom.quarantine.release_addresses(["Eve@example.com"]) == 1
    released = postroom.quarantine.get_address("Eve@EXAMPLE.com")
    assert released is not None and released.status == "valid"


def test_a_template_preview_is_personalized_and_names_its_problems(
        postroom: Postroom, tmp_path: Path) -> None:
    _import(postroom, tmp_path)
    postroom.templates.create_template("t", {"subject": "Hi {{ recipient.first_name }}",
                                             "text": "Dear {{ recipient.last_name }}\n",
                                             "html": "<p>{{ recipient.first_name }}</p>"})
    preview = postroom.templates.preview("t", recipient="bob@example.org")
    assert (preview.subject, preview.text.strip(), preview.problems) == (
        "Hi Bob", "Dear Ross", [])
    assert "<p>Bob</p>" in preview.html
    postroom.templates.create_template("u", {"subject": "Hi {{ recipient.city }}",
                                             "text": "x\n"})
    broken = postroom.templates.preview("u")
    assert broken.subject == "" and "city" in broken.problems[0]
    with pytest.raises(NotFoundError):
        postroom.templates.preview("t", recipient="nobody@example.com")


def test_the_archive_status_is_one_value_the_cli_and_api_share(postroom: Postroom) -> None:
    status = postroom.archive.status()
    assert status.to_json() == {"enabled": False, "sink": "smtp", "target": "archive relay",
                                "ledger_entries": 0, "sinks": [], "deliveries": []}


def test_a_page_of_logs_is_bounded(postroom: Postroom) -> None:
    postroom.templates.create_template("t", {"subject": "Hi", "text": "x\n"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    assert postroom.deliveries.logs(delivery.id, limit=100_000) == []
    for limit, offset in ((0, 0), (100_001, 0), (10, -1)):
        with pytest.raises(InputError, match="--limit"):
            postroom.deliveries.logs(delivery.id, limit=limit, offset=offset)
