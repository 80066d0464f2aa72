"""A built-in SMTP receiver for the errors-to domain (`postroom bounces serve`), on aiosmtpd.

Each message is stored (with its envelope recipients, where the VERP token is) before the
receiver answers 250; if storing fails it answers 451, so the sending MTA keeps the message and
tries again. Processing happens afterwards, apart from receiving.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from postroom.inbound.sources import MAX_MESSAGE_BYTES

__all__ = ["BounceReceiver"]

Store = Callable[[bytes, str], None]  # (message, envelope recipients) → stored, or raises


class _Handler:
    def __init__(self, store: Store, domains: frozenset[str]):
        self._store = store
        self._domains = domains

    async def handle_RCPT(self, server: SMTPServer, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        domain = address.rpartition("@")[2].lower()
        if self._domains and domain not in self._domains:
            return "550 5.7.1 Relaying denied: this server only takes bounces"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session,
                          envelope: Envelope) -> str:
        data = envelope.original_content or b""
        try:
            self._store(data if isinstance(data, bytes) else data.encode(),
                        ",".join(envelope.rcpt_tos))
        except Exception:  # the sender keeps the message and retries: nothing is lost
            return "451 4.3.0 Could not store the message, try again later"
        return "250 OK: stored"


class BounceReceiver:
    """An SMTP server on (host, port) that stores every accepted message."""

    def __init__(self, store: Store, *, host: str, port: int, domains: frozenset[str]):
        self._controller = Controller(
            _Handler(store, domains), hostname=host, port=port, server_hostname="localhost",
            decode_data=False, enable_SMTPUTF8=True, data_size_limit=MAX_MESSAGE_BYTES)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def port(self) -> int:
        port: Any = self._controller.port
        return int(port)


