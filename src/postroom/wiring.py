"""The one place that builds concrete parts (store, SMTP connections) from the settings."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from dkim.crypto import UnparsableKeyError, parse_pem_private_key
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from postroom.app.container import Postroom
from postroom.app.context import AppContext
from postroom.app.templates import ensure_builtin
from postroom.archive.signing import Signer
from postroom.archive.sinks import DirectorySink, ImapSink, JournalTransport
from postroom.archive.stores import parse_imap_url
from postroom.bounces.quarantine import QuarantinePolicy
from postroom.bounces.rules import default_rules
from postroom.compose.dkim import DkimSigner
from postroom.delivery.archive import Transport
from postroom.delivery.plan import Links, Planner
from postroom.domain.addresses import allow_test_domains
from postroom.errors import ConfigError, InputError
from postroom.inbound.service import rule_from_row, rule_to_row
from postroom.settings import DkimKey, Settings, SmtpRelay, TlsMode, mask_url
from postroom.storage.ledger import LedgerConfig
from postroom.storage.retrying import retry_database
from postroom.storage.sql import SqlStore, open_store
from postroom.transport.pipelined import PipelinedConnection
from postroom.transport.routing import HostPort, Router

__all__ = ["build", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _connector(relay: SmtpRelay, helo: str, per_connection: int) -> Callable[[], Transport]:
    def connect() -> Transport:
        return PipelinedConnection(relay, helo_name=helo, messages_per_connection=per_connection)

    return connect


def _archive_connector(settings: Settings,
                       clock: Callable[[], datetime]) -> Callable[[], Transport]:
    """The archive sink of the settings, behind the archiver's Transport interface; in the
    journal format, each copy is wrapped in a journal report on its way."""
    sink = _archive_sink(settings, clock)
    if settings.archive.format == "journal":
        return lambda: JournalTransport(sink())
    return sink


def _archive_sink(settings: Settings,
                  clock: Callable[[], datetime]) -> Callable[[], Transport]:
    archive = settings.archive
    if archive.sink == "directory" and archive.directory is not None:
        root = archive.directory
        return lambda: DirectorySink(root, clock=clock)
    if archive.sink == "imap" and archive.imap_url:
        try:
            location = parse_imap_url(archive.imap_url)
        except InputError as exc:
            raise ConfigError(f"archive.imap_url: {exc}") from None
        password = archive.imap_password.get_secret_value()
        return lambda: ImapSink(location, password)
    return _connector(settings.archive_relay, settings.sending.helo_name,
                      settings.sending.messages_per_connection)


_ROUTE_TLS = {"opportunistic": TlsMode.OPPORTUNISTIC, "required": TlsMode.STARTTLS,
              "none": TlsMode.NONE}


def _host_connector(settings: Settings) -> Callable[[HostPort], Transport]:
    """Connections to a route's host: the relay with its TLS and AUTH settings; any other host
    (an MX, a static route) with its route's TLS policy (STARTTLS when offered, by default;
    certificates not verified, as MX hosts' names rarely match) and the relay's timeout."""
    relay, sending = settings.smtp, settings.sending

    def connect(host: HostPort) -> Transport:
        target = relay if (host.host, host.port) == (relay.host, relay.port) else SmtpRelay(
            host=host.host, port=host.port, timeout_seconds=relay.timeout_seconds,
            tls=_ROUTE_TLS[host.tls], verify_tls=False)
        return PipelinedConnection(target, helo_name=sending.helo_name,
                                   messages_per_connection=sending.messages_per_connection)

    return connect


def _signers(keys: list[DkimKey]) -> dict[str, DkimSigner]:
    signers: dict[str, DkimSigner] = {}
    for index, key in enumerate(keys):
        try:
            pem = key.private_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"dkim[{index}].private_key_file: cannot read "
                              f"{key.private_key_file}: {exc.strerror}") from None
        if b"PRIVATE KEY" not in pem:
            raise ConfigError(f"dkim[{index}].private_key_file: {key.private_key_file} is not "
                              "a PEM private key")
        try:
            parse_pem_private_key(pem)
        except (UnparsableKeyError, ValueError) as exc:  # ValueError: binascii's, ...
            raise ConfigError(f"dkim[{index}].private_key_file: {key.private_key_file} is not "
                              f"an RSA private key that can be read ({exc})") from None
        signers[key.domain.lower()] = DkimSigner(key.domain.lower(), key.selector, pem)
    return signers


def _open_store(url: str, wait_seconds: float = 0.0,
                stop: Callable[[], bool] | None = None) -> SqlStore:
    """The store at `url`; an unusable URL or an unreachable database is a ConfigError of
    one line (the URL printed without its password). `wait_seconds`: a database that does not
    answer yet is retried meanwhile (DatabaseUnavailable after that, or once `stop()`)."""
    where = f"database_url {mask_url(url)}"
    try:
        if wait_seconds:
            return retry_database(lambda: open_store(url), what="opening the database",
                                  wait_seconds=wait_seconds, stop=stop)
        return open_store(url)
    except NoSuchModuleError:  # (an ArgumentError)
        raise ConfigError(f"{where}: unknown database or driver (sqlite, "
                          "postgresql+psycopg)") from None
    except ArgumentError:
        raise ConfigError(f"{where}: not a database URL (for example sqlite:///postroom.db or "
                          "postgresql+psycopg://user@host/db)") from None
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{where}: the driver {exc.name!r} is not installed (the "
                          "PostgreSQL driver comes with the `postgres` extra)") from None
    except DBAPIError as exc:
        reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        raise ConfigError(f"{where}: cannot open the database: {reason}") from None


def build(settings: Settings, *, clock: Callable[[], datetime] = utc_now,
          wait_for_database: float = 0.0,
          stop_waiting: Callable[[], bool] | None = None) -> Postroom:
    """A ready Postroom: database opened and migrated, SMTP connectors configured.

    `wait_for_database` seconds: a database that does not answer yet is retried meanwhile,
    unless `stop_waiting()` says to give up (a worker asked to stop while it waits).
    """
    sending = settings.sending
    allow_test_domains(settings.allow_test_domains)
    store = _open_store(settings.database_url, wait_for_database, stop_waiting)
    web = settings.web
    secret = web.secret_key.get_secret_value() or store.instance_secret(
        "link-signing", lambda: secrets.token_hex(32))
    numbers = settings.quarantine
    store.policy = QuarantinePolicy(
        threshold=numbers.threshold, error_spacing=timedelta(hours=numbers.error_spacing_hours),
        counter_reset=timedelta(days=numbers.counter_reset_days),
        mailbox_full_release=timedelta(days=numbers.mailbox_full_release_days))
    archive = settings.archive
    key = archive.ledger_key.get_secret_value()
    store.ledger = LedgerConfig(
        enabled=archive.ledger, signer=Signer(key) if key else None,
        checkpoint_every=archive.checkpoint_every,
        checkpoint_interval=timedelta(minutes=archive.checkpoint_minutes))
    store.ensure_rules([rule_to_row(rule, (i + 1) * 10, builtin=True)
                        for i, rule in enumerate(default_rules())])
    planner = Planner(
        defaults=settings.defaults, sending=sending,
        links=Links(web.base_url, secret.encode(), web.unsubscribe_mailto),
        archive_available=settings.archive.enabled,
        resource_validity_days=web.resource_validity_days,
        signers=_signers(settings.dkim),
        rules=lambda: [rule_from_row(row) for row in store.list_rules()],
        templates=settings.templates,
    )
    postroom = Postroom(AppContext(
        store=store,
        settings=settings,
        planner=planner,
        connect=_host_connector(settings),
        router=Router(settings.routing, relay=HostPort(settings.smtp.host, settings.smtp.port)),
        connect_archive=_archive_connector(settings, clock),
        clock=clock,
    ))
    ensure_builtin(store, clock())
    return postroom
