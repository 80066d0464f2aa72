"""The sending engine: claim due logs → render → send over N connections → record → archive.

One run sends what is due for one delivery, waits for quick retries that fall due soon, and
returns; what stays pending (retries due later) is picked up by the next run. A pause or stop set
from another process is noticed between batches. The archive outbox worker runs beside it, so an
unreachable archive relay never holds recipients' messages back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from postroom.delivery.archive import Archiver, Transport
from postroom.delivery.plan import Message, Plan
from postroom.domain.models import Delivery, LogUpdate, Target
from postroom.domain.outcomes import FailureReason, Verdict
from postroom.domain.states import DeliveryState, LogStatus
from postroom.errors import ConfigError, PostroomError, StateError
from postroom.settings import SendingSettings

__all__ = ["Engine", "RunSummary", "SendStore"]

Progress = Callable[[int], None]


class SendStore(Protocol):
    def get_delivery(self, delivery_id: int) -> Delivery: ...
    def move_delivery(self, delivery_id: int, target: DeliveryState, now: datetime, *,
                      error: str | None = None) -> Delivery: ...
    def claim_due(self, delivery_id: int, now: datetime, limit: int,
                  lease: timedelta) -> list[Target]: ...
    def record(self, updates: list[LogUpdate], now: datetime) -> None: ...
    def release(self, log_ids: list[int]) -> None: ...
    def next_due(self, delivery_id: int) -> datetime | None: ...
    def expire_pending(self, delivery_id: int, now: datetime, *, status: LogStatus,
                       reason: FailureReason | None, detail: str) -> int: ...


@dataclass
class RunSummary:
    delivery_id: int
    state: DeliveryState
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    archived: int = 0
    archive_pending: int = 0


class Engine:
    def __init__(self, store: SendStore, connect: Callable[[], Transport], *,
                 planner: Callable[[Delivery], Plan], sending: SendingSettings,
                 archiver: Archiver | None, archive_drain_seconds: float,
                 clock: Callable[[], datetime]):
        self._store = store
        self._connect = connect
        self._planner = planner
        self._sending = sending
        self._archiver = archiver
        self._drain = archive_drain_seconds
        self._clock = clock
        self._updates: list[LogUpdate] = []
        self._state = DeliveryState.SENDING
        self._state_read_at = 0.0

    async def run(self, delivery_id: int, *, progress: Progress | None = None) -> RunSummary:
        """Send a delivery in state `sending` until nothing is due soon, then return."""
        delivery = self._store.get_delivery(delivery_id)
        if delivery.state is not DeliveryState.SENDING:
            raise StateError(f"delivery #{delivery_id} is {delivery.state}, not sending")
        plan = self._planner(delivery)
        if delivery.properties.email_bcc and self._archiver is None:
            raise ConfigError("the delivery asks for Email BCC but archive.enabled is off; "
                              "nothing was sent (the administrator must switch it back on)")
        summary = RunSummary(delivery_id, delivery.state)
        finish = asyncio.Event()
        archiving = (asyncio.create_task(self._archiver.run(
            delivery_id=delivery_id, finish=finish, drain_seconds=self._drain))
            if self._archiver is not None else None)
        try:
            if self._clock() >= plan.valid_until:
                self._expire(delivery_id)
            else:
                await self._send_all(plan, summary, progress)
        finally:
            finish.set()
            if archiving is not None:
                await archiving
        if self._store.next_due(delivery_id) is None and \
                self._store.get_delivery(delivery_id).state is DeliveryState.SENDING:
            self._store.move_delivery(delivery_id, DeliveryState.FINISHED, self._clock())
        summary.state = self._store.get_delivery(delivery_id).state
        if self._archiver is not None:
            summary.archived = self._archiver.archived
            summary.archive_pending = self._archiver.pending(delivery_id)
        return summary

    def _expire(self, delivery_id: int) -> None:
        self._store.expire_pending(delivery_id, self._clock(), status=LogStatus.FAILED,
                                   reason=FailureReason.UNREACHABLE,
                                   detail="the delivery's validity ended")

    async def _send_all(self, plan: Plan, summary: RunSummary, progress: Progress | None) -> None:
        """Feed claimed logs to N connection workers; a worker's crash stops the run."""
        queue: asyncio.Queue[Message] = asyncio.Queue(self._sending.connections * 8)
        try:
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(self._worker(queue, plan, summary, progress))
                           for _ in range(self._sending.connections)]
                await self._feed(queue, plan)
                await queue.join()
                for worker in workers:
                    worker.cancel()
        finally:
            self._flush()

    async def _feed(self, queue: asyncio.Queue[Message], plan: Plan) -> None:
        delivery_id = plan.delivery.id
        lease = timedelta(seconds=self._sending.lease_seconds)
        while self._sending_allowed(delivery_id, force=True):
            targets = self._store.claim_due(delivery_id, self._clock(),
                                            self._sending.batch_size, lease)
            if targets:
                for index, target in enumerate(targets):
                    if not self._sending_allowed(delivery_id):
                        self._store.release([t.log_id for t in targets[index:]])
                        return
                    try:
                        await queue.put(plan.render(target, self._clock()))
                    except PostroomError as exc:
                        self._updates.append(plan.unrenderable(target, exc))
                continue
            await queue.join()
            self._flush()
            due = self._store.next_due(delivery_id)
            if due is None:
                return
            if due >= plan.valid_until:
                self._expire(delivery_id)
                return
            wait = (due - self._clock()).total_seconds()
            if wait > self._sending.wait_for_retries_seconds:
                return  # a later run picks them up
            await asyncio.sleep(max(wait, 0.01))

    def _sending_allowed(self, delivery_id: int, *, force: bool = False) -> bool:
        """Whether the delivery is still `sending` (re-read at most every half second)."""
        now = time.monotonic()
        if force or now - self._state_read_at >= 0.5:
            self._state_read_at = now
            self._state = self._store.get_delivery(delivery_id).state
        return self._state is DeliveryState.SENDING

    async def _worker(self, queue: asyncio.Queue[Message], plan: Plan,
                      summary: RunSummary, progress: Progress | None) -> None:
        transport = self._connect()
        faults = 0
        try:
            while True:
                message = await queue.get()
                try:
                    outcome = await transport.send(message.sender, message.recipient,
                                                   message.data,
                                                   smtputf8=message.smtputf8)
                    update = plan.settle(message, outcome, self._clock())
                    self._updates.append(update)
                    if update.status is LogStatus.SENT:
                        summary.sent += 1
                    elif update.status is LogStatus.FAILED:
                        summary.failed += 1
                    else:
                        summary.deferred += 1
                    if progress is not None and update.status is not LogStatus.PENDING:
                        progress(1)
                    if len(self._updates) >= self._sending.batch_size:
                        self._flush()
                    faults = faults + 1 if outcome.verdict is Verdict.DEFERRED and \
                        outcome.reply is None else 0
                    if faults:
                        await asyncio.sleep(min(5.0, 0.05 * 2 ** faults))
                finally:
                    queue.task_done()
        finally:
            await transport.close()

    def _flush(self) -> None:
        updates, self._updates = self._updates, []
        self._store.record(updates, self._clock())
