"""`GET /metrics`: Prometheus text, computed from the store at each scrape.

A custom collector (prometheus-client's `Collector`) asks `Postroom.metrics()` when it is
scraped, so the numbers are the store's, the same from whichever process serves them; nothing
is counted in memory (ADR 0018b). A registry of its own per app: no global registry.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from postroom.app import Postroom
from postroom.app.reports import Metrics
from postroom.domain.models import ArchiveState
from postroom.domain.states import LogStatus

__all__ = ["StoreCollector", "metrics_registry", "render_metrics"]


class StoreCollector(Collector):
    def __init__(self, postroom: Postroom):
        self._postroom = postroom

    def collect(self) -> Iterable[Metric]:
        return families(self._postroom.reports.metrics())


def families(m: Metrics) -> list[Metric]:
    """The metric families of one reading (pure: no store, no clock)."""
    messages = GaugeMetricFamily(
        "postroom_messages", "Delivery logs (one per message and recipient) by status.",
        labels=["status"])
    for status in LogStatus:
        messages.add_metric([status.value], m.store.logs_by_status.get(status.value, 0))
    sent = CounterMetricFamily(
        "postroom_messages_sent", "Messages accepted by the next hop (a later bounce does not "
        "subtract); rate() of it is the send rate.", value=m.store.sent_total)
    rate = GaugeMetricFamily(
        "postroom_send_rate_per_second", "Messages accepted per second over the last "
        "5 minutes.", value=m.send_rate)
    archive = GaugeMetricFamily("postroom_archive_copies", "Email BCC archive copies by state.",
                                labels=["state"])
    for state in ArchiveState:
        archive.add_metric([state.value], m.store.archive_by_state.get(state.value, 0))
    oldest = GaugeMetricFamily(
        "postroom_archive_oldest_pending_age_seconds", "Age of the oldest pending archive copy "
        "(0 when none is pending).", value=m.oldest_pending_archive_age)
    stored = GaugeMetricFamily("postroom_bounces", "Stored bounce mail by state.",
                               labels=["state"])
    for name in sorted({"new", "processed", "unattributed", "unrecognized",
                        *m.store.bounces_by_state}):
        stored.add_metric([name], m.store.bounces_by_state.get(name, 0))
    workers = GaugeMetricFamily("postroom_workers", "Registered senders (workers and one-off "
                                "sends) that have not stopped, by liveness.", labels=["state"])
    workers.add_metric(["alive"], m.live_workers)
    workers.add_metric(["silent"], m.silent_workers)
    leases = GaugeMetricFamily("postroom_worker_leases", "Logs and archive copies the live "
                               "senders hold (claimed, not yet recorded).", value=m.leases)
    return [messages, sent, rate, archive, oldest, stored, workers, leases]


def metrics_registry(postroom: Postroom) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)  # no store query at registration
    registry.register(StoreCollector(postroom))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
