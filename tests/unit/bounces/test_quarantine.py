"""bounces.quarantine: each rule of DESIGN.md §5 and each edge of the §8 numbers, frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from postroom.bounces import (
    AddressEvent,
    AddressState,
    AddressStatus,
    QuarantinePolicy,
    apply_event,
    due_release,
    expire_errors,
    release,
)
from postroom.domain.outcomes import FailureReason, FailureType

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
POLICY = QuarantinePolicy()
A = AddressStatus
R = FailureReason
SOFT = AddressEvent.failure(FailureType.SOFT, R.UNREACHABLE, "421 try later")
FULL = AddressEvent.failure(FailureType.SOFT, R.MAILBOX_FULL, "552 5.2.2 Mailbox full")
HARD = AddressEvent.failure(FailureType.HARD, R.USER_UNKNOWN, "550 5.1.1 User unknown")
SPAM = AddressEvent.failure(FailureType.HARD, R.DENYLISTED, "feedback-type: abuse")
OK = AddressEvent.success()
H = timedelta(hours=1)
D = timedelta(days=1)
SECOND = timedelta(seconds=1)


def fresh() -> AddressState:
    return AddressState.new("ann@example.org", NOW - 100 * D)


def apply(state: AddressState, event: AddressEvent, at: datetime) -> AddressState:
    return apply_event(state, event, now=at, policy=POLICY)


def soft_errors(times: list[datetime], event: AddressEvent = SOFT) -> AddressState:
    state = fresh()
    for at in times:
        state = apply(state, event, at)
    return state


def test_defaults_are_the_design_numbers() -> None:
    assert (POLICY.threshold, POLICY.error_spacing, POLICY.counter_reset,
            POLICY.mailbox_full_release) == (5, 24 * H, 10 * D, 30 * D)


def test_a_new_address_is_valid() -> None:
    state = AddressState.new("ann@example.org", NOW)
    assert (state.status, state.status_since, state.error_count) == (A.VALID, NOW, 0)


def test_hard_error_quarantines_at_once() -> None:
    state = apply(fresh(), HARD, NOW)
    assert state.status is A.QUARANTINE
    assert state.status_since == NOW
    assert (state.error_count, state.first_error_at, state.last_error_at) == (1, NOW, NOW)
    assert (state.last_reason, state.last_type, state.last_text) == (
        R.USER_UNKNOWN, FailureType.HARD, "550 5.1.1 User unknown")


def test_first_soft_error_starts_the_counter() -> None:
    state = apply(fresh(), SOFT, NOW)
    assert (state.status, state.error_count, state.status_since) == (A.WITH_ERRORS, 1, NOW)
    assert (state.first_error_at, state.last_error_at) == (NOW, NOW)


def test_soft_errors_count_at_most_once_per_24_hours() -> None:
    state = soft_errors([NOW, NOW + 23 * H + 59 * 60 * SECOND + 59 * SECOND])
    assert state.error_count == 1
    assert state.last_error_at == NOW  # the error that counted
    state = apply(state, SOFT, NOW + 24 * H)  # exactly 24 h later: counts
    assert (state.error_count, state.last_error_at) == (2, NOW + 24 * H)


def test_spacing_is_measured_from_the_last_counted_error() -> None:
    times = [NOW, NOW + 12 * H, NOW + 23 * H, NOW + 25 * H, NOW + 36 * H, NOW + 48 * H]
    state = soft_errors(times)
    assert state.error_count == 2  # 0 h and 25 h; 48 h is only 23 h after 25 h
    state = apply(state, SOFT, NOW + 49 * H)
    assert state.error_count == 3


def test_an_error_inside_the_window_refreshes_the_last_reason_only() -> None:
    state = soft_errors([NOW])
    later = apply(state, FULL, NOW + H)
    assert (later.error_count, later.last_error_at) == (1, NOW)
    assert (later.last_reason, later.last_text) == (R.MAILBOX_FULL, "552 5.2.2 Mailbox full")


def test_fifth_counted_soft_error_quarantines() -> None:
    state = soft_errors([NOW + i * D for i in range(4)])
    assert (state.status, state.error_count) == (A.WITH_ERRORS, 4)
    state = apply(state, SOFT, NOW + 4 * D)
    assert (state.status, state.error_count, state.status_since) == (
        A.QUARANTINE, 5, NOW + 4 * D)
    assert state.first_error_at == NOW


def test_many_errors_in_one_day_never_quarantine() -> None:
    state = soft_errors([NOW + i * H for i in range(24)])
    assert (state.status, state.error_count) == (A.WITH_ERRORS, 1)


@pytest.mark.parametrize(("gap", "count"), [(10 * D - SECOND, 2), (10 * D, 1)])
def test_counter_resets_after_10_days_without_error(gap: timedelta, count: int) -> None:
    state = soft_errors([NOW, NOW + gap])
    assert state.error_count == count
    assert state.first_error_at == (NOW if count == 2 else NOW + gap)
    assert state.status is A.WITH_ERRORS


def test_expire_errors_without_a_new_event() -> None:
    state = soft_errors([NOW, NOW + D])
    assert expire_errors(state, NOW + D + 10 * D - SECOND, POLICY) == state
    reset = expire_errors(state, NOW + 11 * D, POLICY)
    assert (reset.status, reset.error_count, reset.first_error_at, reset.status_since) == (
        A.VALID, 0, None, NOW + 11 * D)
    assert reset.last_reason is R.UNREACHABLE  # history is kept
    quarantined = apply(fresh(), HARD, NOW)
    assert expire_errors(quarantined, NOW + 100 * D, POLICY) == quarantined


def test_success_clears_with_errors() -> None:
    state = apply(soft_errors([NOW, NOW + D]), OK, NOW + 2 * D)
    assert (state.status, state.error_count, state.first_error_at) == (A.VALID, 0, None)
    assert state.status_since == NOW + 2 * D
    assert state.last_reason is R.UNREACHABLE
    assert apply(fresh(), OK, NOW) == fresh()


def test_success_does_not_release_quarantine_or_denylist() -> None:
    quarantined = apply(fresh(), HARD, NOW)
    assert apply(quarantined, OK, NOW + D) == quarantined
    denylisted = apply(fresh(), SPAM, NOW)
    assert apply(denylisted, OK, NOW + D) == denylisted


def test_spam_complaint_denylists_from_any_status() -> None:
    for start in (fresh(), soft_errors([NOW - D]), apply(fresh(), HARD, NOW - D)):
        state = apply(start, SPAM, NOW)
        assert (state.status, state.status_since, state.last_reason) == (
            A.DENYLISTED, NOW, R.DENYLISTED)


def test_denylisted_never_changes_by_itself() -> None:
    state = apply(fresh(), SPAM, NOW)
    for event in (SOFT, HARD, FULL, OK, SPAM):
        assert apply(state, event, NOW + 40 * D) == state
    assert not due_release(state, NOW + 400 * D, POLICY)


@pytest.mark.parametrize("failure_type", [FailureType.IGNORED, FailureType.UNDEFINED])
def test_ignored_and_undefined_change_nothing(failure_type: FailureType) -> None:
    event = AddressEvent.failure(failure_type, R.ERROR_IGNORED, "auto-reply")
    for state in (fresh(), soft_errors([NOW - D]), apply(fresh(), HARD, NOW - D)):
        assert apply(state, event, NOW) == state


def test_quarantine_ignores_soft_errors_and_records_hard_ones() -> None:
    state = soft_errors([NOW + i * D for i in range(5)], FULL)
    assert (state.status, state.last_reason) == (A.QUARANTINE, R.MAILBOX_FULL)
    assert apply(state, SOFT, NOW + 6 * D) == state
    worse = apply(state, HARD, NOW + 6 * D)
    assert (worse.status, worse.status_since) == (A.QUARANTINE, state.status_since)
    assert (worse.last_reason, worse.last_error_at) == (R.USER_UNKNOWN, NOW + 6 * D)
    assert not due_release(worse, NOW + 100 * D, POLICY)


def test_mailbox_full_quarantine_is_released_after_30_days() -> None:
    state = soft_errors([NOW + i * D for i in range(5)], FULL)
    since = state.status_since
    assert since == NOW + 4 * D
    assert not due_release(state, since + 30 * D - SECOND, POLICY)
    assert due_release(state, since + 30 * D, POLICY)
    released = release(state, since + 30 * D)
    assert (released.status, released.error_count, released.status_since) == (
        A.VALID, 0, since + 30 * D)
    assert released.last_reason is R.MAILBOX_FULL


def test_other_quarantines_are_never_released_automatically() -> None:
    hard = apply(fresh(), HARD, NOW)
    soft = soft_errors([NOW + i * D for i in range(5)])
    assert not due_release(hard, NOW + 1000 * D, POLICY)
    assert not due_release(soft, NOW + 1000 * D, POLICY)
    assert not due_release(soft_errors([NOW], FULL), NOW + 1000 * D, POLICY)  # not quarantined


def test_a_mailbox_full_hard_failure_is_released_too() -> None:
    event = AddressEvent.failure(FailureType.HARD, R.MAILBOX_FULL, "552 Mailbox full")
    state = apply(fresh(), event, NOW)
    assert state.status is A.QUARANTINE
    assert due_release(state, NOW + 30 * D, POLICY)


def test_policy_numbers_are_parameters() -> None:
    strict = QuarantinePolicy(threshold=2, error_spacing=H, counter_reset=D,
                              mailbox_full_release=D)
    state = apply_event(fresh(), SOFT, now=NOW, policy=strict)
    state = apply_event(state, SOFT, now=NOW + H, policy=strict)
    assert state.status is A.QUARANTINE


def test_operator_release_of_a_denylisted_address() -> None:
    state = release(apply(fresh(), SPAM, NOW), NOW + D)
    assert (state.status, state.status_since, state.error_count) == (A.VALID, NOW + D, 0)
