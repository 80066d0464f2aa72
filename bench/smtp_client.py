"""The SMTP client alone: aiosmtplib's `SmtpConnection` against `PipelinedConnection` (ADR 0013).

    python bench/smtp_client.py [--messages N] [--connections C] [--batch B] [--repeats R]

Prebuilt ~5.5 KB messages (nothing rendered on the clock) go to Postfix's `smtp-sink` on
loopback over C connections, N in all, in four ways: `smtp-source` (the ceiling on this
machine), `SmtpConnection.send`, `PipelinedConnection.send` and `PipelinedConnection.send_batch`
in batches of B. The four ways take turns, R rounds; the median is printed, with the spread
and the load average (the figures move with whatever else runs on the machine). Every outcome
must be "sent" and smtp-sink must count every message, or the run fails.

Needs Postfix's smtp-sink and smtp-source (Debian package `postfix`) on PATH or in /usr/sbin.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from postroom.domain.outcomes import Outcome, Verdict
from postroom.settings import SmtpRelay
from postroom.transport.pipelined import PipelinedConnection
from postroom.transport.smtp import SmtpConnection

HELO = "bench.example.com"
SENDER = "bounces@bench.example.com"


class BenchError(Exception):
    """A run could not measure (a tool missing, a message lost or refused)."""


def _tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}",
                                                                     os.X_OK) else None)
    if found is None:
        raise BenchError(f"{name} not found: install Postfix (Debian: apt-get install postfix)")
    return found


def message(number: int) -> bytes:
    """A ~5.5 KB plain newsletter for recipient `number`, CRLF lines, a few leading dots."""
    lines = [f"From: Bench <{SENDER}>", f"To: <member{number}@example.org>",
             f"Subject: Issue {number} of the bench letter", "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit",
             f"Message-ID: <{number}.bench@bench.example.com>", ""]
    paragraph = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
                 "tempor incididunt ut labore et dolore magna aliqua.")
    while sum(len(line) + 2 for line in lines) < 5500:
        lines += [paragraph[:70], paragraph[70:], ".a line that must be dot-stuffed", ""]
    return "\r\n".join(lines).encode("utf-8") + b"\r\n"


@contextmanager
def smtp_sink(folder: Path) -> Iterator[tuple[int, Callable[[], int]]]:
    """smtp-sink on a free loopback port; yields the port and a counter of received messages.
    Stopped by its pid on exit."""
    command = [_tool("smtp-sink"), "-c"] + (["-u", "nobody"] if os.geteuid() == 0 else [])
    log = folder / "smtp-sink.log"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with log.open("wb") as out:
        process = subprocess.Popen([*command, f"127.0.0.1:{port}", "1000"], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def received() -> int:
        tail = log.read_bytes()[-400:].decode("ascii", "replace")
        found = tail.rpartition("mesg=")[2].split()[:1]
        return int(found[0]) if found and found[0].isdigit() else 0

    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"smtp-sink did not start: {log.read_text()}") from None
                time.sleep(0.05)
        yield port, received
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


Way = Callable[[SmtpRelay, list[bytes], int, int], Coroutine[Any, Any, list[Outcome]]]


async def _each_send(factory: Callable[[SmtpRelay], SmtpConnection | PipelinedConnection],
                     relay: SmtpRelay, messages: list[bytes], total: int,
                     connections: int) -> list[Outcome]:
    numbers = iter(range(total))
    outcomes: list[Outcome] = []

    async def worker() -> None:
        connection = factory(relay)
        try:
            for number in numbers:
                outcomes.append(await connection.send(SENDER, f"member{number}@example.org",
                                                      messages[number % len(messages)]))
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return outcomes


async def aiosmtplib_send(relay: SmtpRelay, messages: list[bytes], total: int,
                          connections: int) -> list[Outcome]:
    return await _each_send(lambda r: SmtpConnection(r, helo_name=HELO), relay, messages,
                            total, connections)


async def pipelined_send(relay: SmtpRelay, messages: list[bytes], total: int,
                         connections: int) -> list[Outcome]:
    return await _each_send(lambda r: PipelinedConnection(r, helo_name=HELO), relay, messages,
                            total, connections)


def pipelined_batches(size: int) -> Way:
    async def run(relay: SmtpRelay, messages: list[bytes], total: int,
                  connections: int) -> list[Outcome]:
        starts = iter(range(0, total, size))
        outcomes: list[Outcome] = []

        async def worker() -> None:
            connection = PipelinedConnection(relay, helo_name=HELO)
            try:
                for start in starts:
                    batch = [(SENDER, f"member{n}@example.org", messages[n % len(messages)],
                              False) for n in range(start, min(start + size, total))]
                    outcomes.extend(await connection.send_batch(batch))
            finally:
                await connection.close()

        await asyncio.gather(*(worker() for _ in range(connections)))
        return outcomes

    return run


def measure(way: Way, port: int, received: Callable[[], int], messages: list[bytes],
            total: int, connections: int) -> float:
    """One run; messages per second."""
    relay = SmtpRelay(host="127.0.0.1", port=port, timeout_seconds=30)
    before = received()
    start = time.perf_counter()
    outcomes = asyncio.run(way(relay, messages, total, connections))
    seconds = time.perf_counter() - start
    refused = [o for o in outcomes if o.verdict is not Verdict.SENT]
    if len(outcomes) != total or refused:
        raise BenchError(f"{len(refused)} of {len(outcomes)} not sent: {refused[:1]}")
    deadline = time.monotonic() + 3
    while received() - before < total and time.monotonic() < deadline:
        time.sleep(0.05)
    if received() - before != total:
        raise BenchError(f"smtp-sink counted {received() - before} messages of {total}")
    return total / seconds


def measure_source(port: int, received: Callable[[], int], total: int,
                   connections: int) -> float:
    """smtp-source, 5,120-byte bodies, connections kept (-d): the ceiling."""
    before = received()
    start = time.perf_counter()
    subprocess.run([_tool("smtp-source"), "-d", "-s", str(connections), "-m", str(total),
                    "-l", "5120", "-M", HELO, "-f", SENDER, "-t", "member@example.org",
                    f"127.0.0.1:{port}"], check=True, capture_output=True,
                   timeout=60 + total / 50)
    seconds = time.perf_counter() - start
    deadline = time.monotonic() + 3
    while received() - before < total and time.monotonic() < deadline:
        time.sleep(0.05)
    if received() - before != total:
        raise BenchError(f"smtp-sink counted {received() - before} messages of {total}")
    return total / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    messages = [message(number) for number in range(256)]
    size = sum(map(len, messages)) / len(messages)
    total, connections = args.messages, args.connections
    print(f"{total:,} messages of {size:,.0f} B on average, {connections} connections, "
          f"median of {args.repeats} runs; Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs", flush=True)
    ways: list[tuple[str, Callable[[int, Callable[[], int]], float]]] = [
        ("smtp-source (ceiling, 5,120-byte bodies)",
         lambda port, rx: measure_source(port, rx, total, connections)),
        ("SmtpConnection.send (aiosmtplib)",
         lambda port, rx: measure(aiosmtplib_send, port, rx, messages, total, connections)),
        ("PipelinedConnection.send",
         lambda port, rx: measure(pipelined_send, port, rx, messages, total, connections)),
        (f"PipelinedConnection.send_batch ({args.batch})",
         lambda port, rx: measure(pipelined_batches(args.batch), port, rx, messages, total,
                                  connections)),
    ]
    try:
        with tempfile.TemporaryDirectory() as folder, smtp_sink(Path(folder)) as (port, rx):
            rates: dict[str, list[float]] = {name: [] for name, _ in ways}
            for _ in range(args.repeats):  # interleaved: a busy spell hits every way alike
                for name, run in ways:
                    rates[name].append(run(port, rx))
    except (BenchError, subprocess.SubprocessError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    print("| client | msg/s (median) | spread | / aiosmtplib |\n|---|---:|---|---:|")
    base = sorted(rates[ways[1][0]])[args.repeats // 2]
    for name, found in rates.items():
        found.sort()
        median = found[len(found) // 2]
        print(f"| {name} | {median:,.0f} | {found[0]:,.0f} to {found[-1]:,.0f} | "
              f"{median / base:.2f}x |")
    print(f"load average after the runs: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
