"""The sending engine: claim due logs → render → send over N connections → record → archive.

One run sends what is due for one delivery, waits for quick retries that fall due soon, and
returns; what stays pending (retries due later) is picked up by the next run. A pause or stop set
from another process is noticed within half a second, and what no connection has taken yet is
given back. The archive outbox worker runs beside it, so an unreachable archive relay never holds
recipients' messages back.

Crash accounting: logs are claimed under a lease, and marked `attempting` (one write per few
messages) just before they go to the connections. A log whose lease runs out while attempting —
its worker died — may have reached the relay unrecorded: the next claim counts it in doubt, as
does a connection that dropped after the message was handed over (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from postroom.delivery.archive import ArchiveLoop
from postroom.delivery.lanes import Lane, Lanes
from postroom.delivery.liveness import SEND, Liveness
from postroom.delivery.plan import Message, Plan
from postroom.delivery.shaping import Shaper, Slowdown
from postroom.domain.models import Delivery, LogUpdate, Target
from postroom.domain.outcomes import RELAY_FAULT, FailureReason, Fault, Outcome, Verdict
from postroom.domain.states import DeliveryState, InDoubtPolicy, LogStatus
from postroom.errors import ConfigError, DatabaseUnavailable, PostroomError, StateError
from postroom.settings import SendingSettings
from postroom.transport.routed import RoutedConnection, Transport
from postroom.transport.routing import HostPort, NoRoute, Router, RouteSource

__all__ = ["Engine", "RunSummary", "SendStore", "doubtful"]

Progress = Callable[[int], None]
_LONGEST_PACING_WAIT = 2.0  # seconds; a domain's hourly limit that asks more postpones the rest


class SendStore(Protocol):
    def get_delivery(self, delivery_id: int) -> Delivery: ...
    def move_delivery(self, delivery_id: int, target: DeliveryState, now: datetime, *,
                      error: str | None = None) -> Delivery: ...
    def claim_due(self, delivery_id: int, now: datetime, limit: int,
                  lease: timedelta, *, worker: str = "") -> list[Target]: ...
    def mark_attempting(self, log_ids: list[int], *, worker: str | None = None,
                        now: datetime | None = None,
                        lease: timedelta | None = None) -> list[int]: ...
    def abandon(self, log_ids: list[int], now: datetime, *, review: bool) -> None: ...
    def review_doubtful(self, delivery_id: int, now: datetime) -> int: ...
    def record(self, updates: list[LogUpdate], now: datetime) -> None: ...
    def release(self, log_ids: list[int]) -> None: ...
    def next_due(self, delivery_id: int, now: datetime | None = None) -> datetime | None: ...
    def postpone(self, log_ids: list[int], until: datetime, *, detail: str) -> None: ...
    def record_slowdowns(self, delivery_id: int, slowdowns: list[dict[str, Any]]) -> None: ...
    def review_waiting(self, delivery_id: int) -> int: ...
    def expire_pending(self, delivery_id: int, now: datetime, *, status: LogStatus,
                       reason: FailureReason | None, detail: str) -> int: ...


@dataclass
class RunSummary:
    delivery_id: int
    state: DeliveryState
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    in_doubt: int = 0  # attempts whose connection dropped awaiting the reply to DATA
    postponed: int = 0  # held back for a domain's hourly limit (pending, due later)
    slowed: list[Slowdown] = field(default_factory=list)  # domains slowed down for their 4xx
    archived: int = 0
    archive_pending: int = 0
    archive_fault: str = ""  # the archive relay's fault, if copies wait for it
    paused_reason: str = ""
    relay_faults: int = 0  # messages not sent: no session with the relay could be opened
    relay_fault: str = ""  # the last such fault
    # "halted": a first Ctrl-C or SIGTERM, in-flight messages finished and were recorded;
    # "stopped": a second Ctrl-C, messages on the wire were left in doubt (`in_doubt`).
    interrupted: str = ""
    helper_errors: list[str] = field(default_factory=list)  # helper send processes that failed


def doubtful(update: LogUpdate, outcome: Outcome, policy: InDoubtPolicy) -> LogUpdate:
    """Mark an attempt that may have reached the relay; at-most-once sets it aside."""
    if not outcome.in_doubt:
        return update
    if policy is InDoubtPolicy.REVIEW and update.status is LogStatus.PENDING:
        return replace(update, in_doubt=True, status=LogStatus.REVIEW, next_attempt_at=None,
                       detail=f"in doubt ({update.detail}); resend or count it failed")
    return replace(update, in_doubt=True)


def slowdown_row(slowdown: Slowdown) -> dict[str, Any]:
    """A slowdown as the delivery keeps it (JSON)."""
    return {"domain": slowdown.domain, "since": slowdown.since.isoformat(),
            "reason": slowdown.reason, "deepest": slowdown.deepest,
            "recovered_at": slowdown.recovered_at.isoformat()
            if slowdown.recovered_at else None}


class Engine:
    """Sends one delivery at a time for one sender identity (`worker_id`, owner of leases)."""

    def __init__(self, store: SendStore, connect: Callable[[HostPort], Transport], *,
                 planner: Callable[[Delivery], Plan], sending: SendingSettings,
                 archiver: ArchiveLoop | None, archive_drain_seconds: float,
                 clock: Callable[[], datetime], router: Router, shaper: Shaper,
                 worker_id: str = ""):
        self._store = store
        self._connect = connect
        self._router = router
        self._shaper = shaper
        self._pipeline = 16  # messages handed to a connection at once (PIPELINING)
        self._planner = planner
        self._sending = sending
        self._archiver = archiver
        self._drain = archive_drain_seconds
        self._clock = clock
        self.worker_id = worker_id
        self._updates: list[LogUpdate] = []
        self._to_record = asyncio.Event()
        self.liveness: Liveness | None = None  # ticked as the run makes progress
        self._state = DeliveryState.SENDING
        self._state_read_at = 0.0
        self._halt: asyncio.Event | None = None
        self._abort: asyncio.Event | None = None
        self._taken: dict[int, bool] = {}  # log id → on the wire, for the messages taken
        self._faults_in_row = 0

    async def run(self, delivery_id: int, *, progress: Progress | None = None,
                  halt: asyncio.Event | None = None, abort: asyncio.Event | None = None,
                  archive: bool = True) -> RunSummary:
        """Send a delivery in state `sending` until nothing is due soon, then return.

        `halt` set (SIGTERM, a first Ctrl-C): in-flight messages finish and are recorded, the
        rest is released. `abort` set (a second Ctrl-C): the run stops at once; messages on the
        wire are counted in doubt (`doubtful` policy), the rest is released.
        `archive=False`: the caller runs the archive outbox worker itself.
        """
        delivery = self._store.get_delivery(delivery_id)
        if delivery.state is not DeliveryState.SENDING:
            raise StateError(f"delivery #{delivery_id} is {delivery.state}, not sending")
        plan = self._planner(delivery)
        if delivery.properties.email_bcc and self._archiver is None:
            raise ConfigError("the delivery asks for Email BCC but archive.enabled is off; "
                              "nothing was sent (the administrator must switch it back on)")
        self._halt, self._abort = halt, abort
        self._faults_in_row = 0
        self._taken = {}
        summary = RunSummary(delivery_id, delivery.state)
        finish = asyncio.Event()
        if archive and self._archiver is not None:
            self._archiver.liveness = self.liveness
        archiving = (asyncio.create_task(self._archiver.run(
            delivery_id=delivery_id, finish=finish, drain_seconds=self._drain, halt=halt,
            worker=self.worker_id))
            if archive and self._archiver is not None else None)
        try:
            if self._clock() >= plan.valid_until:
                self._expire(delivery_id)
            else:
                try:
                    if await self._unless_aborted(self._send_all(plan, summary, progress)):
                        self._left_on_abort(summary)
                except BaseExceptionGroup as errors:  # the database gave up: say just that
                    lost = errors.subgroup(DatabaseUnavailable)
                    if lost is None:
                        raise
                    raise _leaf(lost) from errors
        finally:
            finish.set()
            if archiving is not None:
                await self._unless_aborted(archiving)
        if abort is not None and abort.is_set():
            summary.interrupted = "stopped"
        elif halt is not None and halt.is_set():
            summary.interrupted = "halted"
        self._finish_if_done(delivery_id)
        current = self._store.get_delivery(delivery_id)
        summary.state = current.state
        if current.state is DeliveryState.PAUSED:
            summary.paused_reason = current.last_error
        if archiving is not None and self._archiver is not None:
            summary.archived = self._archiver.archived
            summary.archive_pending = self._archiver.pending(delivery_id)
            summary.archive_fault = self._archiver.fault
        return summary

    async def _unless_aborted(self, work: Awaitable[None]) -> bool:
        """Run `work` to its end, or cancel it when `abort` is set first (True)."""
        task = asyncio.ensure_future(work)
        if self._abort is None:
            await task
            return False
        stopper = asyncio.ensure_future(self._abort.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return True
        task.result()  # its exception, if it failed
        return False

    def _left_on_abort(self, summary: RunSummary) -> None:
        """After an abort: messages on the wire are in doubt (the relay may have them), the
        ones taken but not yet written are given back unsent."""
        on_wire = [log_id for log_id, wire in self._taken.items() if wire]
        self._store.release([log_id for log_id, wire in self._taken.items() if not wire])
        self._store.abandon(on_wire, self._clock(),
                            review=self._sending.in_doubt is InDoubtPolicy.REVIEW)
        summary.in_doubt += len(on_wire)
        self._taken = {}

    def _finish_if_done(self, delivery_id: int) -> None:
        if self._store.next_due(delivery_id) is not None or \
                self._store.review_waiting(delivery_id) or \
                self._store.get_delivery(delivery_id).state is not DeliveryState.SENDING:
            return
        with contextlib.suppress(StateError):  # another worker finished it first
            self._store.move_delivery(delivery_id, DeliveryState.FINISHED, self._clock())

    def _expire(self, delivery_id: int) -> None:
        self._store.expire_pending(delivery_id, self._clock(), status=LogStatus.FAILED,
                                   reason=FailureReason.UNREACHABLE,
                                   detail="the delivery's validity ended")

    async def _send_all(self, plan: Plan, summary: RunSummary, progress: Progress | None) -> None:
        """Feed claimed logs to N connection workers; a worker's crash stops the run."""
        lanes: Lanes[Message] = Lanes(self._lane_capacity)
        fed = asyncio.Event()
        self._to_record = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self._sending.connections):
                    group.create_task(self._connection(lanes, plan, summary, progress))
                group.create_task(self._recorder(fed))
                try:
                    await self._feed(lanes, plan, summary)
                finally:
                    self._give_back(lanes)
                    await lanes.close()
                    fed.set()
                    self._to_record.set()
        finally:
            self._flush()
            summary.slowed = list(self._shaper.slowed())
            self._store.record_slowdowns(plan.delivery.id,
                                         [slowdown_row(s) for s in summary.slowed])

    def _give_back(self, lanes: Lanes[Message]) -> None:
        """Give back what no connection has taken yet (a pause, stop or halt came)."""
        unsent = [message.target.log_id for message in lanes.drain()]
        if unsent:
            self._store.release(unsent)

    async def _feed(self, lanes: Lanes[Message], plan: Plan, summary: RunSummary) -> None:
        delivery_id = plan.delivery.id
        lease = timedelta(seconds=self._sending.lease_seconds)
        review = self._sending.in_doubt is InDoubtPolicy.REVIEW
        while self._sending_allowed(delivery_id, force=True):
            self._tick()
            if review:
                self._store.review_doubtful(delivery_id, self._clock())
            targets = self._store.claim_due(delivery_id, self._clock(),
                                            self._sending.batch_size, lease,
                                            worker=self.worker_id)
            if targets:
                step = self._lane_capacity  # rendered and marked attempting in one write
                for start in range(0, len(targets), step):
                    if not self._sending_allowed(delivery_id):
                        self._store.release([t.log_id for t in targets[start:]])
                        return
                    await self._hand_over(lanes, plan, targets[start:start + step], summary)
                continue
            await lanes.join()
            self._flush()
            now = self._clock()
            due = self._store.next_due(delivery_id, now)
            if due is None:
                return
            if due >= plan.valid_until:
                self._expire(delivery_id)
                return
            wait = (due - now).total_seconds()
            if wait > self._sending.wait_for_retries_seconds:
                return  # a later run picks them up
            await self._pause(max(wait, 0.01))

    async def _hand_over(self, lanes: Lanes[Message], plan: Plan, targets: list[Target],
                         summary: RunSummary) -> None:
        """Render a few targets, mark them attempting (one write), route and queue them."""
        messages: list[Message] = []
        for target in targets:
            try:
                messages.append(plan.render(target, self._clock()))
            except PostroomError as exc:
                self._updates.append(plan.unrenderable(target, exc))
        held = set(self._store.mark_attempting(
            [m.target.log_id for m in messages], worker=self.worker_id, now=self._clock(),
            lease=timedelta(seconds=self._sending.lease_seconds)))
        for message in messages:
            if message.target.log_id not in held:
                continue  # its lease ran out meanwhile (a database outage): another sender's
            domain = message.recipient.rpartition("@")[2].lower()
            route = await self._router.route(domain)
            if isinstance(route, NoRoute):  # no host takes mail for it: settled unsent
                self._settle(plan, message, route.outcome, summary, None)
                continue
            key = (self._shaper.key(domain), route.hosts)
            await lanes.put(key, domain, route, message)

    async def _connection(self, lanes: Lanes[Message], plan: Plan, summary: RunSummary,
                          progress: Progress | None) -> None:
        """One connection worker: takes a lane its domain's limits allow, sends its messages
        over a connection to the lane's hosts (a relay connection is kept for the next lane;
        one to a domain's own hosts is closed with its slot)."""
        conn: RoutedConnection | None = None
        used = 0  # messages over `conn`
        lane: Lane[Message] | None = None
        faults = 0
        try:
            while True:
                lane = await lanes.wait_for_lane(lambda ln: self._shaper.has_slot(ln.domain),
                                                 prefer=lane)
                if lane is None:
                    return
                async with self._shaper.connection(lane.domain):
                    if conn is None or conn.hosts != lane.route.hosts:
                        if conn is not None:
                            await conn.close()
                        conn, used = RoutedConnection(lane.route, self._connect), 0
                    while self._shaper.may_reuse(lane.domain, used):
                        limit = self._shaper.limits(lane.domain).messages_per_connection
                        batch = lanes.take(lane, min(self._share, limit - used))
                        if not batch:
                            break
                        self._taken.update((m.target.log_id, False) for m in batch)
                        batch = await self._paced(lanes, lane, batch, summary)
                        if not batch:
                            break
                        self._tick()
                        faults = await self._send_batch(conn, lanes, lane, batch, plan,
                                                        summary, progress, faults)
                        used += len(batch)
                        if faults:
                            await asyncio.sleep(min(5.0, 0.05 * 2 ** min(faults, 7)))
                            break  # let the lane go: its host may be down
                    if (not self._shaper.may_reuse(lane.domain, used)
                            or lane.route.source is not RouteSource.RELAY):
                        # Renewed for the next message; and a connection to a domain's own
                        # hosts counts against its limit for as long as it is open, so it is
                        # not kept once its slot is given back.
                        await conn.close()
                        conn, used = None, 0
                await lanes.notify()  # a connection slot of the lane's domain is free again
        finally:
            if conn is not None:
                await conn.close()

    async def _paced(self, lanes: Lanes[Message], lane: Lane[Message], batch: list[Message],
                     summary: RunSummary) -> list[Message]:
        """Hold the domain to its hourly limit: wait a little, or postpone the rest."""
        for index, _message in enumerate(batch):
            wait = self._shaper.reserve_message(lane.domain)
            if wait <= 0:
                continue
            if wait <= _LONGEST_PACING_WAIT:
                await asyncio.sleep(wait)
                continue
            self._shaper.give_back(lane.domain)
            later = batch[index:] + lanes.take(lane, len(lane.messages))
            until = self._clock() + timedelta(seconds=wait)
            self._store.postpone([m.target.log_id for m in later], until,
                                 detail=f"waiting for the hourly limit of {lane.domain}")
            for message in later:
                self._taken.pop(message.target.log_id, None)
            summary.postponed += len(later)
            await lanes.settled(len(later))
            return batch[:index]
        return batch

    async def _send_batch(self, conn: RoutedConnection, lanes: Lanes[Message],
                          lane: Lane[Message], batch: list[Message], plan: Plan,
                          summary: RunSummary, progress: Progress | None, faults: int) -> int:
        """Send, settle and record a batch; returns the connection's faults in a row."""
        try:
            self._taken.update((m.target.log_id, True) for m in batch)
            outcomes = await conn.send_batch(
                [(m.sender, m.recipient, m.data, m.smtputf8) for m in batch])
            held: list[int] = []  # relay faults: not an attempt, the relay's fault
            for message, outcome in zip(batch, outcomes, strict=True):
                if outcome.fault is not None and lane.route.source is RouteSource.RELAY:
                    held.append(message.target.log_id)
                    self._relay_fault(plan.delivery.id, outcome, summary)
                else:
                    self._settle(plan, message, outcome, summary, progress)
                    # A relay fault says nothing of the recipients' domain: not observed.
                    self._shaper.observe(lane.domain,
                                         outcome.reply.code if outcome.reply else None)
                self._taken.pop(message.target.log_id, None)
                fault = outcome.verdict is Verdict.DEFERRED and outcome.reply is None
                faults = faults + 1 if fault else 0
                self._watch_transport(plan.delivery.id, fault, outcome.text)
            self._hold(plan, held, summary)
        finally:
            await lanes.settled(len(batch))
        return faults

    def _relay_fault(self, delivery_id: int, outcome: Outcome, summary: RunSummary) -> None:
        """No session with the relay: the message was not handed over, and no recipient is to
        blame. Wrong credentials pause the delivery at once (retrying cannot help)."""
        summary.relay_faults += 1
        summary.relay_fault = f"{outcome.fault.label if outcome.fault else ''}: {outcome.text}"
        if outcome.fault is not Fault.AUTH or self._state is not DeliveryState.SENDING:
            return
        self._pause_delivery(delivery_id, f"paused: {summary.relay_fault}; fix smtp.username "
                             "and smtp.password, then "
                             f"`postroom deliveries resume {delivery_id}`")

    def _hold(self, plan: Plan, log_ids: list[int], summary: RunSummary) -> None:
        """Give back messages the relay could not take, unsent and with no attempt counted:
        due again after the retry period (`deliveries retry` or `resume` make them due now),
        or at once when the delivery paused for it."""
        if not log_ids:
            return
        if self._state is not DeliveryState.SENDING:
            self._store.release(log_ids)
            return
        until = self._clock() + plan.retry.retry_period
        self._store.postpone(log_ids, until, detail=RELAY_FAULT + summary.relay_fault)

    def _settle(self, plan: Plan, message: Message, outcome: Outcome, summary: RunSummary,
                progress: Progress | None) -> None:
        update = doubtful(plan.settle(message, outcome, self._clock()), outcome,
                          self._sending.in_doubt)
        self._updates.append(update)
        self._to_record.set()
        self._count(summary, update, progress)

    async def _pause(self, seconds: float) -> None:
        if self._halt is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._halt.wait(), timeout=seconds)

    @property
    def _lane_capacity(self) -> int:
        """Messages queued for the connections at most: four per connection (one pipelined
        batch at least)."""
        return max(self._sending.connections * 4, self._pipeline)

    @property
    def _share(self) -> int:
        """Messages one connection takes at a time: its share of the queue, so that every
        connection has work when the queue is full (one taking a whole pipeline's worth left
        three of four connections idle on a single-domain audience)."""
        return min(self._pipeline, max(1, self._lane_capacity // self._sending.connections))

    def _sending_allowed(self, delivery_id: int, *, force: bool = False) -> bool:
        """Whether to go on: not halted, and the delivery still `sending` (re-read every 0.5 s)."""
        if self._halt is not None and self._halt.is_set():
            return False
        now = time.monotonic()
        if force or now - self._state_read_at >= 0.5:
            self._state_read_at = now
            self._state = self._store.get_delivery(delivery_id).state
        return self._state is DeliveryState.SENDING

    @staticmethod
    def _count(summary: RunSummary, update: LogUpdate, progress: Progress | None) -> None:
        if update.status is LogStatus.SENT:
            summary.sent += 1
        elif update.status is LogStatus.FAILED:
            summary.failed += 1
        else:
            summary.deferred += 1
        summary.in_doubt += int(update.in_doubt)
        if progress is not None and update.status is not LogStatus.PENDING:
            progress(1)

    def _watch_transport(self, delivery_id: int, fault: bool, text: str) -> None:
        """Pause the delivery after N transport failures in a row, instead of burning its
        audience against a relay that is not there."""
        self._faults_in_row = self._faults_in_row + 1 if fault else 0
        limit = self._sending.pause_after_transport_failures
        if not limit or self._faults_in_row != limit:
            return
        self._pause_delivery(delivery_id, f"paused after {limit} transport failures in a row "
                             f"(last: {text}); fix the relay, then resume")

    def _pause_delivery(self, delivery_id: int, reason: str) -> None:
        """The delivery pauses itself, with `reason` for the operator (unless another move
        came first)."""
        with contextlib.suppress(StateError):
            self._store.move_delivery(delivery_id, DeliveryState.PAUSED, self._clock(),
                                      error=reason)
            self._state = DeliveryState.PAUSED
        self._state_read_at = 0.0  # the feed notices at once

    async def _recorder(self, fed: asyncio.Event) -> None:
        """Commit the connections' results as they arrive: each pipelined group as soon as its
        replies are in (with whatever else arrived meanwhile), or within record_delay_seconds,
        whatever any one connection is still waiting for. Ends once the feed has ended (the
        run's last results are written by `_send_all`)."""
        delay = self._sending.record_delay_seconds
        while not fed.is_set():
            await self._to_record.wait()
            if delay and not fed.is_set():
                await asyncio.sleep(delay)
            self._to_record.clear()
            self._flush()
            self._tick()

    def _tick(self) -> None:
        if self.liveness is not None:
            self.liveness.tick(SEND)

    def _flush(self) -> None:
        updates, self._updates = self._updates, []
        try:
            self._store.record(updates, self._clock())
        except BaseException:
            self._updates = updates + self._updates  # kept for the run's last write
            raise


def _leaf(group: BaseExceptionGroup[DatabaseUnavailable]) -> DatabaseUnavailable:
    first = group.exceptions[0]
    return _leaf(first) if isinstance(first, BaseExceptionGroup) else first
