"""Delivery and delivery-log states, and the one table of legal moves between them.

Nothing else in Postroom decides whether a status may change: storage calls `transition()`
(or checks `LOG_MOVES`) before writing one.
"""

from __future__ import annotations

from enum import StrEnum

from postroom.errors import StateError

__all__ = [
    "BOUNCE_MOVES",
    "DELIVERY_MOVES",
    "LOG_MOVES",
    "BounceState",
    "DeliveryState",
    "InDoubtPolicy",
    "LogStatus",
    "can_bounce_move",
    "can_log_move",
    "transition",
]


class DeliveryState(StrEnum):
    EDITING = "editing"
    ANALYZING = "analyzing"
    READY = "ready"
    SENDING = "sending"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


class LogStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    IGNORED = "ignored"
    CANCELLED = "cancelled"
    # The message may have reached the relay without being recorded (a worker died, or the
    # connection dropped awaiting the reply to DATA) and the in-doubt policy is at-most-once:
    # an operator resolves it (resend, or count it failed).
    REVIEW = "review"


class InDoubtPolicy(StrEnum):
    """What becomes of a message that may have reached the relay unrecorded
    (`sending.in_doubt`)."""

    RESEND = "resend"  # at-least-once: it is sent again (a duplicate is possible)
    REVIEW = "review"  # at-most-once: set aside in `review` for an operator


class BounceState(StrEnum):
    """A stored bounce message's state (the `bounces` table)."""

    NEW = "new"  # stored, waiting to be processed
    PROCESSING = "processing"  # taken by one processor (inside its transaction)
    PROCESSED = "processed"  # attributed to delivery logs and applied
    UNATTRIBUTED = "unattributed"  # a report, about no message Postroom can name
    UNRECOGNIZED = "unrecognized"  # no report Postroom recognizes: kept for a person
    FAILED = "failed"  # processing raised; set aside, retried on request


_D = DeliveryState
DELIVERY_MOVES: dict[DeliveryState, frozenset[DeliveryState]] = {
    _D.EDITING: frozenset({_D.ANALYZING, _D.STOPPED}),
    _D.ANALYZING: frozenset({_D.READY, _D.FAILED}),
    _D.READY: frozenset({_D.ANALYZING, _D.SENDING, _D.STOPPED}),
    _D.SENDING: frozenset({_D.PAUSED, _D.FINISHED, _D.STOPPED}),
    _D.PAUSED: frozenset({_D.SENDING, _D.STOPPED}),
    _D.FAILED: frozenset({_D.ANALYZING, _D.STOPPED}),
    _D.FINISHED: frozenset(),
    _D.STOPPED: frozenset(),
}

_L = LogStatus
LOG_MOVES: dict[LogStatus, frozenset[LogStatus]] = {
    _L.PENDING: frozenset({_L.PENDING, _L.SENT, _L.FAILED, _L.CANCELLED, _L.REVIEW}),
    _L.SENT: frozenset({_L.FAILED}),  # an asynchronous bounce
    _L.FAILED: frozenset(),
    _L.IGNORED: frozenset(),
    _L.CANCELLED: frozenset({_L.SENT, _L.FAILED}),  # in flight when the delivery stopped
    _L.REVIEW: frozenset({_L.PENDING, _L.FAILED}),  # an operator's decision
}


_B = BounceState
BOUNCE_MOVES: dict[BounceState, frozenset[BounceState]] = {
    _B.NEW: frozenset({_B.PROCESSING, _B.FAILED}),
    _B.PROCESSING: frozenset({_B.PROCESSED, _B.UNATTRIBUTED, _B.UNRECOGNIZED}),
    _B.PROCESSED: frozenset(),
    _B.UNATTRIBUTED: frozenset(),
    _B.UNRECOGNIZED: frozenset(),
    _B.FAILED: frozenset({_B.NEW}),  # `bounces process --retry-failed`
}


def transition(current: DeliveryState, target: DeliveryState) -> DeliveryState:
    """Return `target` if a delivery may move there from `current`, else raise StateError."""
    if target not in DELIVERY_MOVES[current]:
        raise StateError(f"a delivery cannot go from {current} to {target}")
    return target


def can_log_move(current: LogStatus, target: LogStatus) -> bool:
    return target in LOG_MOVES[current]


def can_bounce_move(current: BounceState, target: BounceState) -> bool:
    return target in BOUNCE_MOVES[current]
