"""What the application services share: the store, the settings, the clock, the planner and
the SMTP connectors, and the parts built from them for every IO service (archiver, lease).

One `AppContext` per container; services read `clock` at each call, so a test that moves
`postroom.clock` moves every service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from postroom.delivery.archive import Archiver, ArchiveTarget, Transport
from postroom.delivery.plan import Planner
from postroom.settings import Settings
from postroom.storage.retrying import RetryingStore
from postroom.storage.sql import SqlStore
from postroom.transport.routing import HostPort, Router

__all__ = ["AppContext"]


@dataclass
class AppContext:
    store: SqlStore
    settings: Settings
    planner: Planner
    router: Router
    connect: Callable[[HostPort], Transport]
    connect_archive: Callable[[], Transport]
    clock: Callable[[], datetime]

    def now(self) -> datetime:
        return self.clock()

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.sending.lease_seconds)

    def senders_store(self) -> Any:
        """The store as senders use it: each call retried through database faults for up to
        sending.database_wait_seconds (storage/retrying.py); one per sending process."""
        return RetryingStore(self.store, wait_seconds=self.settings.sending.database_wait_seconds)

    def archiver(self, store: Any = None) -> Archiver | None:
        """The archive outbox's sender, or None when no BCC address is configured."""
        archive = self.settings.archive
        if archive.address is None:
            return None
        return Archiver(
            store or self.senders_store(), self.connect_archive,
            target=ArchiveTarget(archive.address, archive.envelope_sender),
            connections=archive.connections, max_backoff=archive.max_backoff_seconds,
            clock=self.now, lease=self.lease, batch_size=50)
