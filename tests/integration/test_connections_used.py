"""`sending.connections` is what a send uses when there is work for all of them: a
single-domain audience through the relay, a relay slow per message (issue 10, point 6)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.app import Postroom
from postroom.domain.states import DeliveryState
from postroom.testing.smtp_server import CaptureServer, Script, Sleep
from tests.conftest import write_csv


@pytest.mark.parametrize("connections", [4, 16])
def test_every_configured_connection_carries_mail(
    connections: int, capture: Callable[..., CaptureServer],
    make_postroom: Callable[..., Postroom], sqlite_url: str, tmp_path: Path,
) -> None:
    relay = capture(script=Script().on_data(lambda _: True, Sleep(0.1)))
    postroom = make_postroom(sqlite_url, relay, bcc=False,
                             sending={"connections": connections},
                             shaping={"default": {"max_connections": connections}})
    rows = [{"email": f"u{i:03d}@one.example"} for i in range(connections * 6)]
    postroom.recipients.import_recipients(write_csv(tmp_path / "one.csv", rows))
    postroom.templates.create_template("t", {"subject": "Hi", "text": "Hello\n"})
    delivery, _ = postroom.deliveries.create_delivery("t")

    summary = asyncio.run(postroom.sending.send(delivery.id))

    assert summary.state is DeliveryState.FINISHED and summary.sent == connections * 6
    # Counted by the server from connect to close.
    assert relay.most_connections == connections
    peers = {m.peer for m in relay.messages}
    assert len(peers) == connections
