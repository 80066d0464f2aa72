"""The schema that Alembic builds is the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from postroom.domain.models import Audience
from postroom.domain.properties import Properties
from postroom.storage import migrate
from postroom.storage.schema import metadata
from postroom.storage.sql import open_store


def test_migrations_build_exactly_the_declared_schema(database_url: str) -> None:
    store = open_store(database_url)
    try:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            differences = compare_metadata(context, metadata)
        assert differences == []
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        assert migrate.upgrade(store.engine) is False  # already at head: nothing to do
    finally:
        store.close()


def test_timestamps_come_back_as_the_same_utc_instant(database_url: str) -> None:
    store = open_store(database_url)
    try:
        moment = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=5)))
        delivery = store.create_delivery(name="d", template_name="t", props=Properties(),
                                          audience=Audience(), salt="s", now=moment)
        assert delivery.created_at == moment
        assert delivery.created_at.tzinfo == UTC
    finally:
        store.close()
