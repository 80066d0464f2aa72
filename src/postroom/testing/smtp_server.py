"""Loopback capture SMTP server with scriptable replies (tests and the demo relay).

Runs aiosmtpd 1.4.x's threaded ``Controller`` (own thread, own event loop).

Byte fidelity: with ``decode_data=False`` aiosmtpd's ``envelope.original_content`` keeps
each DATA line's CRLF, drops only the terminating ``.<CRLF>`` line and undoes dot-stuffing,
so the CRLF before ``<CRLF>.<CRLF>`` is part of ``Received.data``: a CRLF-normalised message
ending in CRLF arrives byte-identical (aiosmtplib appends a final CRLF when missing).
PIPELINING: aiosmtpd 1.4.x does not advertise it (EHLO: SIZE, 8BITMIME, SMTPUTF8, HELP),
though it reads pipelined commands correctly; we keep its EHLO reply unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeAlias

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

DEFAULT_REJECT_REPLY = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
_REPLY_RE = re.compile(r"[2-5]\d\d(?:[ -].*)?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without sending any reply.

    ``after_accepting`` (DATA only): keep the message first, as a relay that crashed between
    queueing it and replying would — the client cannot know it arrived ("in doubt").
    """

    after_accepting: bool = False


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds``, then reply ``then`` (``None``: fall through to the default)."""

    seconds: float
    then: str | Drop | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Hold:
    """Stall until the test sets ``gate``, then reply ``then`` (a connection slowed for as long
    as the test needs, not for a guessed number of seconds)."""

    gate: threading.Event
    then: str | Drop | None = None


Action: TypeAlias = str | Drop | Sleep | Hold
Matcher: TypeAlias = str | Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Received:
    """One accepted transaction, exactly as carried over SMTP."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: str
    received_at: float
    tls: bool = False  # the transaction went over a STARTTLS-protected session


@dataclass(frozen=True, slots=True)
class Command:
    """One command the server read (whatever it replied): the connection it came on, numbered
    from 1 in the order of their first commands, and its verb (MAIL, RCPT, DATA, RSET, ...)."""

    connection: int
    verb: str


