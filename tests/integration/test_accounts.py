"""Accounts on SQLite and PostgreSQL: users and argon2 passwords, log-in throttling, API tokens
stored as hashes only, the audit listing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from postroom.accounts.actor import Actor
from postroom.accounts.audit import AuditLog
from postroom.accounts.permissions import Permission, permissions_of
from postroom.accounts.records import AuditFilter
from postroom.accounts.service import AccountsService, ThrottlePolicy
from postroom.errors import AuthenticationFailed, InputError, LoginThrottled, NotFoundError
from postroom.storage.accounts import AccountStore
from postroom.storage.schema import api_tokens, login_throttle, users
from postroom.storage.sql import open_store

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(database_url: str) -> Iterator[AccountStore]:
    sql = open_store(database_url)
    yield AccountStore(sql.engine)
    sql.close()


@pytest.fixture
def accounts(store: AccountStore, clock: Clock) -> AccountsService:
    return AccountsService(store, clock=clock, hasher=FAST,
                           throttle=ThrottlePolicy(failures=3, window=timedelta(minutes=10),
                                                   lockout=timedelta(minutes=5)))


def test_users_and_passwords(accounts: AccountsService, store: AccountStore) -> None:
    alice = accounts.create_user("alice", "operator", PASSWORD)
    assert (alice.name, alice.role, alice.disabled, alice.created_at) == (
        "alice", "operator", False, T0)
    with pytest.raises(InputError, match="exists already"):
        accounts.create_user("alice", "viewer", PASSWORD)
    with pytest.raises(InputError, match="not a role"):
        accounts.create_user("bob", "root", PASSWORD)
    with pytest.raises(InputError, match="10 to 1024"):
        accounts.create_user("bob", "viewer", "short")
    with pytest.raises(InputError, match="not a user name"):
        accounts.create_user("bob smith", "viewer", PASSWORD)
    stored = store.credentials("alice")
    assert stored is not None and stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash

    actor = accounts.authenticate_password("alice", PASSWORD, remote="192.0.2.1")
    assert (actor.name, actor.role, actor.origin, actor.remote) == (
        "alice", "operator", "console", "192.0.2.1")
    assert actor.permissions == permissions_of("operator")
    for name, password in [("alice", "wrong password"), ("nobody", PASSWORD)]:
        with pytest.raises(AuthenticationFailed, match="wrong name or password"):
            accounts.authenticate_password(name, password, remote="192.0.2.2")

    accounts.set_password("alice", "another long one")
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate_password("alice", PASSWORD, remote=None)
    accounts.authenticate_password("alice", "another long one", remote=None)
    assert accounts.disable_user("alice").disabled
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate_password("alice", "another long one", remote=None)
    assert [u.name for u in accounts.list_users()] == ["alice"]
    with pytest.raises(NotFoundError):
        accounts.disable_user("nobody")


def test_failed_log_ins_lock_the_name_and_address_out(accounts: AccountsService,
                                                      clock: Clock) -> None:
    accounts.create_user("alice", "admin", PASSWORD)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed) as failure:
            accounts.authenticate_password("alice", "guess guess", remote="198.51.100.7")
        assert not isinstance(failure.value, LoginThrottled)
    with pytest.raises(LoginThrottled) as locked:  # even the right password
        accounts.authenticate_password("alice", PASSWORD, remote="198.51.100.7")
    assert locked.value.retry_after == pytest.approx(300)
    # another address is not locked out, nor is the same address for another name
    accounts.authenticate_password("alice", PASSWORD, remote="198.51.100.8")
    clock.advance(timedelta(minutes=5, seconds=1))
    accounts.authenticate_password("alice", PASSWORD, remote="198.51.100.7")
    # the success cleared the count: two more failures do not lock
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            accounts.authenticate_password("alice", "guess guess", remote="198.51.100.7")
    accounts.authenticate_password("alice", PASSWORD, remote="198.51.100.7")


def test_a_hash_made_with_old_parameters_is_replaced_at_log_in(
        store: AccountStore, clock: Clock) -> None:
    AccountsService(store, clock=clock, hasher=FAST).create_user("alice", "viewer", PASSWORD)
    old = store.credentials("alice")
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    AccountsService(store, clock=clock, hasher=stronger).authenticate_password(
        "alice", PASSWORD, remote=None)
    new = store.credentials("alice")
    assert old is not None and new is not None and new.password_hash != old.password_hash
    assert not stronger.check_needs_rehash(new.password_hash)
    assert stronger.verify(new.password_hash, PASSWORD)


def test_tokens_are_shown_once_and_stored_as_hashes(accounts: AccountsService,
                                                    store: AccountStore,
                                                    clock: Clock) -> None:
    accounts.create_user("sam", "sender", PASSWORD)
    made = accounts.create_token("sam", role="viewer", name="ci")
    assert made.token.startswith("pr_") and len(made.token) > 40
    assert made.token not in repr(made)
    with store.engine.connect() as conn:
        rows = [str(tuple(r)) for r in conn.execute(select(api_tokens)).all()]
        rows += [str(tuple(r)) for r in conn.execute(select(users)).all()]
    assert rows and not any(made.token in row or made.token[3:] in row for row in rows)

    clock.advance(timedelta(minutes=1))
    actor = accounts.authenticate_token(made.token, remote="203.0.113.5")
    assert (actor.name, actor.role, actor.origin) == ("sam", "viewer", "api")
    assert not actor.can(Permission.DELIVERIES_SEND)
    [listed] = accounts.list_tokens("sam")
    assert listed.last_used_at == T0 + timedelta(minutes=1) and listed.role == "viewer"
    # Kept fresh to the minute, not written at each request.
    clock.advance(timedelta(seconds=59))
    accounts.authenticate_token(made.token, remote=None)
    assert accounts.list_tokens("sam")[0].last_used_at == T0 + timedelta(minutes=1)
    clock.advance(timedelta(seconds=1))
    accounts.authenticate_token(made.token, remote=None)
    assert accounts.list_tokens("sam")[0].last_used_at == T0 + timedelta(minutes=2)

    own = accounts.create_token("sam")
    assert accounts.authenticate_token(own.token, remote=None).can(Permission.DELIVERIES_SEND)
    with pytest.raises(InputError, match="wider role"):
        accounts.create_token("sam", role="admin")
    for bad in ["", "Bearer x", "pr_" + "x" * 40, made.token + "x", "pr_" + "y" * 500]:
        with pytest.raises(AuthenticationFailed):
            accounts.authenticate_token(bad, remote=None)

    assert accounts.revoke_token(made.info.id).revoked
    with pytest.raises(AuthenticationFailed, match="revoked"):
        accounts.authenticate_token(made.token, remote=None)
    accounts.disable_user("sam")
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate_token(own.token, remote=None)
    with pytest.raises(NotFoundError):
        accounts.revoke_token(9999)


def test_audit_listing_filters_and_pages(accounts: AccountsService, store: AccountStore,
                                         clock: Clock) -> None:
    log = AuditLog(store, clock)
    ann = Actor("ann", "admin", permissions_of("admin"), "console", "192.0.2.9")
    cli = Actor("root", "admin", permissions_of("admin"), "cli")
    for i in range(5):
        clock.advance(timedelta(minutes=1))
        log.record(ann if i % 2 else cli, "templates.update_template" if i < 3
                   else "accounts.create_user", target=f"t{i}", before={"subject": "a"},
                   after={"subject": "b"}, outcome="denied" if i == 4 else "ok")
    newest = accounts.audit()
    assert [e.target for e in newest] == ["t4", "t3", "t2", "t1", "t0"]
    assert newest[0].outcome == "denied" and newest[1].remote == "192.0.2.9"
    assert newest[-1].before == {"subject": "a"} and newest[-1].origin == "cli"
    assert [e.target for e in accounts.audit(limit=2, before_id=newest[1].id)] == ["t2", "t1"]
    assert [e.target for e in accounts.audit(AuditFilter(actor="ann"))] == ["t3", "t1"]
    assert [e.target for e in accounts.audit(AuditFilter(action="accounts"))] == ["t4", "t3"]
    assert [e.target for e in accounts.audit(AuditFilter(
        action="templates.update_template", since=T0 + timedelta(minutes=2)))] == ["t2", "t1"]
    assert [e.target for e in accounts.audit(AuditFilter(outcome="denied"))] == ["t4"]
    assert accounts.audit(AuditFilter(action="templates.update")) == []
    with pytest.raises(InputError):
        accounts.audit(limit=0)


def test_concurrent_failed_log_ins_all_count(store: AccountStore, clock: Clock) -> None:
    accounts = AccountsService(store, clock=clock, hasher=FAST,
                               throttle=ThrottlePolicy(failures=100))
    accounts.create_user("alice", "viewer", PASSWORD)
    start = threading.Barrier(6)

    def fail() -> None:
        start.wait()
        with pytest.raises(AuthenticationFailed):
            accounts.authenticate_password("alice", "not her password", remote="192.0.2.77")

    threads = [threading.Thread(target=fail) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with store.engine.connect() as conn:
        [row] = conn.execute(select(login_throttle)).all()
    assert row.failures == 6
