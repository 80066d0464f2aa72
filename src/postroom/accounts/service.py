"""The accounts application service: users, passwords, API tokens, log-in, the audit listing.

Passwords are hashed with argon2id (argon2-cffi) and rehashed at the next log-in when the
parameters change; API tokens are random, shown once, and stored as their sha256 only (a token
carries 256 bits: a slow hash would add nothing). Failed log-ins are counted per name and
client address; too many within the window lock that pair out for a while.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from postroom.accounts.actor import Actor, Origin
from postroom.accounts.permissions import ROLES, permissions_of
from postroom.accounts.records import ApiToken, AuditEntry, AuditFilter, NewToken, User
from postroom.errors import AuthenticationFailed, InputError, LoginThrottled
from postroom.storage.accounts import AccountStore, ThrottleState

__all__ = ["AccountsService", "ThrottlePolicy", "hash_token", "next_throttle"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
MAX_TOKEN = 200
TOUCH_EVERY = timedelta(minutes=1)  # how fresh a token's last use is kept
TOKEN_PREFIX = "pr_"


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """`failures` failed log-ins within `window` lock the (name, address) pair for `lockout`."""

    failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)


def next_throttle(state: ThrottleState | None, now: datetime,
                  policy: ThrottlePolicy) -> ThrottleState:
    """The throttle state after one more failure at `now` (pure)."""
    if state is None or (now - state.first_failure_at >= policy.window and (
            state.locked_until is None or state.locked_until <= now)):
        state = ThrottleState(0, now, None)
    failures = state.failures + 1
    locked = now + policy.lockout if failures >= policy.failures else state.locked_until
    return ThrottleState(failures, state.first_failure_at, locked)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _throttle_key(name: str, remote: str | None) -> str:
    return hashlib.sha256(f"{name.lower()}\0{remote or ''}".encode("utf-8",
                                                                 "surrogatepass")).hexdigest()


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InputError(f"{name[:80]!r} is not a user name: 1 to 64 letters, digits, and "
                         ". _ @ - (starting with a letter or digit)")
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InputError(f"{role[:40]!r} is not a role; the roles are: " + ", ".join(ROLES))
    return role


def _check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InputError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters "
                         f"(this one has {len(password)})")
    return password


class AccountsService:
    def __init__(self, store: AccountStore, *, clock: Callable[[], datetime],
                 hasher: PasswordHasher | None = None,
                 throttle: ThrottlePolicy = ThrottlePolicy()):
        self.store = store
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        self._throttle = throttle

    @cached_property
    def _dummy(self) -> str:
        """Verified against for an unknown name, so that it takes as long as a known one."""
        return self._hasher.hash(secrets.token_hex(16))

    # log-in

    def authenticate_password(self, name: str, password: str, *, remote: str | None,
                              origin: Origin = "console") -> Actor:
        """The actor for `name`, or AuthenticationFailed (LoginThrottled when locked out).

        The same error for an unknown name, a wrong password and a disabled account."""
        now = self._clock()
        key = _throttle_key(name[:64], remote)
        state = self.store.throttle(key)
        if state is not None and state.locked_until is not None and state.locked_until > now:
            raise LoginThrottled((state.locked_until - now).total_seconds())
        found = self.store.credentials(name) if len(name) <= 64 else None
        ok = self._verify(found.password_hash if found else self._dummy,
                          password[:MAX_PASSWORD])
        if not ok or found is None or found.user.disabled:
            self.store.add_failure(key, lambda before: next_throttle(before, now,
                                                                     self._throttle))
            raise AuthenticationFailed("wrong name or password, or a disabled account")
        if state is not None:
            self.store.clear_throttle(key)
        if self._hasher.check_needs_rehash(found.password_hash):
            self.store.update_user(name, password_hash=self._hasher.hash(password))
        user = found.user
        return Actor(name=user.name, role=user.role, permissions=permissions_of(user.role),
                     origin=origin, remote=remote)

    def resume_session(self, actor: Actor) -> Actor:
        """The actor of a console session, as its account stands now: the role it has now
        (an administrator's change applies from the next request), or AuthenticationFailed
        when the account was disabled or is gone (the session ends)."""
        found = self.store.credentials(actor.name)
        if found is None or found.user.disabled:
            raise AuthenticationFailed("this account was disabled; the session has ended")
        role = found.user.role
        if role == actor.role:
            return actor
        return Actor(name=actor.name, role=role, permissions=permissions_of(role),
                     origin=actor.origin, remote=actor.remote)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False

    def authenticate_token(self, token: str, *, remote: str | None,
                           origin: Origin = "api") -> Actor:
        """The actor a bearer token stands for: its user, with the token's narrower role."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN:
            raise AuthenticationFailed("not a Postroom API token")
        found = self.store.token_by_hash(hash_token(token))
        if found is None:
            raise AuthenticationFailed("unknown API token")
        info, user = found
        if info.revoked or user.disabled:
            raise AuthenticationFailed("this API token was revoked or its user disabled")
        now = self._clock()
        if info.last_used_at is None or now - info.last_used_at >= TOUCH_EVERY:
            self.store.touch_token(info.id, now)  # not a write per request: once a minute
        role = info.role or user.role
        return Actor(name=user.name, role=role, permissions=permissions_of(role),
                     origin=origin, remote=remote)

    # users

    def list_users(self) -> list[User]:
        return self.store.list_users()

    def create_user(self, name: str, role: str, password: str) -> User:
        _check_name(name)
        _check_role(role)
        _check_password(password)
        return self.store.create_user(name, role, self._hasher.hash(password), self._clock())

    def disable_user(self, name: str) -> User:
        return self.store.update_user(name, disabled=True)

    def set_password(self, name: str, password: str) -> User:
        _check_password(password)
        return self.store.update_user(name, password_hash=self._hasher.hash(password))

    # tokens

    def list_tokens(self, user: str | None = None) -> list[ApiToken]:
        return self.store.list_tokens(user)

    def create_token(self, user: str, *, role: str | None = None, name: str = "") -> NewToken:
        """A new token for `user`; `role` may narrow the user's permissions, never widen them."""
        owner = self.store.get_user(user)
        if owner.disabled:
            raise InputError(f"user {user!r} is disabled")
        if role is not None and not permissions_of(_check_role(role)) <= permissions_of(
                owner.role):
            raise InputError(f"a token of {user!r} ({owner.role}) cannot have the wider role "
                             f"{role!r}")
        if len(name) > 100:
            raise InputError("a token name has at most 100 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = self.store.create_token(owner.name, token_hash=hash_token(token), name=name,
                                       role=role, now=self._clock())
        return NewToken(info=info, token=token)

    def revoke_token(self, token_id: int) -> ApiToken:
        return self.store.revoke_token(token_id, self._clock())

    # audit

    def audit(self, filters: AuditFilter | None = None, *, limit: int = 50,
              before_id: int | None = None) -> list[AuditEntry]:
        """The newest audit entries first; page on with `before_id` = the last id seen."""
        if not 1 <= limit <= 1000:
            raise InputError("limit: 1 to 1000 entries")
        return self.store.list_audit(filters or AuditFilter(), limit=limit, before_id=before_id)
