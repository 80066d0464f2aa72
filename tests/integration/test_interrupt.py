"""Ctrl-C during `postroom deliveries send`, as a user presses it: the real command in a
subprocess, SIGINT, a relay slow per message (issue 10, point 4)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.testing.smtp_server import CaptureServer, Script, Sleep
from tests.integration.test_cli import ARCHIVE, Cli


class Running:
    """`postroom ARGS` in the background; its output lines, each with the time it came."""

    def __init__(self, cli: Cli, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postroom", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=cli.env, cwd=cli.dir)
        self.lines: list[tuple[float, str]] = []
        self.stdout: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream,), daemon=True)
                         for stream in (self.proc.stdout, self.proc.stderr)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append((time.monotonic(), line))
            if stream is self.proc.stdout:
                self.stdout.append(line)

    def first_line(self, words: str) -> float | None:
        return next((at for at, line in self.lines if words in line), None)

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _delivery(cli: Cli, count: int) -> str:
    rows = "".join(f"u{i:03d}@example.com\n" for i in range(count))
    cli.run("recipients", "import", str(cli.write("p.csv", "email\n" + rows)))
    cli.write("t.toml", 'name = "t"\nsubject = "Hi"\ntext = "Hello\\n"\n')
    cli.run("templates", "create", str(cli.dir / "t.toml"))
    delivery = str(cli.json("deliveries", "create", "-t", "t", "--set", "email_bcc=true")["id"])
    cli.run("deliveries", "analyze", delivery)
    return delivery


def _recipients(relay: CaptureServer) -> list[str]:
    return [m.rcpt_tos[0] for m in relay.messages if m.rcpt_tos != (ARCHIVE,)]


@pytest.fixture
def slow_cli(tmp_path: Path, capture: Callable[..., CaptureServer]) -> tuple[Cli, CaptureServer]:
    relay = capture(script=Script().on_data(lambda _: True, Sleep(0.3)))
    cli = Cli(tmp_path, relay.port)
    return cli, relay


def test_first_ctrl_c_finishes_in_flight_messages_and_says_so(
        slow_cli: tuple[Cli, CaptureServer]) -> None:
    cli, relay = slow_cli
    delivery = _delivery(cli, 60)
    running = Running(cli, "deliveries", "send", delivery)
    try:
        _wait_for(lambda: len(_recipients(relay)) >= 4)
        pressed = time.monotonic()
        running.proc.send_signal(signal.SIGINT)
        code = running.wait(30)
    finally:
        running.kill()
    said = running.first_line("finishing")
    assert said is not None and said - pressed < 1.0, running.output
    assert code == 130, running.output
    out = running.output
    assert "archive relay unreachable" not in out and "wait for a retry" not in out
    assert "interrupted" in out and "Traceback" not in out

    report = cli.json("deliveries", "report", delivery)
    sent = len(_recipients(relay))
    assert 4 <= sent < 60
    assert report["by_status"].get("sent", 0) == sent, "every accepted message was recorded"
    assert report["by_status"]["pending"] == 60 - sent
    assert report["in_doubt"]["logs"] == 0
    assert f"{60 - sent} messages not sent yet" in out

    again = cli.json("deliveries", "send", delivery)
    assert again["state"] == "finished"
    assert sorted(_recipients(relay)) == [f"u{i:03d}@example.com" for i in range(60)]


def test_second_ctrl_c_stops_at_once_and_counts_the_messages_on_the_wire_in_doubt(
        tmp_path: Path, capture: Callable[..., CaptureServer]) -> None:
    relay = capture(script=Script().on_data(lambda _: True, Sleep(6)))
    cli = Cli(tmp_path, relay.port)
    delivery = _delivery(cli, 20)
    running = Running(cli, "deliveries", "send", delivery, "--json")
    try:
        _wait_for(lambda: relay.most_connections >= 4)
        time.sleep(0.5)  # the first messages are on the wire, their DATA unanswered
        running.proc.send_signal(signal.SIGINT)
        _wait_for(lambda: running.first_line("finishing") is not None, 5)
        pressed = time.monotonic()
        running.proc.send_signal(signal.SIGINT)
        code = running.wait(30)
        stopped = time.monotonic()
    finally:
        running.kill()
    assert code == 130, running.output
    assert stopped - pressed < 3.0, "the second Ctrl-C does not wait for the relay's replies"
    summary = json.loads("".join(running.stdout))
    assert summary["interrupted"] == "stopped"
    # Each of the 4 connections had a batch of 4 handed over, its first message's DATA
    # unanswered: a batch is the engine's grain, so the count is an upper bound (never less).
    assert summary["sent"] == 0 and 4 <= summary["in_doubt"] <= 16
    assert summary["pending"] == 20
    report = cli.json("deliveries", "report", delivery)
    assert report["in_doubt"]["logs"] == summary["in_doubt"]
    assert report["by_status"]["pending"] == 20
    assert report["state"] == "sending"
