"""Routing and per-domain traffic shaping, with capture servers standing for domains
(static routes point each domain at its own server)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from postroom.app import Postroom
from postroom.domain.states import DeliveryState, LogStatus
from postroom.testing.smtp_server import CaptureServer, Received, Script, Sleep
from tests.conftest import write_csv


def _sessions(messages: list[Received]) -> dict[str, list[float]]:
    """Acceptance times of each client connection (by its source port)."""
    sessions: dict[str, list[float]] = defaultdict(list)
    for message in messages:
        sessions[message.peer].append(message.received_at)
    return sessions


def _most_at_once(sessions: dict[str, list[float]]) -> int:
    spans = [(min(times), max(times)) for times in sessions.values()]
    return max(sum(1 for s, e in spans if s <= start <= e) for start, _ in spans)


def _delivery(postroom: Postroom, tmp_path: Path, domains: dict[str, int]) -> int:
    rows = [{"email": f"u{i:02d}@{domain}"} for domain, n in domains.items() for i in range(n)]
    postroom.recipients.import_recipients(write_csv(tmp_path / "s.csv", rows))
    postroom.templates.create_template("t", {"subject": "Hi", "text": "Hello\n"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    return delivery.id


def test_each_domain_is_held_to_its_own_limits(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    slow = Script().on_data(lambda _: True, Sleep(0.02))
    relay = capture()
    narrow, wide = capture(script=slow), capture(script=Script().on_data(lambda _: True,
                                                                          Sleep(0.02)))
    postroom = make_postroom(
        sqlite_url, relay, bcc=False, sending={"connections": 6},
        routing={"routes": {"narrow.example": f"127.0.0.1:{narrow.port}",
                            "wide.example": f"127.0.0.1:{wide.port}"}},
        shaping={"default": {"max_connections": 4},
                 "domains": {"narrow.example": {"max_connections": 1,
                                                "messages_per_connection": 5}}})
    delivery_id = _delivery(postroom, tmp_path, {"narrow.example": 30, "wide.example": 60})
    assert asyncio.run(postroom.sending.send(delivery_id)).state is DeliveryState.FINISHED
    assert relay.messages == [], "static routes take both domains past the relay"
    assert len(narrow.messages) == 30 and len(wide.messages) == 60

    # Counted by the servers from connect to close: an idle connection kept open counts too.
    assert narrow.most_connections == 1
    assert 2 <= wide.most_connections <= 4
    narrow_sessions = _sessions(narrow.messages)
    assert _most_at_once(narrow_sessions) == 1
    assert max(len(times) for times in narrow_sessions.values()) <= 5
    assert len(narrow_sessions) >= 6
    wide_sessions = _sessions(wide.messages)
    assert 2 <= _most_at_once(wide_sessions) <= 4


def test_an_idle_connection_to_a_domain_counts_against_its_limit(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    # Claims of two logs at a time starve the lane now and then: a worker whose lane runs dry
    # gives its slot back, and must not keep its connection open while another worker opens one.
    relay, domain = capture(), capture()
    postroom = make_postroom(
        sqlite_url, relay, bcc=False, sending={"connections": 6, "batch_size": 2},
        routing={"routes": {"own.example": f"127.0.0.1:{domain.port}"}},
        shaping={"default": {"max_connections": 2}})
    delivery_id = _delivery(postroom, tmp_path, {"own.example": 200})
    assert asyncio.run(postroom.sending.send(delivery_id)).state is DeliveryState.FINISHED
    assert len(domain.messages) == 200
    assert domain.most_connections <= 2


def test_a_domain_answering_4xx_is_slowed_down_and_the_report_says_so(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture()
    busy = capture(script=Script().on_rcpt(lambda _: True, "451 4.7.1 Try again later"))
    postroom = make_postroom(
        sqlite_url, relay, bcc=False, sending={"connections": 4, "quick_retries": 0},
        routing={"routes": {"busy.example": f"127.0.0.1:{busy.port}"}},
        shaping={"default": {"max_connections": 4},
                 "slowdown": {"min_failures": 5, "window": 10, "ratio": 0.5}})
    delivery_id = _delivery(postroom, tmp_path, {"busy.example": 12, "fine.example": 12})
    summary = asyncio.run(postroom.sending.send(delivery_id))
    assert summary.sent == 12 and summary.deferred == 12
    assert [s.domain for s in summary.slowed] == ["busy.example"]
    report = postroom.reports.report(delivery_id).to_json()
    [slowed] = report["slowed_domains"]
    assert slowed["domain"] == "busy.example" and "temporary" in slowed["reason"]


def test_an_hourly_limit_postpones_what_it_cannot_send_now(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture()
    postroom = make_postroom(
        sqlite_url, relay, bcc=False,
        shaping={"domains": {"metered.example": {"messages_per_hour": 60}}})
    delivery_id = _delivery(postroom, tmp_path, {"metered.example": 4, "free.example": 4})
    summary = asyncio.run(postroom.sending.send(delivery_id))
    # One minute's worth (one message) goes at once, the rest waits for the budget.
    assert summary.sent == 5 and summary.postponed == 3
    assert summary.state is DeliveryState.SENDING
    waiting = postroom.deliveries.logs(delivery_id, status=LogStatus.PENDING)
    assert len(waiting) == 3 and all("hourly limit of metered.example" in log.detail
                                     for log in waiting)
    assert all(log.attempts == 0 for log in waiting), "a postponed message is no attempt"
    soonest = min(log.next_attempt_at for log in waiting if log.next_attempt_at)
    assert soonest - postroom.clock() > timedelta(seconds=30)


def test_a_route_falls_back_to_its_next_host(capture: Callable[..., CaptureServer]) -> None:
    import asyncio

    from postroom.settings import SmtpRelay
    from postroom.transport.routed import RoutedConnection
    from postroom.transport.routing import HostPort, Route, RouteSource
    from postroom.transport.smtp import SmtpConnection

    down = capture()
    dead_port = down.port
    down.stop()
    backup = capture()
    route = Route("mx.example", (HostPort("127.0.0.1", dead_port),
                                 HostPort("127.0.0.1", backup.port)), RouteSource.MX)

    def connect(host: HostPort) -> SmtpConnection:
        return SmtpConnection(SmtpRelay(host=host.host, port=host.port, timeout_seconds=5),
                              helo_name="test")

    async def send() -> list[str]:
        connection = RoutedConnection(route, connect)
        try:
            outcomes = await connection.send_batch(
                [("s@example.com", f"r{i}@mx.example", b"Subject: x\r\n\r\nhi\r\n", False)
                 for i in range(3)])
        finally:
            await connection.close()
        return [o.verdict for o in outcomes]

    assert asyncio.run(send()) == ["sent"] * 3
    assert len(backup.messages) == 3
