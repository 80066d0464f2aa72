"""domain.states: the one table of legal moves for deliveries and delivery logs."""

from __future__ import annotations

import itertools

import pytest

from postroom.domain.states import (
    DELIVERY_MOVES,
    LOG_MOVES,
    BounceState,
    DeliveryState,
    InDoubtPolicy,
    LogStatus,
    can_bounce_move,
    can_log_move,
    transition,
)
from postroom.errors import StateError

D = DeliveryState
L = LogStatus

LEGAL_DELIVERY = {
    (D.EDITING, D.ANALYZING),
    (D.EDITING, D.STOPPED),
    (D.ANALYZING, D.READY),
    (D.ANALYZING, D.FAILED),
    (D.READY, D.ANALYZING),  # re-analysis after an edit
    (D.READY, D.SENDING),
    (D.READY, D.STOPPED),
    (D.SENDING, D.PAUSED),
    (D.SENDING, D.FINISHED),
    (D.SENDING, D.STOPPED),
    (D.PAUSED, D.SENDING),
    (D.PAUSED, D.STOPPED),
    (D.FAILED, D.ANALYZING),
    (D.FAILED, D.STOPPED),
}
ILLEGAL_DELIVERY = sorted(set(itertools.product(D, D)) - LEGAL_DELIVERY)

LEGAL_LOG = {
    (L.PENDING, L.PENDING),  # rescheduled after a temporary failure
    (L.PENDING, L.SENT),
    (L.PENDING, L.FAILED),
    (L.PENDING, L.CANCELLED),
    (L.SENT, L.FAILED),  # an asynchronous bounce
    (L.CANCELLED, L.SENT),  # in flight when the delivery stopped
    (L.CANCELLED, L.FAILED),
    (L.PENDING, L.REVIEW),  # in doubt, at-most-once
    (L.REVIEW, L.PENDING),  # an operator resends it
    (L.REVIEW, L.FAILED),  # an operator counts it failed
}


def test_every_state_has_a_row() -> None:
    assert set(DELIVERY_MOVES) == set(D)
    assert set(LOG_MOVES) == set(L)


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL_DELIVERY))
def test_legal_delivery_moves(current: DeliveryState, target: DeliveryState) -> None:
    assert transition(current, target) is target


@pytest.mark.parametrize(("current", "target"), ILLEGAL_DELIVERY)
def test_illegal_delivery_moves_raise(current: DeliveryState, target: DeliveryState) -> None:
    with pytest.raises(StateError, match=f"from {current} to {target}"):
        transition(current, target)


@pytest.mark.parametrize("final", [D.FINISHED, D.STOPPED])
def test_finished_and_stopped_are_final(final: DeliveryState) -> None:
    assert DELIVERY_MOVES[final] == frozenset()


def test_a_stopped_delivery_cannot_resume() -> None:
    with pytest.raises(StateError):
        transition(D.STOPPED, D.SENDING)


def test_state_error_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError):
        transition(D.EDITING, D.SENDING)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(L, L)))
def test_log_moves(current: LogStatus, target: LogStatus) -> None:
    assert can_log_move(current, target) is ((current, target) in LEGAL_LOG)


B = BounceState
LEGAL_BOUNCE = {(B.NEW, B.PROCESSING), (B.NEW, B.FAILED), (B.PROCESSING, B.PROCESSED),
                (B.PROCESSING, B.UNATTRIBUTED), (B.PROCESSING, B.UNRECOGNIZED),
                (B.FAILED, B.NEW)}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(B, B)))
def test_bounce_moves(current: BounceState, target: BounceState) -> None:
    assert can_bounce_move(current, target) is ((current, target) in LEGAL_BOUNCE)


def test_the_in_doubt_policy_is_an_enum_in_the_settings() -> None:
    from postroom.settings import SendingSettings

    assert SendingSettings().in_doubt is InDoubtPolicy.RESEND
    assert SendingSettings(in_doubt="review").in_doubt is InDoubtPolicy.REVIEW
    with pytest.raises(ValueError, match="'resend' or 'review'"):
        SendingSettings(in_doubt="maybe")
