"""Console sessions: a server-side store, the cookie that names a session, CSRF and Origin.

The cookie holds only a random session id (HttpOnly, SameSite=Strict, Secure when the console is
served over https); the actor, the CSRF token and the expiry stay in the server's memory, so a
log-out or a restart ends the session for good. A state-changing request must carry the
session's CSRF token (a form field or the ``X-CSRF-Token`` header htmx sends) and an ``Origin``
(or, lacking it, a ``Referer``) naming the console's own origin.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from postroom.accounts.actor import Actor

__all__ = ["COOKIE", "Session", "SessionStore", "same_origin"]

COOKIE = "postroom_session"
MAX_SESSIONS = 10_000  # bounded: the oldest sessions go first when full


@dataclass
class Session:
    id: str
    actor: Actor
    csrf: str
    expires_at: datetime


class SessionStore:
    """Sessions in memory, each valid for `idle` after its last use (sliding expiry)."""

    def __init__(self, *, clock: Callable[[], datetime],
                 idle: timedelta = timedelta(hours=8)) -> None:
        self._clock = clock
        self._idle = idle
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, actor: Actor) -> Session:
        session = Session(secrets.token_urlsafe(32), actor, secrets.token_urlsafe(32),
                          self._clock() + self._idle)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.expires_at)
                del self._sessions[oldest.id]
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 100:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if session.expires_at <= now:
                del self._sessions[session_id]
                return None
            session.expires_at = now + self._idle
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)


def csrf_ok(session: Session, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(session.csrf.encode(),
                                                 (offered or "").encode())


def same_origin(origin: str | None, referer: str | None, *, scheme: str, host: str) -> bool:
    """Whether a request comes from a page of this server: its Origin (or Referer, when the
    browser sent no Origin) names the scheme and host the request was made to."""
    source = origin if origin and origin != "null" else referer
    if not source:
        return False
    parts = urlsplit(source)
    return parts.scheme == scheme and parts.netloc.lower() == host.lower()
