"""A worker asked to stop (SIGTERM) while it starts stops cleanly: exit 0, nothing claimed.

A supervisor may stop a worker at any moment, also in the second or more it spends importing
and opening its database; before held_signal, the default action killed it there (exit -15),
which the worker kill tests met now and then as a flake."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from postroom.app import Postroom
from postroom.domain.states import DeliveryState
from postroom.testing.smtp_server import CaptureServer
from tests.integration.workers_support import (
    start_worker,
    started_delivery,
    stop_worker,
    write_config,
)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(log: Path, text: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text(encoding="utf-8", errors="replace"):
        assert process.poll() is None, log.read_text(encoding="utf-8", errors="replace")
        assert time.monotonic() < deadline, f"{text!r} not in {log}"
        time.sleep(0.1)


def test_sigterm_while_importing_stops_the_worker_cleanly_before_it_claims_anything(
    capture: Callable[..., CaptureServer], make_postroom: Callable[..., Postroom],
    sqlite_url: str, tmp_path: Path,
) -> None:
    relay, archive = capture(), capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive)
    delivery_id = started_delivery(postroom, tmp_path, 50)
    config = write_config(tmp_path / "w.toml", sqlite_url, relay, archive)
    log = tmp_path / "w.log"
    process = start_worker(config, log)
    time.sleep(0.4)  # importing: the event loop comes after a second or more
    assert process.poll() is None
    assert stop_worker(process) == 0, log.read_text(encoding="utf-8")
    assert "stopped; sent 0" in log.read_text(encoding="utf-8")
    assert relay.messages == [] and archive.messages == []
    assert postroom.store.get_delivery(delivery_id).state is DeliveryState.SENDING
    assert postroom.deliveries.pending_count(delivery_id) == 50


def test_sigterm_while_waiting_for_the_database_ends_the_wait_at_once(tmp_path: Path) -> None:
    config = tmp_path / "w.toml"
    config.write_text(f'database_url = "postgresql+psycopg://postroom@127.0.0.1:'
                      f'{_closed_port()}/postroom"\n[sending]\ndatabase_wait_seconds = 300\n',
                      encoding="utf-8")
    log = tmp_path / "w.log"
    process = start_worker(config, log)
    _wait_for(log, "retrying for up to 300 s", process, 60)
    asked = time.monotonic()
    assert stop_worker(process, timeout=20) == 0, log.read_text(encoding="utf-8")
    assert time.monotonic() - asked < 10  # the longest pause between tries is 5 s
    text = log.read_text(encoding="utf-8")
    assert "worker stopped before it started: stopped while waiting" in text


def test_any_other_command_still_dies_of_a_sigterm_that_came_while_it_started(
    sqlite_url: str, tmp_path: Path,
) -> None:
    """Held while importing, the signal is raised again once the command line shows it is not
    a worker: `workers` (which would list and exit 0) ends by it instead."""
    config = tmp_path / "p.toml"
    config.write_text(f'database_url = "{sqlite_url}"\n', encoding="utf-8")
    command = [sys.executable, "-m", "postroom", "--config", str(config)]
    assert subprocess.run([*command, "init"], capture_output=True, timeout=120).returncode == 0
    process = subprocess.Popen([*command, "workers"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    time.sleep(0.4)  # importing
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM, output
