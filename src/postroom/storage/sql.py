"""The SQL store: every read and write Postroom makes, on SQLite or PostgreSQL.

Plain SQLAlchemy Core. Writes that belong together share one transaction: a log turning `sent`
and its archive copy entering the outbox commit together, or not at all.

`SqlStore` is assembled here from one part per concern, each a mixin over the one engine:
recipients, templates, deliveries, audience (analysis), sending (claims and records), outbox
(archive copies), links (mirror pages, unsubscribe, secrets), reports, inbound (bounces,
rules, quarantine), workers, ledger and the archive proofs. What the parts share is in
`storage/common.py`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

from postroom.storage import migrate
from postroom.storage.audience import AudienceStore
from postroom.storage.deliveries import DeliveryStore
from postroom.storage.inbound import InboundStore
from postroom.storage.ledger import ArchiveProofStore, LedgerStore
from postroom.storage.links import LinkStore
from postroom.storage.outbox import OutboxStore
from postroom.storage.recipients import RecipientStore
from postroom.storage.reports import ReportStore
from postroom.storage.sending import SendingStore
from postroom.storage.templates import TemplateStore
from postroom.storage.workers import WorkerStore
from postroom.storage.write_turn import TurnConnection

__all__ = ["SqlStore", "open_store"]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_store(url: str) -> SqlStore:
    """Open (and migrate to the newest schema) the database at `url`."""
    sqlite = make_url(url).get_backend_name() == "sqlite"
    # On SQLite, writers take turns through a lock file (storage/write_turn.py).
    engine = create_engine(url, connect_args={"factory": TurnConnection} if sqlite else {})
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate.upgrade(engine)
    return SqlStore(engine)


class SqlStore(RecipientStore, TemplateStore, LinkStore, DeliveryStore, SendingStore,
               OutboxStore, ReportStore, InboundStore, WorkerStore, AudienceStore, LedgerStore,
               ArchiveProofStore):
    """Postroom's storage on one SQLAlchemy engine."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._dialect = engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()
