"""What an operator can do, as one object the CLI (and later the web API) calls.

Built by `postroom.wiring.build()`; it holds the store, the settings parts it needs and a clock,
and runs the pipeline: audience → analyze → render → send → record → archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from postroom.accounts.actor import Actor
from postroom.accounts.audit import AuditLog
from postroom.accounts.guard import GuardedView, guarded
from postroom.accounts.service import AccountsService
from postroom.compose.charsets import charset_for
from postroom.compose.personalize import compile_content
from postroom.compose.template_limits import TemplateLimits
from postroom.compose.tokens import MIRROR, UNSUBSCRIBE, read_token
from postroom.delivery.analysis import AnalysisReport, analyze, static_checks
from postroom.delivery.archive import Archiver, ArchiveTarget, Transport
from postroom.delivery.audience import matcher, parse_filter
from postroom.delivery.engine import Engine, RunSummary
from postroom.delivery.plan import Planner
from postroom.delivery.shaping import Shaper
from postroom.delivery.worker import (
    Heartbeat,
    Worker,
    WorkerSummary,
    halting_on_signals,
    new_worker_id,
)
from postroom.domain.addresses import wire_address
from postroom.domain.models import (
    ArchiveState,
    Audience,
    Delivery,
    DeliveryLog,
    Recipient,
    Template,
)
from postroom.domain.outcomes import RELAY_FAULT, FailureReason, Outcome, Verdict
from postroom.domain.properties import Properties, parse_properties
from postroom.domain.states import DeliveryState, LogStatus
from postroom.errors import InputError, NotFoundError, StateError, TemplateError
from postroom.inbound.service import BounceService
from postroom.recipients.importer import ImportReport, import_csv
from postroom.settings import Settings
from postroom.storage.accounts import AccountStore
from postroom.storage.metrics import StoreMetrics, oldest_pending_archive, read_metrics
from postroom.storage.retrying import RetryingStore
from postroom.storage.sql import SqlStore
from postroom.storage.workers import DoubtCounts, WorkerRow
from postroom.transport.routed import RoutedConnection
from postroom.transport.routing import HostPort, NoRoute, Router

__all__ = ["BUILTIN_TEMPLATE", "Postroom", "load_template_file", "parse_reason"]

BUILTIN_TEMPLATE = "default"
_BUILTIN_PROPS = Properties(
    subject="A message for {{ recipient.first_name or recipient.email }}",
    html=(
        "<html><body><p>Hello {{ recipient.first_name or recipient.email }},</p>"
        "<p>This message was sent by Postroom.</p></body></html>"
    ),
    text=(
        "Hello {{ recipient.first_name or recipient.email }},\n\n"
        "This message was sent by Postroom.\n"
    ),
)
_FILE_KEYS = {"html_file": "html", "text_file": "text"}


def parse_reason(text: str) -> FailureReason:
    """A failure reason from its code (`1`) or its name (`user unknown`, `user_unknown`)."""
    value = text.strip().lower().replace("_", " ").replace("-", " ")
    for reason in FailureReason:
        if value in (str(reason.value), reason.label):
            return reason
    raise InputError(f"{text!r} is not a failure reason; use a code or a name: "
                     + ", ".join(f"{r.value} ({r.label})" for r in FailureReason))


def _refuse_problems(name: str, props: Properties, limits: TemplateLimits) -> None:
    problems = Postroom.content_problems(props, limits)
    if problems:
        raise TemplateError(f"template {name!r} does not compile:\n  " + "\n  ".join(problems))


def load_template_file(path: Path) -> tuple[str | None, dict[str, Any]]:
    """Read a template definition: TOML whose html_file/text_file point to content files."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    name = data.pop("name", None)
    for key, prop in _FILE_KEYS.items():
        if key in data:
            data[prop] = read_content(path.parent / str(data.pop(key)), key)
    return name, data


def read_content(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what}: {path} not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{what}: {path} is not valid UTF-8 (byte {exc.start})") from None


@dataclass(frozen=True)
class MirrorPage:
    html: bytes
    charset: str
    expired: bool


