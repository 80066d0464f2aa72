"""The console's session store and its request-forgery checks, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroom.accounts.actor import Actor
from postroom.accounts.permissions import permissions_of
from postroom.web.console.sessions import SessionStore, csrf_ok, same_origin

T0 = datetime(2030, 1, 1, tzinfo=UTC)
KIM = Actor("kim", "viewer", permissions_of("viewer"), "console", "127.0.0.1")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_session_lives_while_used_and_ends_after_idle_time() -> None:
    clock = Clock()
    store = SessionStore(clock=clock, idle=timedelta(minutes=30))
    session = store.create(KIM)
    clock.now += timedelta(minutes=29)
    assert store.get(session.id) is session          # use slides the expiry
    clock.now += timedelta(minutes=29)
    assert store.get(session.id) is session
    clock.now += timedelta(minutes=30)
    assert store.get(session.id) is None
    assert len(store) == 0


def test_log_out_ends_the_session_and_ids_are_unguessable() -> None:
    store = SessionStore(clock=Clock())
    one, two = store.create(KIM), store.create(KIM)
    assert one.id != two.id and one.csrf != two.csrf and len(one.id) >= 40
    store.end(one.id)
    assert store.get(one.id) is None and store.get(two.id) is two
    assert store.get("") is None and store.get(None) is None and store.get("x" * 500) is None


def test_csrf_token_must_match_the_sessions() -> None:
    session = SessionStore(clock=Clock()).create(KIM)
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None)
    assert not csrf_ok(session, "")
    assert not csrf_ok(session, session.csrf[:-1] + "x")


def test_origin_must_be_the_consoles_own() -> None:
    host = {"scheme": "http", "host": "127.0.0.1:8025"}
    assert same_origin("http://127.0.0.1:8025", None, **host)
    assert same_origin(None, "http://127.0.0.1:8025/console/deliveries", **host)
    assert not same_origin("http://evil.example", None, **host)
    assert not same_origin("https://127.0.0.1:8025", None, **host)       # scheme differs
    assert not same_origin("null", None, **host)                          # sandboxed frame
    assert not same_origin("null", "http://evil.example/x", **host)
    assert not same_origin(None, None, **host)
