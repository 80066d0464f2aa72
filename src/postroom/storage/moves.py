"""The one way storage changes a delivery log's status or a bounce's state: a compare-and-set
UPDATE from given source states, refused before it runs when the table of legal moves
(`domain/states.py`) does not allow source → target (h11's rule: one owner per state move).

Functions of a connection, so that the caller's transaction holds the move together with its
other effects (a bounce's results, the address events).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Connection, update

from postroom.domain.states import BounceState, LogStatus, can_bounce_move, can_log_move
from postroom.errors import StateError
from postroom.storage.schema import bounces, delivery_logs

__all__ = ["move_bounces", "move_logs"]


def move_logs(conn: Connection, where: ColumnElement[bool],
              source: LogStatus | Collection[LogStatus], target: LogStatus,
              **values: Any) -> int:
    """Move the logs matching `where` that are in `source` to `target`, setting `values`
    too; returns how many moved. StateError if a source may not move to `target`."""
    sources = [source] if isinstance(source, LogStatus) else list(source)
    illegal = [s for s in sources if not can_log_move(s, target)]
    if illegal:
        raise StateError(f"a delivery log cannot go from {illegal[0]} to {target}")
    c = delivery_logs.c
    return conn.execute(update(delivery_logs).where(where, c.status.in_(sources))
                        .values(status=target, **values)).rowcount


def move_bounces(conn: Connection, where: ColumnElement[bool], source: BounceState,
                 target: BounceState, **values: Any) -> int:
    """Move the stored bounces matching `where` that are in `source` to `target` (a
    compare-and-set: 0 when another processor took them); StateError for an illegal move."""
    if not can_bounce_move(source, target):
        raise StateError(f"a bounce cannot go from {source} to {target}")
    return conn.execute(update(bounces).where(where, bounces.c.state == source)
                        .values(state=target, **values)).rowcount
