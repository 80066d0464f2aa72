"""Storage of accounts: users, API tokens (sha256 only), the audit log, log-in throttling.

Its own small store over the shared engine, so the accounts service depends on nothing else.
Every method is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from postroom.accounts.records import ApiToken, AuditEntry, AuditFilter, User
from postroom.errors import InputError, NotFoundError
from postroom.storage.schema import api_tokens, audit_log, login_throttle, users

__all__ = ["AccountStore", "ThrottleState", "UserCredentials"]

_MAX_LIST = 1000


@dataclass(frozen=True, slots=True)
class UserCredentials:
    user: User
    password_hash: str


@dataclass(frozen=True, slots=True)
class ThrottleState:
    failures: int
    first_failure_at: datetime
    locked_until: datetime | None


def _user(row: Any) -> User:
    return User(id=row.id, name=row.name, role=row.role, disabled=bool(row.disabled),
                created_at=row.created_at)


def _token(row: Any, user: str) -> ApiToken:
    return ApiToken(id=row.id, user=user, name=row.name, role=row.role,
                    created_at=row.created_at, last_used_at=row.last_used_at,
                    revoked_at=row.revoked_at)


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(id=row.id, at=row.at, actor=row.actor, role=row.role, origin=row.origin,
                      remote=row.remote, action=row.action, target=row.target,
                      before=row.before, after=row.after, outcome=row.outcome,
                      detail=row.detail)


class AccountStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    # users

    def create_user(self, name: str, role: str, password_hash: str, now: datetime) -> User:
        try:
            with self.engine.begin() as conn:
                new_id = conn.execute(insert(users).values(
                    name=name, role=role, password_hash=password_hash, disabled=False,
                    created_at=now)).inserted_primary_key
        except IntegrityError:
            raise InputError(f"a user named {name!r} exists already") from None
        assert new_id is not None
        return User(id=int(new_id[0]), name=name, role=role, disabled=False, created_at=now)

    def credentials(self, name: str) -> UserCredentials | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).one_or_none()
        return None if row is None else UserCredentials(_user(row), row.password_hash)

    def get_user(self, name: str) -> User:
        found = self.credentials(name)
        if found is None:
            raise NotFoundError(f"no user named {name!r}")
        return found.user

    def list_users(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).all()
        return [_user(row) for row in rows]

    def update_user(self, name: str, *, disabled: bool | None = None,
                    password_hash: str | None = None) -> User:
        values: dict[str, Any] = {}
        if disabled is not None:
            values["disabled"] = disabled
        if password_hash is not None:
            values["password_hash"] = password_hash
        with self.engine.begin() as conn:
            done = conn.execute(update(users).where(users.c.name == name).values(**values))
            if done.rowcount == 0:
                raise NotFoundError(f"no user named {name!r}")
        return self.get_user(name)

    # tokens

    def create_token(self, user: str, *, token_hash: str, name: str, role: str | None,
                     now: datetime) -> ApiToken:
        owner = self.get_user(user)
        with self.engine.begin() as conn:
            new_id = conn.execute(insert(api_tokens).values(
                user_id=owner.id, token_hash=token_hash, name=name, role=role,
                created_at=now)).inserted_primary_key
        assert new_id is not None
        return ApiToken(id=int(new_id[0]), user=owner.name, name=name, role=role,
                        created_at=now, last_used_at=None, revoked_at=None)

    def token_by_hash(self, token_hash: str) -> tuple[ApiToken, User] | None:
        t, u = api_tokens.c, users.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_tokens, u.name.label("user_name"), u.role.label("user_role"),
                       u.disabled, u.created_at.label("user_created_at"))
                .join(users, u.id == t.user_id).where(t.token_hash == token_hash)
            ).one_or_none()
        if row is None:
            return None
        owner = User(id=row.user_id, name=row.user_name, role=row.user_role,
                     disabled=bool(row.disabled), created_at=row.user_created_at)
        return _token(row, owner.name), owner

    def touch_token(self, token_id: int, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(api_tokens).where(api_tokens.c.id == token_id)
                         .values(last_used_at=now))

    def list_tokens(self, user: str | None = None) -> list[ApiToken]:
        t, u = api_tokens.c, users.c
        query = (select(api_tokens, u.name.label("user_name"))
                 .join(users, u.id == t.user_id).order_by(t.id))
        if user is not None:
            query = query.where(u.name == user)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_token(row, row.user_name) for row in rows]

    def get_token(self, token_id: int) -> ApiToken:
        for token in self.list_tokens():
            if token.id == token_id:
                return token
        raise NotFoundError(f"no API token with id {token_id}")

    def revoke_token(self, token_id: int, now: datetime) -> ApiToken:
        with self.engine.begin() as conn:
            conn.execute(update(api_tokens)
                         .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                         .values(revoked_at=now))
        return self.get_token(token_id)

    # log-in throttling

    def throttle(self, key: str) -> ThrottleState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(login_throttle)
                               .where(login_throttle.c.key == key)).one_or_none()
        return None if row is None else ThrottleState(row.failures, row.first_failure_at,
                                                      row.locked_until)

    def add_failure(self, key: str,
                    step: Callable[[ThrottleState | None], ThrottleState]) -> ThrottleState:
        """Count one failed log-in for `key`: `step` maps the state before to the state after,
        read and written in one transaction that holds the row (PostgreSQL) or the write lock
        (SQLite) first, so that concurrent failures all count."""
        t = login_throttle.c
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    locked = conn.execute(update(login_throttle).where(t.key == key)
                                          .values(failures=t.failures)).rowcount  # lock first
                    # Read only a row this transaction holds: with none to lock, a concurrent
                    # first failure may commit its row before the read below (PostgreSQL's
                    # read committed), and counting on top of it would lose an update. This
                    # one inserts instead, and its unique key makes it count again.
                    row = conn.execute(select(login_throttle)
                                       .where(t.key == key)).one() if locked else None
                    before = None if row is None else ThrottleState(
                        row.failures, row.first_failure_at, row.locked_until)
                    after = step(before)
                    values = {"failures": after.failures,
                              "first_failure_at": after.first_failure_at,
                              "locked_until": after.locked_until}
                    if row is None:
                        conn.execute(insert(login_throttle).values(key=key, **values))
                    else:
                        conn.execute(update(login_throttle).where(t.key == key)
                                     .values(**values))
                return after
            except IntegrityError:  # a concurrent first failure inserted the row: count again
                continue
        raise RuntimeError("login throttle: the row kept changing under three attempts")

    def clear_throttle(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(login_throttle).where(login_throttle.c.key == key))

    # audit

    def append_audit(self, *, at: datetime, actor: str, role: str, origin: str,
                     remote: str | None, action: str, target: str, before: Any, after: Any,
                     outcome: str, detail: str) -> int:
        with self.engine.begin() as conn:
            new_id = conn.execute(insert(audit_log).values(
                at=at, actor=actor[:64], role=role[:32], origin=origin[:16],
                remote=None if remote is None else remote[:64], action=action[:64],
                target=target[:255], before=before, after=after, outcome=outcome,
                detail=detail[:2000])).inserted_primary_key
        assert new_id is not None
        return int(new_id[0])

    def list_audit(self, filters: AuditFilter, *, limit: int,
                   before_id: int | None = None) -> list[AuditEntry]:
        a = audit_log.c
        query = select(audit_log).order_by(a.id.desc()).limit(max(1, min(limit, _MAX_LIST)))
        if before_id is not None:
            query = query.where(a.id < before_id)
        if filters.actor is not None:
            query = query.where(a.actor == filters.actor)
        if filters.action is not None:
            query = query.where(or_(a.action == filters.action,
                                    a.action.startswith(filters.action + ".",
                                                        autoescape=True)))
        if filters.origin is not None:
            query = query.where(a.origin == filters.origin)
        if filters.outcome is not None:
            query = query.where(a.outcome == filters.outcome)
        if filters.since is not None:
            query = query.where(a.at >= filters.since)
        if filters.until is not None:
            query = query.where(a.at < filters.until)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_entry(row) for row in rows]
