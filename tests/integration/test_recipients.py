"""Recipient import into a real store: re-imports change only the columns the file has."""

from __future__ import annotations

from pathlib import Path

from postroom.recipients.importer import import_csv
from postroom.storage.sql import open_store
from postroom.wiring import utc_now


def _import(path: Path, text: str, url: str) -> None:
    path.write_text(text, encoding="utf-8")
    store = open_store(url)
    try:
        report = import_csv(path, store, now=utc_now())
        assert report.rejected == 0, report.errors
    finally:
        store.close()


def test_reimport_keeps_what_the_file_does_not_mention(database_url: str, tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    _import(csv, "email,first_name,opted_out,city,tier\nann@example.org,Ann,yes,Faro,gold\n",
            database_url)
    _import(csv, "email,city\nann@example.org,Lisboa\n", database_url)
    store = open_store(database_url)
    try:
        ann = store.recipient_by_email("ann@example.org")
        assert ann is not None
        assert ann.opted_out is True and ann.first_name == "Ann"
        assert ann.fields == {"city": "Lisboa", "tier": "gold"}
    finally:
        store.close()
    _import(csv, "email,opted_out\nann@example.org,no\n", database_url)
    store = open_store(database_url)
    try:
        ann = store.recipient_by_email("ann@example.org")
        assert ann is not None and ann.opted_out is False  # said explicitly
    finally:
        store.close()


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    import pytest

    from postroom.errors import InputError

    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(InputError, match=r"nope\.csv"):
            import_csv(tmp_path / "nope.csv", store, now=utc_now())
    finally:
        store.close()
