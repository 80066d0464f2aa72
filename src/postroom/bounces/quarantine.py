"""The address quarantine policy (DESIGN.md §5 and §8) as pure functions of (state, event, now).

Rules, in the order `apply_event` applies them:

- `denylisted` is final: nothing but an operator's `release` changes it.
- Ignored and undefined failures change nothing: an auto-reply or an unqualified text says
  nothing reliable about the address.
- A spam complaint (hard, reason 8 denylisted) denylists the address, from any status.
- A success clears `with_errors` (back to `valid`, counter 0). It does not release
  `quarantine`: a quarantined address is not sent to, so a success can only be stale.
- A hard failure quarantines the address at once.
- A soft failure counts at most once per `error_spacing` (24 h): `last_error_at` is the time of
  the last error that counted, and errors inside the window only refresh the last reason and
  text. The counter restarts when `counter_reset` (10 days) passed since that error. At
  `threshold` (5) counted errors the address is quarantined. Soft failures of an address
  already in quarantine change nothing; a hard one records its reason (so a mailbox-full
  quarantine that later gets "user unknown" is no longer released automatically).
- `due_release`: a quarantine whose reason is mailbox full is released after
  `mailbox_full_release` (30 days) in quarantine. No other quarantine is ever released
  automatically.

No clock is read here: `now` is an argument, so every edge is testable to the second.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from postroom.domain.outcomes import FailureReason, FailureType

__all__ = [
    "AddressEvent",
    "AddressState",
    "AddressStatus",
    "QuarantinePolicy",
    "apply_event",
    "due_release",
    "expire_errors",
    "release",
]


class AddressStatus(StrEnum):
    VALID = "valid"
    WITH_ERRORS = "with_errors"  # soft-error counter running
    QUARANTINE = "quarantine"
    DENYLISTED = "denylisted"


@dataclass(frozen=True, slots=True)
class QuarantinePolicy:
    """The numbers of DESIGN.md §8; an instance setting, passed in, never read globally."""

    threshold: int = 5
    error_spacing: timedelta = timedelta(hours=24)
    counter_reset: timedelta = timedelta(days=10)
    mailbox_full_release: timedelta = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class AddressState:
    """What Postroom knows about one normalized address (one `address_status` row)."""

    address: str
    status: AddressStatus
    status_since: datetime
    error_count: int = 0
    first_error_at: datetime | None = None  # first counted error of the current run
    last_error_at: datetime | None = None  # last error that counted (see module docstring)
    last_reason: FailureReason | None = None
    last_type: FailureType | None = None
    last_text: str = ""

    @classmethod
    def new(cls, address: str, now: datetime) -> AddressState:
        """A never-seen address: valid since now."""
        return cls(address=address, status=AddressStatus.VALID, status_since=now)


@dataclass(frozen=True, slots=True)
class AddressEvent:
    """Something that happened to an address: a qualified failure, or a successful send."""

    failure_type: FailureType | None  # None: the message was accepted
    reason: FailureReason = FailureReason.UNDEFINED
    text: str = ""

    @classmethod
    def success(cls) -> AddressEvent:
        return cls(None)

    @classmethod
    def failure(cls, failure_type: FailureType, reason: FailureReason,
                text: str = "") -> AddressEvent:
        return cls(failure_type, reason, text)

    @property
    def is_complaint(self) -> bool:
        return self.failure_type is FailureType.HARD and self.reason is FailureReason.DENYLISTED


def _with_status(state: AddressState, status: AddressStatus, now: datetime) -> AddressState:
    since = now if status is not state.status else state.status_since
    return replace(state, status=status, status_since=since)


def _record(state: AddressState, event: AddressEvent) -> AddressState:
    return replace(state, last_reason=event.reason, last_type=event.failure_type,
                   last_text=event.text[:2000])


def _counted(state: AddressState, event: AddressEvent, now: datetime) -> AddressState:
    """One more significant error, at `now`."""
    return _record(replace(state, error_count=state.error_count + 1, last_error_at=now,
                           first_error_at=state.first_error_at or now), event)


def expire_errors(state: AddressState, now: datetime, policy: QuarantinePolicy) -> AddressState:
    """Restart the soft-error counter when `counter_reset` passed since the last counted
    error; a `with_errors` address becomes `valid` again."""
    if state.error_count == 0 or state.status not in (AddressStatus.VALID,
                                                      AddressStatus.WITH_ERRORS):
        return state
    if state.last_error_at is None or now - state.last_error_at < policy.counter_reset:
        return state
    return _with_status(replace(state, error_count=0, first_error_at=None),
                        AddressStatus.VALID, now)


def apply_event(state: AddressState, event: AddressEvent, *, now: datetime,
                policy: QuarantinePolicy) -> AddressState:
    """The address's state after one event (see the module docstring for the rules)."""
    if state.status is AddressStatus.DENYLISTED:
        return state
    if event.failure_type in (FailureType.IGNORED, FailureType.UNDEFINED):
        return state
    if event.is_complaint:
        return _with_status(_counted(state, event, now), AddressStatus.DENYLISTED, now)
    if event.failure_type is None:
        if state.status is AddressStatus.WITH_ERRORS:
            return _with_status(replace(state, error_count=0, first_error_at=None),
                                AddressStatus.VALID, now)
        return state
    if state.status is AddressStatus.QUARANTINE:
        if event.failure_type is FailureType.HARD:
            return _record(replace(state, last_error_at=now), event)
        return state
    if event.failure_type is FailureType.HARD:
        return _with_status(_counted(state, event, now), AddressStatus.QUARANTINE, now)
    state = expire_errors(state, now, policy)
    if state.error_count and state.last_error_at is not None and (
            now - state.last_error_at < policy.error_spacing):
        return _record(state, event)  # inside the spacing window: not significant
    state = _counted(state, event, now)
    status = (AddressStatus.QUARANTINE if state.error_count >= policy.threshold
              else AddressStatus.WITH_ERRORS)
    return _with_status(state, status, now)


def due_release(state: AddressState, now: datetime, policy: QuarantinePolicy) -> bool:
    """Whether a quarantine is over by itself: only mailbox full, after 30 days."""
    return (state.status is AddressStatus.QUARANTINE
            and state.last_reason is FailureReason.MAILBOX_FULL
            and now - state.status_since >= policy.mailbox_full_release)


def release(state: AddressState, now: datetime) -> AddressState:
    """Back to `valid` with a fresh counter (automatic mailbox-full release, or an operator's
    release of a quarantined or denylisted address). The last error stays for the record."""
    return replace(state, status=AddressStatus.VALID, status_since=now, error_count=0,
                   first_error_at=None)
