"""`GET /metrics` (Prometheus text from the store) and the archive-backlog check of `health`,
on both stores: one Postroom sends, another one (as another process would) serves the scrape."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from postroom.app import Postroom
from postroom.settings import WebSettings
from postroom.testing.smtp_server import CaptureServer, Script
from postroom.wiring import utc_now
from tests.conftest import write_csv
from tests.integration.web_server import serving

TOKEN = "t" * 32  # web.health_token: /health's details


def _scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def test_metrics_come_from_the_store_and_health_watches_the_archive_backlog(
        make_postroom: Callable[..., Postroom], capture: Callable[..., CaptureServer],
        database_url: str, tmp_path: Path) -> None:
    now = [utc_now()]

    def clock() -> datetime:
        return now[0]

    relay = capture()
    archive_down = capture(script=Script().on_data(lambda _: True, "451 4.3.0 archive busy"))
    sender = make_postroom(database_url, relay, archive=archive_down, clock=clock,
                           archive_options={"drain_seconds": 0})
    rows = [{"email": f"r{n}@example.com", "first_name": f"R{n}"} for n in range(3)]
    sender.recipients.import_recipients(write_csv(tmp_path / "r.csv", rows))
    sender.templates.create_template("t", {"subject": "Hi", "text": "Hello\n", "email_bcc": True})
    delivery, _ = sender.deliveries.create_delivery("t")
    assert asyncio.run(sender.sending.send(delivery.id)).sent == 3

    other = make_postroom(database_url, relay, archive=archive_down, clock=clock,
                          web=WebSettings(health_token=SecretStr(TOKEN)))
    with serving(other) as client:
        metrics = _scrape(client)
        assert metrics[("postroom_messages", (("status", "sent"),))] == 3
        assert metrics[("postroom_messages", (("status", "pending"),))] == 0
        assert metrics[("postroom_messages_sent_total", ())] == 3
        assert metrics[("postroom_send_rate_per_second", ())] == 3 / 300
        assert metrics[("postroom_archive_copies", (("state", "pending"),))] == 3
        assert metrics[("postroom_archive_copies", (("state", "archived"),))] == 0
        assert 0 <= metrics[("postroom_archive_oldest_pending_age_seconds", ())] < 60
        assert metrics[("postroom_bounces", (("state", "new"),))] == 0
        assert metrics[("postroom_workers", (("state", "alive"),))] == 0
        assert metrics[("postroom_worker_leases", ())] == 0
        assert client.get("/health").status_code == 200

        now[0] += timedelta(minutes=16)  # the archive relay has taken nothing for 16 min
        metrics = _scrape(client)
        assert metrics[("postroom_archive_oldest_pending_age_seconds", ())] >= 16 * 60
        assert metrics[("postroom_send_rate_per_second", ())] == 0
        assert client.get("/health").json() == {"status": "problem"}  # public: no details
        health = client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert health.status_code == 503
        [problem] = health.json()["problems"]
        assert "oldest pending archive copy" in problem
        assert "archive.max_pending_age_minutes" in problem
    assert not sender.operations.health().ok
