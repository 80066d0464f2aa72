"""Reports: one delivery's report, non-deliverables across deliveries, the metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from postroom.app.context import AppContext
from postroom.app.operations import OperationsService
from postroom.archive.status import SinkFigures, read_sink_figures
from postroom.domain.models import ArchiveState, Delivery
from postroom.domain.outcomes import FailureReason
from postroom.storage.metrics import StoreMetrics, read_metrics
from postroom.storage.report_reads import Timeline, sent_timeline
from postroom.storage.workers import DoubtCounts

__all__ = ["RATE_WINDOW", "Metrics", "NonDeliverables", "Report", "ReportService"]

RATE_WINDOW = timedelta(minutes=5)  # the send rate is the messages sent in this window


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
    archive_sinks: list[SinkFigures] = field(default_factory=list)  # archive/status.py
    timeline: Timeline | None = None  # acceptances over time (None: nothing sent)

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
            "throughput_over_time": None if self.timeline is None else {
                "start": self.timeline.start.isoformat(),
                "bucket_seconds": self.timeline.bucket_seconds,
                "sent": self.timeline.counts},
            "archive": self.archive,
            "archive_sinks": [sink.to_json() for sink in self.archive_sinks],
            "slowed_domains": self.slowdowns,
            "relay_fault": {"messages_waiting": self.relay_waiting[0],
                            "detail": self.relay_waiting[1]} if self.relay_waiting[0] else None,
            "in_doubt": {"logs": self.doubt.logs, "events": self.doubt.events,
                         "review": self.doubt.review, "archive_copies": self.doubt.archive},
            "last_error": d.last_error,
        }


@dataclass(frozen=True)
class NonDeliverables:
    by_reason: dict[str, int]
    by_type: dict[str, int]
    by_domain: dict[str, int]  # the 20 domains with the most failures
    addresses: dict[str, int]  # addresses per status (quarantine, denylisted, ...)

    def to_json(self) -> dict[str, Any]:
        return {"failed_by_reason": self.by_reason, "failed_by_type": self.by_type,
                "failed_by_domain": self.by_domain, "addresses": self.addresses}


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

    def to_json(self) -> dict[str, Any]:
        return {"now": self.now.isoformat(), "logs_by_status": self.store.logs_by_status,
                "sent_total": self.store.sent_total, "send_rate": self.send_rate,
                "archive_by_state": self.store.archive_by_state,
                "oldest_pending_archive_age_seconds": self.oldest_pending_archive_age,
                "bounces_by_state": self.store.bounces_by_state,
                "live_workers": self.live_workers, "silent_workers": self.silent_workers,
                "leases": self.leases}


class ReportService:
    def __init__(self, ctx: AppContext, operations: OperationsService):
        self._ctx = ctx
        self._operations = operations

    def report(self, delivery_id: int, *, timeline: bool = True) -> Report:
        """The delivery's report. `timeline=False` leaves out the throughput over time (one
        more pass over the logs), for callers that poll the counts."""
        store = self._ctx.store
        delivery = store.get_delivery(delivery_id)
        by_status: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        by_type: Counter[str] = Counter()
        for status, failure_type, reason, count in store.log_counts(delivery_id):
            by_status[status] += count
            if reason is not None:
                by_reason[FailureReason(reason).label] += count
            if failure_type is not None:
                by_type[failure_type] += count
        by_domain: dict[str, dict[str, int]] = {}
        for domain, status, count in store.domain_counts(delivery_id):
            by_domain.setdefault(domain, {})[status] = count
        archive = {state.value: 0 for state in ArchiveState}
        archive.update(store.archive_counts(delivery_id).get(delivery_id, {}))
        first, last, sent = store.send_window(delivery_id)
        seconds = (last - first).total_seconds() if first and last else 0.0
        throughput = round(sent / seconds, 1) if seconds > 0 else None
        return Report(delivery, by_status, by_reason, by_type, by_domain, archive, throughput,
                      store.doubt_counts(delivery_id), store.slowdowns(delivery_id),
                      store.relay_waiting(delivery_id),
                      read_sink_figures(store, self._ctx.settings.archive, delivery_id),
                      sent_timeline(store.engine, delivery_id, first, last)
                      if timeline else None)

    def non_deliverables(self, *, since: datetime | None = None) -> NonDeliverables:
        """Failures across deliveries by type, reason and domain, and the quarantine."""
        by_reason: Counter[str] = Counter()
        by_type: Counter[str] = Counter()
        by_domain: Counter[str] = Counter()
        for failure_type, reason, domain, count in self._ctx.store.failure_counts(since=since):
            by_reason[FailureReason(reason).label if reason is not None else "none"] += count
            by_type[failure_type or "none"] += count
            by_domain[domain] += count
        return NonDeliverables(dict(by_reason), dict(by_type), dict(by_domain.most_common(20)),
                               self._ctx.store.address_counts())

    def metrics(self) -> Metrics:
        """What `GET /metrics` exposes, counted in the store now (any process agrees)."""
        operations = self._operations
        live = silent = leases = 0
        for worker in operations.workers(recent=timedelta(0)):
            if operations.worker_alive(worker):
                live += 1
                leases += worker.leases
            else:
                silent += 1
        now = self._ctx.now()
        return Metrics(read_metrics(self._ctx.store.engine, now=now, recent=RATE_WINDOW),
                       now=now, live_workers=live, silent_workers=silent, leases=leases)
