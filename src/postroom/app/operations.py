"""Operations: health (what a monitor wants to know) and the senders (workers) registry."""

from __future__ import annotations

import os
import socket
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from postroom.app.context import AppContext
from postroom.domain.models import ArchiveState
from postroom.domain.outcomes import RELAY_FAULT
from postroom.domain.states import DeliveryState
from postroom.storage.metrics import oldest_pending_archive
from postroom.storage.workers import WorkerRow

__all__ = ["Health", "OperationsService"]


@dataclass(frozen=True)
class Health:
    database: bool
    problems: list[str]
    notes: list[str]
    live_workers: int
    deliveries: dict[str, int]
    archive: dict[str, int]

    @property
    def ok(self) -> bool:
        return self.database and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "problem", "database": self.database,
                "problems": self.problems, "notes": self.notes,
                "live_workers": self.live_workers, "deliveries": self.deliveries,
                "archive": self.archive}


class OperationsService:
    def __init__(self, ctx: AppContext):
        self._ctx = ctx

    def health(self) -> Health:
        """What a monitor wants to know: is the database there, is anyone sending what is
        due, and is anything stuck (paused by a fault, archive copies failing)."""
        ctx, store = self._ctx, self._ctx.store
        problems: list[str] = []
        notes: list[str] = []
        try:
            deliveries = store.list_deliveries()
            senders = self.workers()
            live = [w for w in senders if self.worker_alive(w)]
            archive = Counter[str]()
            for states in store.archive_counts().values():
                archive.update(states)
            due = store.next_sending_delivery(ctx.now() - ctx.lease)
            backlog = self._archive_backlog_problems()
            waiting = {d.id: store.relay_waiting(d.id) for d in deliveries
                       if d.state in (DeliveryState.SENDING, DeliveryState.PAUSED)}
            archive_waiting, archive_fault = store.archive_relay_waiting()
            stuck = store.stuck_archive(ctx.now(), {w.id for w in live})
        except SQLAlchemyError as exc:
            return Health(False, [f"database unreachable: {type(exc).__name__}"], [], 0, {}, {})
        sending = [d for d in deliveries if d.state is DeliveryState.SENDING]
        for d in deliveries:
            if d.state is DeliveryState.PAUSED and d.last_error:  # it paused itself: a fault
                problems.append(f"delivery #{d.id} paused: {d.last_error}")
            count, detail = waiting.get(d.id, (0, ""))
            if count:
                problems.append(f"delivery #{d.id}: {count} messages wait for the relay "
                                f"({detail.removeprefix(RELAY_FAULT)}); once it is fixed: "
                                f"`postroom deliveries retry {d.id}`")
        if archive_waiting:
            problems.append(f"{archive_waiting} archive copies wait for the archive relay "
                            f"({archive_fault.removeprefix('not attempted: ')}); once it is "
                            "fixed: `postroom archive flush`")
        if due is not None and not live:
            problems.append(f"delivery #{due} has messages due for a lease period and no "
                            "live sender: start `postroom worker`")
        if archive.get(ArchiveState.FAILED, 0):
            problems.append(f"{archive[ArchiveState.FAILED]} archive copies failed: see "
                            "`postroom archive status`")
        problems += backlog
        if stuck:
            problems.append(f"{stuck} archive copies are held past their lease by a sender "
                            "that is not alive: start `postroom worker` to take them over")
        self._watch_senders(senders, live, problems, notes)
        return Health(True, problems, notes, len(live),
                      {"sending": len(sending)}, dict(archive))

    def _archive_backlog_problems(self) -> list[str]:
        """The oldest pending archive copy waits longer than archive.max_pending_age_minutes."""
        ctx = self._ctx
        oldest = oldest_pending_archive(ctx.store.engine)
        limit = timedelta(minutes=ctx.settings.archive.max_pending_age_minutes)
        if oldest is None or ctx.now() - oldest <= limit:
            return []
        minutes = (ctx.now() - oldest).total_seconds() / 60
        return [f"the oldest pending archive copy waits for {minutes:.0f} min (more than "
                f"archive.max_pending_age_minutes = {limit.total_seconds() / 60:g}): is the "
                "archive relay taking copies? see `postroom archive status`"]

    def workers(self, *, recent: timedelta = timedelta(hours=1)) -> list[WorkerRow]:
        """Senders that are running, and those that stopped within `recent`."""
        now = self._ctx.now()
        return self._ctx.store.list_workers(now, include_stopped_since=now - recent)

    def worker_alive(self, row: WorkerRow) -> bool:
        return self.worker_state(row) == "alive"

    def worker_state(self, row: WorkerRow) -> str:
        """alive / silent / dead / stopped / failed (WorkerRow.state), with the process
        looked up when the sender runs on this host."""
        return row.state(self._ctx.now(), self._ctx.lease, running=_process_running(row))

    def _watch_senders(self, senders: list[WorkerRow], live: list[WorkerRow],
                       problems: list[str], notes: list[str]) -> None:
        """Problems: a sender whose loop died (within the last hour) and no live sender of its
        kind started since; a silent one (registered, its process there or unknown, no beat).
        A dead one (its process gone) is a note: its claims run out by themselves."""
        for row in senders:
            state = self.worker_state(row)
            age = (self._ctx.now() - row.heartbeat_at).total_seconds()
            if state == "failed" and row.stopped_at is not None and not any(
                    w.kind == row.kind and w.started_at > row.stopped_at for w in live):
                problems.append(f"{row.kind} {row.id} stopped at {row.stopped_at:%H:%M:%S} "
                                f"after a failure: {row.error}")
            elif state == "silent":
                problems.append(f"{row.kind} {row.id} is silent: no beat for {age:.0f} s "
                                "(a loop stuck, or the database unreachable from it)")
            elif state == "dead" and age <= 3600:
                notes.append(f"{row.kind} {row.id} is dead (process gone or no beat for "
                             f"{age:.0f} s); what it held is taken over when its lease ends")


def _process_running(row: WorkerRow) -> bool | None:
    """Whether a sender's process exists, if it runs on this host (None: unknown)."""
    if row.host != socket.gethostname():
        return None
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