@dataclass(frozen=True)
class ProofReport:
    delivery_id: int
    number: int
    sample: str
    results: list[tuple[str, Verdict, str]]

    def to_json(self) -> dict[str, Any]:
        return {"delivery": self.delivery_id, "proof": self.number, "sample": self.sample,
                "sent": [{"to": to, "result": verdict, "reply": reply}
                         for to, verdict, reply in self.results]}


@dataclass
class Report:
    delivery: Delivery
    by_status: Counter[str]
    by_reason: Counter[str]
    by_type: Counter[str]
    by_domain: dict[str, dict[str, int]]
    archive: dict[str, int]
    throughput: float | None  # messages sent per second, first to last acceptance
    doubt: DoubtCounts
    slowdowns: list[dict[str, Any]]  # domains slowed down for their temporary failures
    relay_waiting: tuple[int, str] = (0, "")  # messages held by a relay fault, the latest

    def to_json(self) -> dict[str, Any]:
        d = self.delivery
        return {
            "delivery": d.id,
            "name": d.name,
            "state": d.state,
            "email_bcc": d.properties.email_bcc,
            "total": sum(self.by_status.values()),
            "by_status": dict(self.by_status),
            "by_reason": dict(self.by_reason),
            "by_type": dict(self.by_type),
            "by_domain": self.by_domain,
            "throughput_per_second": self.throughput,
            "archive": self.archive,
            "slowed_domains": self.slowdowns,
            "relay_fault": {"messages_waiting": self.relay_waiting[0],
                            "detail": self.relay_waiting[1]} if self.relay_waiting[0] else None,
            "in_doubt": {"logs": self.doubt.logs, "events": self.doubt.events,
                         "review": self.doubt.review, "archive_copies": self.doubt.archive},
            "last_error": d.last_error,
        }


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


RATE_WINDOW = timedelta(minutes=5)  # the send rate is the messages sent in this window


@dataclass(frozen=True)
class Metrics:
    store: StoreMetrics
    now: datetime
    live_workers: int
    silent_workers: int  # registered, not stopped, no heartbeat for two lease periods
    leases: int  # logs and archive copies the live senders hold

    @property
    def send_rate(self) -> float:
        """Messages accepted per second over the last RATE_WINDOW."""
        return self.store.sent_recent / RATE_WINDOW.total_seconds()

    @property
    def oldest_pending_archive_age(self) -> float:
        oldest = self.store.archive_oldest_pending
        return max(0.0, (self.now - oldest).total_seconds()) if oldest else 0.0


