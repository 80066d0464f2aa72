"""Shared fixtures: real capture SMTP servers on loopback and Postroom instances on real stores."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from postroom.app import Postroom
from postroom.settings import ArchiveSettings, SendingSettings, Settings, SmtpRelay
from postroom.testing.smtp_server import CaptureServer
from postroom.wiring import build, utc_now

PG_ADMIN_URL = os.environ.get(
    "POSTROOM_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ARCHIVE = "archive@compliance.example"


@pytest.fixture
def capture() -> Iterator[Callable[..., CaptureServer]]:
    """Start capture servers on demand; every one is stopped at the end of the test."""
    servers: list[CaptureServer] = []

    def start(**kwargs: Any) -> CaptureServer:
        server = CaptureServer(**kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _postgres_url() -> Generator[str, None, None]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        message = f"no PostgreSQL server answers at {PG_ADMIN_URL}: {exc.orig}"
        if os.environ.get("POSTROOM_TEST_REQUIRE_PG") == "1":  # CI: both stores, or fail
            pytest.fail(message)
        pytest.skip(message)
    name = f"postroom_test_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on each store: a SQLite file, and a scratch PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'postroom.db'}"
    else:
        yield from _postgres_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'postroom.db'}"


@pytest.fixture
def make_postroom() -> Iterator[Callable[..., Postroom]]:
    """Build Postroom instances against given relays; their stores are closed afterwards."""
    built: list[Postroom] = []

    def make(database_url: str, relay: CaptureServer, *, archive: CaptureServer | None = None,
             bcc: bool = True, sending: dict[str, Any] | None = None,
             archive_options: dict[str, Any] | None = None,
             clock: Callable[[], datetime] = utc_now, **more: Any) -> Postroom:
        archive_relay = None if archive is None else SmtpRelay(host="127.0.0.1",
                                                                port=archive.port,
                                                                timeout_seconds=5)
        settings = Settings(
            database_url=database_url,
            smtp=SmtpRelay(host="127.0.0.1", port=relay.port, timeout_seconds=5),
            sending=SendingSettings(**{"connections": 4, "quick_retry_seconds": 0.05,
                                       "wait_for_retries_seconds": 5, **(sending or {})}),
            archive=ArchiveSettings(**{"enabled": bcc, "bcc_address": [ARCHIVE] if bcc else [],
                                       "relay": archive_relay, "drain_seconds": 5,
                                       "max_backoff_seconds": 0.2,
                                       **(archive_options or {})}),
            **more,
        )
        postroom = build(settings, clock=clock)
        built.append(postroom)
        return postroom

    yield make
    for postroom in built:
        postroom.store.close()


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Refuse a date-shifted run (CI's second run) whose clock shift did not take effect."""
    import sys

    if os.environ.get("TEST_CLOCK_SHIFT_DAYS") and not hasattr(
            sys.modules.get("sitecustomize"), "_travel"):
        raise pytest.UsageError("TEST_CLOCK_SHIFT_DAYS is set but tests/clock_shift is not on "
                                "PYTHONPATH: the clock is not shifted")