def is_rejected(address: str, ratio: float) -> bool:
    """Whether ``reject_ratio=ratio`` rejects ``address`` (stable, case-insensitive)."""
    if ratio <= 0.0:
        return False
    digest = hashlib.sha256(address.lower().encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < ratio


def _check_action(action: Action | None) -> None:
    if isinstance(action, Sleep):
        if action.seconds < 0:
            raise ValueError("Sleep.seconds must be >= 0")
        _check_action(action.then)
    elif isinstance(action, Hold):
        _check_action(action.then)
    elif isinstance(action, str) and not _REPLY_RE.fullmatch(action):
        raise ValueError(f"not an SMTP reply (need a 2xx-5xx code): {action!r}")


@dataclass
class _Rule:
    command: str
    match: Matcher | None
    action: Action
    remaining: int | None

    def matches(self, addresses: Sequence[str]) -> bool:
        if self.match is None:
            return True
        if isinstance(self.match, str):
            wanted = self.match.lower()
            return any(a.lower() == wanted for a in addresses)
        return any(self.match(a) for a in addresses)


class Script:
    """Ordered reply rules; the first live matching rule wins, else the default applies.

    ``times=N`` makes a rule fire for its first N matches only. String matchers compare
    addresses case-insensitively; callables receive the address as sent. ``on_data``
    matches when any recipient of the transaction matches.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []

    def on_mail(
        self, action: Action, *, times: int | None = None, sender: Matcher | None = None
    ) -> Self:
        return self._add("MAIL", sender, action, times)

    def on_rcpt(self, match: Matcher, action: Action, *, times: int | None = None) -> Self:
        return self._add("RCPT", match, action, times)

    def on_data(self, match: Matcher, action: Action, *, times: int | None = None) -> Self:
        return self._add("DATA", match, action, times)

    def _add(self, command: str, match: Matcher | None, action: Action, times: int | None) -> Self:
        _check_action(action)
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._rules.append(_Rule(command, match, action, times))
        return self

    def resolve(self, command: str, addresses: Sequence[str]) -> Action | None:
        """Consume and return the action for ``command`` (``None``: use the default)."""
        with self._lock:
            for rule in self._rules:
                if rule.command == command and rule.remaining != 0 and rule.matches(addresses):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule.action
        return None


async def _perform(server: SMTP, action: Action | None) -> str | None:
    """Run a scripted action; returns the reply, or None for "use the default"."""
    if isinstance(action, Sleep):
        await asyncio.sleep(action.seconds)
        action = action.then
    elif isinstance(action, Hold):
        while not action.gate.is_set():
            await asyncio.sleep(0.02)
        action = action.then
    if isinstance(action, Drop):
        if server.transport is not None:
            server.transport.close()
        # connection_lost() cancels the session task, and with it this wait.
        await asyncio.get_running_loop().create_future()
        raise ConnectionAbortedError  # pragma: no cover
    return action


class _Handler:
    def __init__(self, owner: CaptureServer) -> None:
        self._owner = owner

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await _perform(server, self._owner.script.resolve("MAIL", [address])) or "250 OK"
        if reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return reply

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        owner = self._owner
        with owner._lock:
            owner._rcpt_attempts.append(address)
        reply = await _perform(server, owner.script.resolve("RCPT", [address]))
        if reply is None:
            rejected = is_rejected(address, owner.reject_ratio)
            reply = owner.reject_reply.format(rcpt=address) if rejected else "250 OK"
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        else:
            with owner._lock:
                owner._rejected[address] = reply
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        action = self._owner.script.resolve("DATA", envelope.rcpt_tos)
        accepted_silently = isinstance(action, Drop) and action.after_accepting
        reply = "250 OK" if accepted_silently else (await _perform(server, action) or "250 OK")
        if reply.startswith("2"):
            assert envelope.mail_from is not None and envelope.original_content is not None
            peer: Any = session.peer  # (host, port) at runtime, despite aiosmtpd's hint
            peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
            rcpts, data = tuple(envelope.rcpt_tos), envelope.original_content
            self._owner._record(Received(envelope.mail_from, rcpts, data, peer, time.time(),
                                         tls=session.ssl is not None))
        if accepted_silently:
            await _perform(server, action)
        return reply


class _CountedSMTP(SMTP):
    """An SMTP session that tells its server when its connection opens and closes."""

    def __init__(self, owner: CaptureServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner
        self._number = 0
        self._smtp_methods = {verb: self._recorded(verb, method)
                              for verb, method in self._smtp_methods.items()}

    def _recorded(self, verb: str, method: Callable[[str], Any]) -> Callable[[str], Any]:
        async def run(arg: str) -> None:
            if not self._number:
                self._number = self._owner._connection_numbered()
            self._owner._command(Command(self._number, verb))
            await method(arg)
        return run

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._connection_opened()
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._connection_closed()
        super().connection_lost(exc)


class _Controller(Controller):
    """Controller that tracks sessions (for clean shutdown) and resolves port 0."""

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def factory(self) -> SMTP:
        smtp = _CountedSMTP(self.handler._owner, self.handler, **self.SMTP_kwargs)
        self.sessions.add(smtp)
        return smtp

    def _trigger_server(self) -> None:
        # Upstream connects to (hostname, port), which is useless for port 0.
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = int(self.server.sockets[0].getsockname()[1])
        with socket.create_connection((self.hostname, self.port), 1.0) as sock:
            sock.recv(1024)

    async def close_sessions(self) -> None:
        assert self.server is not None
        self.server.close()
        for smtp in list(self.sessions):
            if smtp.transport is not None:
                smtp.transport.close()
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=2.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


class CaptureServer:
    """Real SMTP server on loopback that records accepted mail; see module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mail_dir: Path | None = None,
        reject_ratio: float = 0.0,
        reject_reply: str = DEFAULT_REJECT_REPLY,
        script: Script | None = None,
        data_size_limit: int = 32 * 1024 * 1024,
        ready_timeout: float = 5.0,
        tls_context: ssl.SSLContext | None = None,
        require_tls: bool = True,
        credentials: tuple[str, str] | None = None,
        smtputf8: bool = True,
    ) -> None:
        if not 0.0 <= reject_ratio <= 1.0:
            raise ValueError("reject_ratio must be within [0, 1]")
        _check_action(reject_reply.format(rcpt="x@example.invalid"))
        self.host, self.port, self.mail_dir = host, port, mail_dir
        self.reject_ratio, self.reject_reply = reject_ratio, reject_reply
        self.script = script if script is not None else Script()
        self.data_size_limit, self.ready_timeout = data_size_limit, ready_timeout
        self.tls_context, self.credentials = tls_context, credentials
        self.require_tls = require_tls
        self.smtputf8 = smtputf8
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._rcpt_attempts: list[str] = []
        self._rejected: dict[str, str] = {}
        self._seq = 0  # server-wide number of accepted messages (mail_dir file names)
        self._open_connections = 0
        self._most_connections = 0
        self._connections = 0
        self._commands: list[Command] = []
        self._controller: _Controller | None = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Start listening; after the first start ``port`` is fixed, so restarts reuse it."""
        if self._controller is not None:
            raise RuntimeError("CaptureServer already running")
        controller = _Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="localhost",  # keeps aiosmtpd away from socket.getfqdn()
            ready_timeout=self.ready_timeout,
            decode_data=False,
            enable_SMTPUTF8=self.smtputf8,
            data_size_limit=self.data_size_limit,
            **self._security(),
        )
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)
            if not controller.loop.is_closed():
                controller.loop.close()
            raise
        self.port = controller.port
        self._controller = controller

    def _security(self) -> dict[str, Any]:
        """STARTTLS (offered when a TLS context is given, required unless `require_tls` is
        off) and AUTH (when credentials are)."""
        options: dict[str, Any] = {}
        if self.tls_context is not None:
            options.update(tls_context=self.tls_context, require_starttls=self.require_tls)
        if self.credentials is not None:
            user, password = self.credentials

            def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                              auth_data: Any) -> AuthResult:
                ok = isinstance(auth_data, LoginPassword) and \
                    auth_data.login.decode() == user and auth_data.password.decode() == password
                return AuthResult(success=ok, handled=False)

            options.update(authenticator=authenticator, auth_required=True,
                           auth_require_tls=self.tls_context is not None)
        return options

    def stop(self) -> None:
        """Close client connections, stop the loop and join the thread (idempotent)."""
        controller, self._controller = self._controller, None
        if controller is None:
            return
        try:
            future = asyncio.run_coroutine_threadsafe(controller.close_sessions(), controller.loop)
            future.result(timeout=10.0)
        finally:
            controller.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    @property
    def rcpt_attempts(self) -> list[str]:
        """Every address tried at RCPT, in order (accepted or not)."""
        with self._lock:
            return list(self._rcpt_attempts)

    @property
    def rejected(self) -> dict[str, str]:
        """Address -> last non-2xx RCPT reply (reject_ratio or script)."""
        with self._lock:
            return dict(self._rejected)

    @property
    def most_connections(self) -> int:
        """The most client connections that were open at once (from connect to close)."""
        with self._lock:
            return self._most_connections

    @property
    def commands(self) -> list[Command]:
        """Every command read, in order, with the connection it came on."""
        with self._lock:
            return list(self._commands)

    def _command(self, command: Command) -> None:
        with self._lock:
            if len(self._commands) < 1_000_000:  # bounded: a long-running demo relay
                self._commands.append(command)

    def _connection_opened(self) -> None:
        with self._lock:
            self._open_connections += 1
            self._most_connections = max(self._most_connections, self._open_connections)

    def _connection_numbered(self) -> int:
        """A number for a connection that sent its first command (the controller's own probe
        at start sends none)."""
        with self._lock:
            self._connections += 1
            return self._connections

    def _connection_closed(self) -> None:
        with self._lock:
            self._open_connections -= 1

    def received_for(self, address: str) -> list[Received]:
        wanted = address.lower()
        return [m for m in self.messages if any(r.lower() == wanted for r in m.rcpt_tos)]

    def _record(self, message: Received) -> None:
        """Write ``mail_dir/<rcpt>/<seq:06d>.eml`` (seq: server-wide), then record."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        mail_dir = self.mail_dir
        for rcpt in message.rcpt_tos if mail_dir is not None else ():
            assert mail_dir is not None
            name = rcpt.replace("/", "_").replace("\\", "_").replace("\x00", "_")
            box = mail_dir / (name if name.strip(".") else "_")
            box.mkdir(parents=True, exist_ok=True)
            tmp = box / f".{seq:06d}.eml.tmp"  # write-then-rename: watchers never see halves
            tmp.write_bytes(message.data)
            os.replace(tmp, box / f"{seq:06d}.eml")
        with self._lock:
            self._messages.append(message)