class Postroom:
    def __init__(self, store: SqlStore, settings: Settings, *, planner: Planner,
                 connect: Callable[[HostPort], Transport], router: Router,
                 connect_archive: Callable[[], Transport], clock: Callable[[], datetime]):
        self.store = store
        self.settings = settings
        self.planner = planner
        self._connect = connect
        self.router = router
        self._connect_archive = connect_archive
        self.clock = clock
        store.ensure_template(BUILTIN_TEMPLATE, _BUILTIN_PROPS, builtin=True, now=clock())

    def _senders_store(self) -> Any:
        """The store as senders use it: each call retried through database faults for up to
        sending.database_wait_seconds (storage/retrying.py); one per sending process."""
        return RetryingStore(self.store, wait_seconds=self.settings.sending.database_wait_seconds)

    @cached_property
    def bounces(self) -> BounceService:
        """Bounce intake, processing, rules and quarantine."""
        return BounceService(
            self.store, secret=self.planner.links.secret,
            clock=lambda: self.clock(),  # read at each call: tests move `clock`
            attribution_window=timedelta(days=self.settings.quarantine.attribution_window_days))

    @cached_property
    def accounts(self) -> AccountsService:
        """Users, API tokens, log-in and the audit listing."""
        return AccountsService(AccountStore(self.store.engine), clock=lambda: self.clock())

    @cached_property
    def audit_log(self) -> AuditLog:
        return AuditLog(self.accounts.store, lambda: self.clock())

    def acting_as(self, actor: Actor) -> GuardedView:
        """This container as `actor` may use it: every service call checked and audited."""
        return guarded(self, actor, self.audit_log)

    # -- recipients ---------------------------------------------------------------------------

    def import_recipients(self, path: Path, *, encoding: str = "utf-8",
                          progress: Callable[[int], None] | None = None) -> ImportReport:
        return import_csv(path, self.store, now=self.clock(), encoding=encoding,
                          progress=progress)

    # -- templates ----------------------------------------------------------------------------

    def create_template(self, name: str, data: dict[str, Any]) -> Template:
        """A new template; content that does not compile is refused, every problem named."""
        props = parse_properties(data, source=f"template {name!r}")
        _refuse_problems(name, props, self.settings.templates)
        return self.store.create_template(name, props, self.clock())

    def update_template(self, name: str, data: dict[str, Any]) -> Template:
        current = self.store.get_template(name)
        props = current.properties.override(data)
        _refuse_problems(name, props, self.settings.templates)
        return self.store.update_template(name, props, self.clock())

    def duplicate_template(self, name: str, new_name: str) -> Template:
        source = self.store.get_template(name)
        return self.store.create_template(new_name, source.properties, self.clock())

    @staticmethod
    def content_problems(props: Properties,
                         limits: TemplateLimits | None = None) -> list[str]:
        """Syntax errors of a template's content, the first of each field with its line
        (templates saved before they were refused may have some), and sources past `limits`."""
        problems: list[str] = []
        for field_name in ("subject", "html", "text"):
            sources = {"subject": "", "html": "", "text": ""}
            sources[field_name] = getattr(props, field_name)
            try:
                compile_content(subject=sources["subject"], html=sources["html"],
                                text=sources["text"], limits=limits)
            except TemplateError as exc:
                problems.append(str(exc))
        return problems

    def template_changed_since(self, delivery: Delivery) -> datetime | None:
        """When the delivery's template was last changed, if after the delivery was made from
        it (the delivery keeps its own copy, DESIGN.md §1); None otherwise or if it is gone."""
        try:
            template = self.store.get_template(delivery.template_name)
        except NotFoundError:
            return None
        changed = template.updated_at
        return changed if changed is not None and changed > delivery.created_at else None

    # -- deliveries ---------------------------------------------------------------------------

    def create_delivery(self, template: str, *, name: str | None = None,
                        overrides: dict[str, Any] | None = None,
                        filters: list[str] | None = None,
                        list_file: Path | None = None) -> tuple[Delivery, ImportReport | None]:
        """Copy a template's properties, apply overrides, and set the audience."""
        source = self.store.get_template(template)
        props = source.properties.override(overrides or {})
        for text in filters or []:
            parse_filter(text)
        if filters and list_file:
            raise InputError("choose either filters or a list file for the audience, not both")
        audience = (Audience("list", source=str(list_file)) if list_file
                    else Audience("filter", tuple(filters)) if filters else Audience())
        report: ImportReport | None = None
        if list_file is not None:
            report = import_csv(list_file, self.store, now=self.clock(), keep_emails=True)
        delivery = self.store.create_delivery(
            name=name or f"{template} {self.clock():%Y-%m-%d %H:%M}", template_name=template,
            props=props, audience=audience, salt=secrets.token_hex(8), now=self.clock())
        if report is not None:
            ids = self.store.recipient_ids(report.emails)
            self.store.set_audience_list(delivery.id, [ids[e] for e in report.emails])
            report.emails.clear()
        return delivery, report

    def analyze(self, delivery_id: int) -> AnalysisReport:
        self.store.sweep_addresses(self.clock())  # counters reset, mailbox-full releases
        return analyze(self.store, delivery_id, planner=self.planner,
                       archive_available=self.settings.archive.enabled, now=self.clock())

    def send(self, delivery_id: int, *, progress: Callable[[int], None] | None = None,
             on_analyzed: Callable[[AnalysisReport], None] | None = None,
             halt: asyncio.Event | None = None, abort: asyncio.Event | None = None,
             on_signal: Callable[[bool], None] | None = None) -> RunSummary:
        """Send a delivery: analyze first if needed, then send what is due.

        Runs in this process (no worker needed); it registers as a sender like a worker does.
        Given `halt`, SIGINT and SIGTERM set it (in-flight messages finish); a second one sets
        `abort` (stop at once); `on_signal(first)` hears each.
        """
        self.start(delivery_id, on_analyzed=on_analyzed)
        sending = self._send(delivery_id, progress, halt, abort)
        return asyncio.run(sending if halt is None else halting_on_signals(
            halt, sending, abort=abort, notify=on_signal))

    def start(self, delivery_id: int, *,
              on_analyzed: Callable[[AnalysisReport], None] | None = None) -> Delivery:
        """Analyze if needed and move the delivery to `sending`, for workers to pick up."""
        delivery = self.store.get_delivery(delivery_id)
        if delivery.state in (DeliveryState.EDITING, DeliveryState.FAILED):
            report = self.analyze(delivery_id)
            if on_analyzed is not None:
                on_analyzed(report)
            if not report.ok:
                raise InputError(f"analysis of delivery #{delivery_id} failed:\n"
                                 + "\n".join(report.errors))
            delivery = self.store.get_delivery(delivery_id)
        if delivery.state is DeliveryState.READY:
            self.store.move_delivery(delivery_id, DeliveryState.SENDING, self.clock())
        elif delivery.state is not DeliveryState.SENDING:
            raise StateError(f"delivery #{delivery_id} is {delivery.state}; "
                             + ("resume it first" if delivery.state is DeliveryState.PAUSED
                                else "it cannot be sent"))
        return self.store.get_delivery(delivery_id)

    async def _send(self, delivery_id: int, progress: Callable[[int], None] | None,
                    halt: asyncio.Event | None, abort: asyncio.Event | None) -> RunSummary:
        store = self._senders_store()
        engine = self._engine(store)
        async with Heartbeat(store, engine.worker_id, kind="send", lease=self._lease,
                             clock=self.clock) as heartbeat:
            engine.liveness = heartbeat.liveness
            heartbeat.delivery_id = delivery_id
            summary = await engine.run(delivery_id, progress=progress, halt=halt,
                                       abort=abort)
            heartbeat.sent = summary.sent
        return summary

    def work(self, halt: asyncio.Event, *, until_idle: bool = False,
             on_run: Callable[[RunSummary], None] | None = None) -> WorkerSummary:
        """`postroom worker`: send every delivery in state `sending`, until `halt`."""
        store = self._senders_store()
        worker = Worker(store, self._engine(store), self._archiver(store), lease=self._lease,
                        poll_seconds=self.settings.sending.worker_poll_seconds, clock=self.clock)
        return asyncio.run(halting_on_signals(
            halt, worker.run(halt, until_idle=until_idle, on_run=on_run)))

    def health(self) -> Health:
        """What a monitor wants to know: is the database there, is anyone sending what is
        due, and is anything stuck (paused by a fault, archive copies failing)."""
        problems: list[str] = []
        notes: list[str] = []
        try:
            deliveries = self.store.list_deliveries()
            senders = self.workers()
            live = [w for w in senders if self.worker_alive(w)]
            archive = Counter[str]()
            for states in self.store.archive_counts().values():
                archive.update(states)
            due = self.store.next_sending_delivery(self.clock() - self._lease)
            backlog = self._archive_backlog_problems()
            waiting = {d.id: self.store.relay_waiting(d.id) for d in deliveries
                       if d.state in (DeliveryState.SENDING, DeliveryState.PAUSED)}
            archive_waiting, archive_fault = self.store.archive_relay_waiting()
            stuck = self.store.stuck_archive(self.clock(), {w.id for w in live})
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
        oldest = oldest_pending_archive(self.store.engine)
        limit = timedelta(minutes=self.settings.archive.max_pending_age_minutes)
        if oldest is None or self.clock() - oldest <= limit:
            return []
        minutes = (self.clock() - oldest).total_seconds() / 60
        return [f"the oldest pending archive copy waits for {minutes:.0f} min (more than "
                f"archive.max_pending_age_minutes = {limit.total_seconds() / 60:g}): is the "
                "archive relay taking copies? see `postroom archive status`"]

    def metrics(self) -> Metrics:
        """What `GET /metrics` exposes, counted in the store now (any process agrees)."""
        live = silent = leases = 0
        for worker in self.workers(recent=timedelta(0)):
            if self.worker_alive(worker):
                live += 1
                leases += worker.leases
            else:
                silent += 1
        return Metrics(read_metrics(self.store.engine, now=self.clock(), recent=RATE_WINDOW),
                       now=self.clock(), live_workers=live, silent_workers=silent,
                       leases=leases)

    def workers(self, *, recent: timedelta = timedelta(hours=1)) -> list[WorkerRow]:
        """Senders that are running, and those that stopped within `recent`."""
        return self.store.list_workers(self.clock(), include_stopped_since=self.clock() - recent)

    def worker_alive(self, row: WorkerRow) -> bool:
        return self.worker_state(row) == "alive"

    def worker_state(self, row: WorkerRow) -> str:
        """alive / silent / dead / stopped / failed (WorkerRow.state), with the process
        looked up when the sender runs on this host."""
        return row.state(self.clock(), self._lease, running=_process_running(row))

    def _watch_senders(self, senders: list[WorkerRow], live: list[WorkerRow],
                       problems: list[str], notes: list[str]) -> None:
        """Problems: a sender whose loop died (within the last hour) and no live sender of its
        kind started since; a silent one (registered, its process there or unknown, no beat).
        A dead one (its process gone) is a note: its claims run out by themselves."""
        for row in senders:
            state = self.worker_state(row)
            age = (self.clock() - row.heartbeat_at).total_seconds()
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

    def resolve_review(self, delivery_id: int, *, resend: bool) -> int:
        """Logs set aside as in doubt (at-most-once): send them again, or count them failed.

        A delivery waits in `sending` while logs are in review; once none is left and nothing
        is pending it finishes.
        """
        count = self.store.resolve_review(delivery_id, resend=resend, now=self.clock())
        if (self.store.get_delivery(delivery_id).state is DeliveryState.SENDING
                and self.store.next_due(delivery_id) is None
                and not self.store.review_waiting(delivery_id)):
            with contextlib.suppress(StateError):
                self.store.move_delivery(delivery_id, DeliveryState.FINISHED, self.clock())
        return count

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self.settings.sending.lease_seconds)

    def pending_count(self, delivery_id: int) -> int:
        return sum(n for status, _, _, n in self.store.log_counts(delivery_id)
                   if status == LogStatus.PENDING)

    def pause(self, delivery_id: int) -> Delivery:
        return self.store.move_delivery(delivery_id, DeliveryState.PAUSED, self.clock())

    def resume(self, delivery_id: int) -> Delivery:
        """Send again; messages a relay fault held back are due at once (the fault that
        paused the delivery was fixed, or the operator wants to see)."""
        delivery = self.store.move_delivery(delivery_id, DeliveryState.SENDING, self.clock(),
                                            error="")
        self.store.retry_now(delivery_id, self.clock(), relay_only=True)
        return delivery

    def retry(self, delivery_id: int) -> int:
        """`deliveries retry`: messages waiting for a later attempt because no connection
        could be had (relay faults, connection faults, hourly limits) are due now; returns
        how many. Sent, failed, cancelled and in-review logs are never touched, nor ones a
        live sender holds, nor ones a recipient's server deferred."""
        self.store.get_delivery(delivery_id)
        return self.store.retry_now(delivery_id, self.clock())

    def stop(self, delivery_id: int) -> Delivery:
        delivery = self.store.move_delivery(delivery_id, DeliveryState.STOPPED, self.clock())
        self.store.expire_pending(delivery_id, self.clock(), status=LogStatus.CANCELLED,
                                  reason=None, detail="the delivery was stopped")
        return delivery

    def report(self, delivery_id: int) -> Report:
        delivery = self.store.get_delivery(delivery_id)
        by_status: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        by_type: Counter[str] = Counter()
        for status, failure_type, reason, count in self.store.log_counts(delivery_id):
            by_status[status] += count
            if reason is not None:
                by_reason[FailureReason(reason).label] += count
            if failure_type is not None:
                by_type[failure_type] += count
        by_domain: dict[str, dict[str, int]] = {}
        for domain, status, count in self.store.domain_counts(delivery_id):
            by_domain.setdefault(domain, {})[status] = count
        archive = {state.value: 0 for state in ArchiveState}
        archive.update(self.store.archive_counts(delivery_id).get(delivery_id, {}))
        first, last, sent = self.store.send_window(delivery_id)
        seconds = (last - first).total_seconds() if first and last else 0.0
        throughput = round(sent / seconds, 1) if seconds > 0 else None
        return Report(delivery, by_status, by_reason, by_type, by_domain, archive, throughput,
                      self.store.doubt_counts(delivery_id), self.store.slowdowns(delivery_id),
                      self.store.relay_waiting(delivery_id))

    def resend(self, delivery_id: int, *, reasons: list[int] | None = None,
               name: str | None = None) -> Delivery:
        """A follow-up delivery (same content and settings) to the recipients whose logs
        failed (with one of `reasons`) and whose address is not in quarantine now."""
        source = self.store.get_delivery(delivery_id)
        targets = self.store.failed_recipients(delivery_id, reasons)
        if not targets:
            raise InputError(f"delivery #{delivery_id} has no failed recipient to resend to"
                             + (f" with reasons {reasons}" if reasons else ""))
        delivery = self.store.create_delivery(
            name=name or f"{source.name} (resend)", template_name=source.template_name,
            props=source.properties, audience=Audience("list", source=f"resend of #{source.id}"),
            salt=secrets.token_hex(8), now=self.clock())
        self.store.set_audience_list(delivery.id, targets)
        return delivery

    def non_deliverables(self, *, since: datetime | None = None) -> dict[str, Any]:
        """Failures across deliveries by type, reason and domain, and the quarantine."""
        by_reason: Counter[str] = Counter()
        by_type: Counter[str] = Counter()
        by_domain: Counter[str] = Counter()
        for failure_type, reason, domain, count in self.store.failure_counts(since=since):
            by_reason[FailureReason(reason).label if reason is not None else "none"] += count
            by_type[failure_type or "none"] += count
            by_domain[domain] += count
        quarantine = self.store.address_counts()
        return {"failed_by_reason": dict(by_reason), "failed_by_type": dict(by_type),
                "failed_by_domain": dict(by_domain.most_common(20)),
                "addresses": quarantine}

    def logs(self, delivery_id: int, *, status: str | None = None,
             reason: str | int | None = None, archive: str | None = None,
             **filters: Any) -> list[DeliveryLog]:
        """A delivery's logs; a status, reason (code or name) or archive state that does not
        exist is refused with the valid ones, rather than giving an empty list."""
        self.store.get_delivery(delivery_id)
        if status is not None and status not in set(LogStatus):
            raise InputError(f"--status {status!r}: not a log status; use one of "
                             + ", ".join(LogStatus))
        archives = [*ArchiveState, "none"]
        if archive is not None and archive not in archives:
            raise InputError(f"--archive {archive!r}: not an archive state; use one of "
                             + ", ".join(archives))
        code = None if reason is None else parse_reason(str(reason)).value
        return self.store.list_logs(delivery_id, status=status, reason=code, archive=archive,
                                    **filters)

    # -- proofs, mirror pages, unsubscribe -----------------------------------------------------

    def proof(self, delivery_id: int, *, to: list[str] | None = None,
              recipient: str | None = None) -> ProofReport:
        """Send proof #N of a delivery now: never archived, never in its delivery log."""
        delivery = self.store.get_delivery(delivery_id)
        plan = self.planner(delivery)
        problems = [p for p in static_checks(plan, archive_available=True)]
        if problems:
            raise InputError("the delivery cannot be proofed:\n" + "\n".join(problems))
        addresses = to or list(delivery.properties.proof_addresses)
        if not addresses:
            raise InputError("no proof address: pass --to or set the proof_addresses property")
        sample = self._sample(delivery, recipient)
        for address in addresses:  # fails before a proof number is used up
            plan.render_proof(sample, address, 0, self.clock())
        number = self.store.next_proof_number(delivery_id)
        messages = [plan.render_proof(sample, address, number, self.clock())
                    for address in addresses]
        sender = wire_address(plan.errors_to).address

        async def send_all() -> list[Outcome]:
            outcomes: list[Outcome] = []
            for data, wire in messages:
                route = await self.router.route(wire.address.rpartition("@")[2])
                if isinstance(route, NoRoute):
                    outcomes.append(route.outcome)
                    continue
                connection = RoutedConnection(route, self._connect)
                try:
                    outcomes.append(await connection.send(sender, wire.address, data,
                                                          smtputf8=wire.smtputf8))
                finally:
                    await connection.close()
            return outcomes

        outcomes = asyncio.run(send_all())
        return ProofReport(delivery_id, number, sample.email,
                           [(a, o.verdict, o.text) for a, o in zip(addresses, outcomes,
                                                                  strict=True)])

    def _sample(self, delivery: Delivery, email: str | None) -> Recipient:
        if email is not None:
            found = self.store.recipient_by_email(email)
            if found is None:
                raise NotFoundError(f"no recipient {email!r}")
            return found
        wanted = matcher(delivery.audience.filters)
        for candidate in self.store.iter_audience(delivery, batch_size=50):
            if wanted(candidate) and not candidate.opted_out:
                return candidate
        raise InputError("the delivery's audience is empty: name a sample with --recipient")

    def mirror_url(self, log_id: int) -> str:
        """The URL of one message's mirror page (how `id_only` pages are reached)."""
        if self.store.mirror_page(log_id) is None:
            log = self.store.get_log(log_id)
            raise NotFoundError(f"delivery log #{log_id} ({log.status}) has no mirror page")
        return self.planner.links.mirror_url(log_id)

    def open_mirror(self, token: str) -> MirrorPage | None:
        """The page a mirror link names: None if the token does not verify or no page."""
        log_id = read_token(self.planner.links.secret, MIRROR, token)
        page = None if log_id is None else self.store.mirror_page(log_id)
        if page is None:
            return None
        html, expires_at, delivery = page
        charset = charset_for(delivery.properties.charset).mime
        return MirrorPage(html, charset, expired=expires_at <= self.clock())

    def purge_mirrors(self) -> int:
        return self.store.purge_mirror_pages(self.clock())

    def unsubscribe(self, token: str) -> Recipient | None:
        """Opt out the recipient an unsubscribe link names; None if the token does not verify."""
        log_id = read_token(self.planner.links.secret, UNSUBSCRIBE, token)
        recipient = None if log_id is None else self.store.log_recipient(log_id)
        if recipient is not None:
            self.store.opt_out(recipient.id, self.clock())
        return recipient

    def check_unsubscribe(self, token: str) -> Recipient | None:
        log_id = read_token(self.planner.links.secret, UNSUBSCRIBE, token)
        return None if log_id is None else self.store.log_recipient(log_id)

    # -- archive ------------------------------------------------------------------------------

    def archive_flush(self, *, delivery_id: int | None = None, wait_seconds: float = 30.0,
                      retry_failed: bool = False) -> int:
        """Send pending archive copies now; returns how many are still pending afterwards."""
        archiver = self._archiver()
        if archiver is None:
            raise StateError("Email BCC is not enabled on this instance (archive.enabled)")
        if retry_failed:
            self.store.retry_failed_archive(self.clock(), delivery_id)

        async def flush() -> None:
            finish = asyncio.Event()
            finish.set()
            await archiver.run(delivery_id=delivery_id, finish=finish, drain_seconds=wait_seconds)

        self.store.reset_archive_schedule(self.clock(), delivery_id)
        asyncio.run(flush())
        return archiver.pending(delivery_id)

    # -- wiring of the engine -----------------------------------------------------------------

    def _archiver(self, store: Any = None) -> Archiver | None:
        archive = self.settings.archive
        if archive.address is None:
            return None
        return Archiver(
            store or self._senders_store(), self._connect_archive,
            target=ArchiveTarget(archive.address, archive.envelope_sender),
            connections=archive.connections, max_backoff=archive.max_backoff_seconds,
            clock=self.clock, lease=self._lease, batch_size=50)

    def _engine(self, store: Any) -> Engine:
        return Engine(store, self._connect, planner=self.planner,
                      sending=self.settings.sending, archiver=self._archiver(store),
                      archive_drain_seconds=self.settings.archive.drain_seconds,
                      clock=self.clock, router=self.router,
                      shaper=Shaper(self.settings.shaping, clock=self.clock),
                      worker_id=new_worker_id())


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
