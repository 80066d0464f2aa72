"""The one place that builds concrete parts (store, SMTP connections) from the settings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from postroom.delivery.archive import Transport
from postroom.service import Postroom
from postroom.settings import Settings, SmtpRelay
from postroom.storage.sql import open_store
from postroom.transport.smtp import SmtpConnection

__all__ = ["build", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _connector(relay: SmtpRelay, helo: str, per_connection: int) -> Callable[[], Transport]:
    def connect() -> Transport:
        return SmtpConnection(relay, helo_name=helo, messages_per_connection=per_connection)

    return connect


def build(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Postroom:
    """A ready Postroom: database opened and migrated, SMTP connectors configured."""
    sending = settings.sending
    return Postroom(
        open_store(settings.database_url),
        settings,
        connect=_connector(settings.smtp, sending.helo_name, sending.messages_per_connection),
        connect_archive=_connector(settings.archive_relay, sending.helo_name,
                                   sending.messages_per_connection),
        clock=clock,
    )
