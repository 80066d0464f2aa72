"""The one place that builds concrete parts (store, SMTP connections) from the settings."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from postroom.bounces.quarantine import QuarantinePolicy
from postroom.bounces.rules import default_rules
from postroom.compose.dkim import DkimSigner
from postroom.delivery.archive import Transport
from postroom.delivery.plan import Links, Planner
from postroom.errors import ConfigError
from postroom.inbound.service import rule_from_row, rule_to_row
from postroom.service import Postroom
from postroom.settings import DkimKey, Settings, SmtpRelay
from postroom.storage.retrying import retry_database
from postroom.storage.sql import open_store
from postroom.transport.pipelined import PipelinedConnection
from postroom.transport.routing import HostPort, Router

__all__ = ["build", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _connector(relay: SmtpRelay, helo: str, per_connection: int) -> Callable[[], Transport]:
    def connect() -> Transport:
        return PipelinedConnection(relay, helo_name=helo, messages_per_connection=per_connection)

    return connect


def _host_connector(settings: Settings) -> Callable[[HostPort], Transport]:
    """Connections to a route's host: the relay with its TLS and AUTH settings; any other host
    (an MX, a static route) in plain SMTP with the relay's timeout."""
    relay, sending = settings.smtp, settings.sending

    def connect(host: HostPort) -> Transport:
        target = relay if (host.host, host.port) == (relay.host, relay.port) else SmtpRelay(
            host=host.host, port=host.port, timeout_seconds=relay.timeout_seconds)
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
        signers[key.domain.lower()] = DkimSigner(key.domain.lower(), key.selector, pem)
    return signers


def build(settings: Settings, *, clock: Callable[[], datetime] = utc_now,
          wait_for_database: float = 0.0) -> Postroom:
    """A ready Postroom: database opened and migrated, SMTP connectors configured.

    `wait_for_database` seconds: a database that does not answer yet is retried meanwhile.
    """
    sending = settings.sending
    store = retry_database(lambda: open_store(settings.database_url), what="opening the database",
                           wait_seconds=wait_for_database) if wait_for_database else \
        open_store(settings.database_url)
    web = settings.web
    secret = web.secret_key.get_secret_value() or store.instance_secret(
        "link-signing", lambda: secrets.token_hex(32))
    numbers = settings.quarantine
    store.policy = QuarantinePolicy(
        threshold=numbers.threshold, error_spacing=timedelta(hours=numbers.error_spacing_hours),
        counter_reset=timedelta(days=numbers.counter_reset_days),
        mailbox_full_release=timedelta(days=numbers.mailbox_full_release_days))
    store.ensure_rules([rule_to_row(rule, (i + 1) * 10, builtin=True)
                        for i, rule in enumerate(default_rules())])
    planner = Planner(
        defaults=settings.defaults, sending=sending,
        links=Links(web.base_url, secret.encode(), web.unsubscribe_mailto),
        archive_available=settings.archive.enabled,
        resource_validity_days=web.resource_validity_days,
        signers=_signers(settings.dkim),
        rules=lambda: [rule_from_row(row) for row in store.list_rules()],
    )
    return Postroom(
        store,
        settings,
        planner=planner,
        connect=_host_connector(settings),
        router=Router(settings.routing, relay=HostPort(settings.smtp.host, settings.smtp.port)),
        connect_archive=_connector(settings.archive_relay, sending.helo_name,
                                   sending.messages_per_connection),
        clock=clock,
    )
