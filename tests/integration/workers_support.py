"""Running `postroom worker` processes against capture servers, for the worker tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from postroom.app import Postroom
from postroom.testing.smtp_server import CaptureServer
from tests.conftest import ARCHIVE, write_csv


def write_config(path: Path, database_url: str, relay: CaptureServer, archive: CaptureServer,
                 *, sending: str = "") -> Path:
    """Settings for worker processes: short leases so that takeovers happen in seconds."""
    path.write_text(
        f'database_url = "{database_url}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {relay.port}\ntimeout_seconds = 5\n'
        f'[sending]\nconnections = 4\nbatch_size = 40\nlease_seconds = 2\n'
        f'quick_retry_seconds = 0.05\nquick_retries = 10\nwait_for_retries_seconds = 2\n'
        f'worker_poll_seconds = 0.2\n{sending}\n'
        f'[defaults]\nfrom_address = "news@postroom.example"\n'
        f'[archive]\nenabled = true\nbcc_address = "{ARCHIVE}"\ndrain_seconds = 2\n'
        f'max_backoff_seconds = 0.5\n'
        f'[archive.relay]\nhost = "127.0.0.1"\nport = {archive.port}\ntimeout_seconds = 5\n',
        encoding="utf-8")
    return path


def start_worker(config: Path, log: Path,
                 secrets: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`secrets`: POSTROOM_* variables for settings the file may not hold (passwords)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(secrets or {})
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "postroom", "--config", str(config),
                                    "worker"], stdout=out, stderr=subprocess.STDOUT, env=env)
    _STARTED[process.pid] = time.monotonic()
    return process


_STARTED: dict[int, float] = {}
# The interpreter's own start, before `held_signal.hold()` runs: a SIGTERM there still takes
# the default action (tens of milliseconds; a real supervisor has the same window).
_INTERPRETER_START = 0.3


def stop_worker(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                timeout: float = 30) -> int:
    started = _STARTED.pop(process.pid, None)
    if started is not None and sig == signal.SIGTERM:
        time.sleep(max(0.0, started + _INTERPRETER_START - time.monotonic()))
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def started_delivery(postroom: Postroom, tmp_path: Path, count: int) -> int:
    """A delivery with Email BCC to `count` recipients, analyzed and set `sending`."""
    rows = [{"email": f"r{i:05d}@example.com", "first_name": f"R{i}"} for i in range(count)]
    postroom.recipients.import_recipients(write_csv(tmp_path / "r.csv", rows))
    postroom.templates.create_template("t", {"subject": "Hello {{ recipient.first_name }}",
                                             "text": "Dear {{ recipient.first_name }},\nnews.\n",
                                             "html": "<p>Dear {{ recipient.first_name }}, "
                                                     "news.</p>",
                                             "email_bcc": True})
    delivery, _ = postroom.deliveries.create_delivery("t")
    postroom.deliveries.start(delivery.id)
    return delivery.id
