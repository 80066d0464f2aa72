"""SMTP to a relay with aiosmtplib: one reused connection per `SmtpConnection`.

Every send returns an `Outcome` value: a reply (2xx, 4xx or 5xx, qualified) or a connection
fault. Nothing here raises for a refused recipient or a dropped connection.
"""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib

from postroom.domain.outcomes import (
    Fault,
    Outcome,
    SmtpReply,
    connection_fault,
    no_smtputf8,
    reply_outcome,
)
from postroom.settings import SmtpRelay, TlsMode

__all__ = ["SmtpConnection"]

class SmtpConnection:
    """One SMTP connection to a relay, opened on first use and renewed after N messages."""

    def __init__(self, relay: SmtpRelay, *, helo_name: str, messages_per_connection: int = 1000):
        self._relay = relay
        self._helo = helo_name
        self._limit = messages_per_connection
        self._client: aiosmtplib.SMTP | None = None
        self._sent_on_connection = 0

    async def _connect(self) -> aiosmtplib.SMTP:
        relay = self._relay
        client = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            local_hostname=self._helo,
            timeout=relay.timeout_seconds,
            use_tls=relay.tls is TlsMode.IMPLICIT,
            start_tls=(True if relay.tls is TlsMode.STARTTLS  # None: when offered
                       else None if relay.tls is TlsMode.OPPORTUNISTIC else False),
            validate_certs=relay.verify_tls,
            cert_bundle=str(relay.ca_file) if relay.ca_file else None,
        )
        try:
            await client.connect()
            if not client.esmtp_extensions:
                await client.ehlo()  # know the extensions (SMTPUTF8) before the first MAIL
            if relay.username:
                await client.login(relay.username, relay.password.get_secret_value())
        except BaseException:
            # A failed TLS handshake or login must not leak the socket. aiosmtplib's close()
            # skips a transport already closing, and after a refused certificate the raw one
            # can be left closing with unsent bytes for ever: abort it.
            transport = client.transport
            client.close()
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
            raise
        self._sent_on_connection = 0
        return client

    async def send(self, sender: str, recipient: str, data: bytes, *,
                   smtputf8: bool = False) -> Outcome:
        """One transaction: MAIL FROM sender, RCPT TO recipient, DATA data.

        `smtputf8`: the message has a non-ASCII address; it needs the SMTPUTF8 extension.
        """
        try:
            if self._client is None or not self._client.is_connected:
                try:
                    self._client = await self._connect()
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    await self.close()
                    return _opening_fault(exc)
            client = self._client
            options: list[str] = []
            if smtputf8:
                if not client.supports_extension("smtputf8"):
                    return no_smtputf8()
                options = ["SMTPUTF8", "BODY=8BITMIME"]
            try:
                try:
                    await client.mail(sender, options=options,
                                      encoding="utf-8" if smtputf8 else "ascii")
                except aiosmtplib.SMTPResponseException as exc:  # refuses us, not the recipient
                    await self._reset()
                    return connection_fault(f"the relay refused the sender: {exc.code} "
                                            f"{exc.message}")
                await client.rcpt(recipient, encoding="utf-8" if smtputf8 else "ascii")
                try:
                    response = await client.data(data)
                except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError,
                        OSError, TimeoutError) as exc:
                    # Somewhere between DATA and its final reply: the relay may hold the
                    # message. It is retried, and counted "in doubt".
                    await self.close()
                    return connection_fault(f"{type(exc).__name__} during DATA: {exc}".strip(),
                                            in_doubt=True)
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code == 421:
                    await self.close()
                else:
                    await self._reset()
                return reply_outcome(SmtpReply(exc.code, exc.message))
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            return connection_fault(f"{type(exc).__name__}: {exc}".strip())
        self._sent_on_connection += 1
        if self._sent_on_connection >= self._limit:
            await self.close()
        return reply_outcome(SmtpReply(response.code, response.message))

    async def _reset(self) -> None:
        if self._client is None:
            return
        try:
            await self._client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        sock = client.get_transport_info("socket") if client.transport is not None else None
        try:
            if client.is_connected:
                await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
        # aiosmtplib closes without waiting: after STARTTLS the TLS shutdown can outlast the
        # event loop, which then drops the socket unclosed (a ResourceWarning). Wait for it.
        for _ in range(int(self._relay.timeout_seconds / 0.01)):
            if sock is None or sock.fileno() == -1:
                break
            await asyncio.sleep(0.01)


def _opening_fault(exc: BaseException) -> Outcome:
    """Why a session could not be opened, by what aiosmtplib raised."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return connection_fault(f"authentication failed: {exc.code} {exc.message}",
                                fault=Fault.AUTH)
    if isinstance(exc, aiosmtplib.SMTPResponseException):  # greeting, EHLO or STARTTLS refused
        return connection_fault(f"relay refused the session: {exc.code} {exc.message}",
                                fault=Fault.SESSION)
    tls = (isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError)
           or (type(exc) is aiosmtplib.SMTPException and "STARTTLS" in str(exc)))
    return connection_fault(f"{type(exc).__name__}: {exc}".strip(),
                            fault=Fault.TLS if tls else Fault.CONNECT)
