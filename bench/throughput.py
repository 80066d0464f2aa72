"""Throughput, analysis speed and memory of Postroom, against Postfix's own tools (issue 6).

    python bench/throughput.py [--recipients N] [--quick | --full] [--no-write]
    python bench/throughput.py --profile DIR [--recipients N] [--bcc]

One after the other, on this machine, against `smtp-sink` on loopback:

1. the limit: `smtp-source` → `smtp-sink`, 5,120-byte bodies, 1 and 16 connections;
2. a naive baseline: a Python smtplib loop over one connection, building and serializing one
   `EmailMessage` (multipart/alternative, 5 personalized fields) per recipient;
3. a Postroom send of N recipients with Email BCC off and on (16 connections; archive copies go
   to a second smtp-sink and must all be flushed before the clock stops), peak RSS;
4. the analysis of a large audience with 5% duplicates and 2% quarantined addresses (its import
   timed apart);
5. the peak RSS of a send at a small and a large audience.

Prints a Markdown table and rewrites the section "## Throughput (issue 6)" of bench/RESULTS.md
(other sections are kept). The default sizes finish in about ten minutes on the current engine;
`--full` uses the targets' 1,000,000. With `--profile DIR` it only prepares and sends N
recipients under cProfile and prints where the time goes (analysis and send).

Needs Postfix's smtp-sink and smtp-source (Debian package `postfix`) on PATH or in /usr/sbin.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pstats
import shlex
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from html import escape
from pathlib import Path
from types import TracebackType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_split import per_message, split
from throughput_data import (
    ERRORS_TO,
    FROM_ADDRESS,
    FROM_NAME,
    HTML,
    SUBJECT,
    TEXT,
    recipients,
)
from throughput_report import (
    PostroomRun,
    Rate,
    Results,
    section,
    write_results,
)

CHILD = Path(__file__).resolve().parent / "throughput_postroom.py"
HELO = "bench.example.com"
DUPLICATES, QUARANTINED = 0.05, 0.02


class BenchError(Exception):
    """A phase could not measure (a tool missing, a child failed or timed out)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}",
                                                                     os.X_OK) else None)
    if found is None:
        raise BenchError(f"{name} not found: install Postfix (Debian: apt-get install postfix)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[Any]) -> None:
    """End a process we started, by its pid: TERM, then KILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Sink:
    """`smtp-sink` on a free loopback port, counting messages; stopped (by pid) on exit."""

    def __init__(self, folder: Path, name: str):
        self._logfile = folder / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Sink:
        command = [_tool("smtp-sink"), "-c"] + (["-u", "nobody"] if os.geteuid() == 0 else [])
        for _attempt in range(5):  # a port taken between probe and start: try another one
            port = _free_port()
            with self._logfile.open("wb") as out:
                process = subprocess.Popen([*command, f"127.0.0.1:{port}", "1000"],
                                           stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL)
            if self._listening(process, port):
                self._process, self.port = process, port
                return self
            _stop(process)
        raise BenchError(f"smtp-sink did not start: {self._logfile.read_text(errors='replace')}")

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._process is not None:
            _stop(self._process)

    @staticmethod
    def _listening(process: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def messages(self) -> int:
        """Messages received so far (the last `mesg=` of smtp-sink's -c counters)."""
        with self._logfile.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 400))
            tail = log.read().decode("ascii", "replace")
        found = tail.rpartition("mesg=")[2].split()[:1]
        return int(found[0]) if found and found[0].isdigit() else 0

    def count_since(self, before: int, expected: int) -> int:
        """Messages received since `before`, waiting a little for the counter to settle."""
        deadline = time.monotonic() + 3
        while self.messages() - before < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages() - before


# -- 1. the limit ------------------------------------------------------------------------------

def _smtp_source(sink: Sink, messages: int, sessions: int) -> float:
    """One smtp-source run; its wall time in seconds."""
    command = [_tool("smtp-source"), "-d", "-s", str(sessions), "-m", str(messages),
               "-l", "5120", "-M", HELO, "-f", ERRORS_TO, "-t", "member@example.org",
               f"127.0.0.1:{sink.port}"]
    before = sink.messages()
    start = time.perf_counter()
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=60 + messages / 50)
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"smtp-source failed: {exc.stderr.decode(errors='replace')}") from None
    except subprocess.TimeoutExpired:
        raise BenchError("smtp-source timed out") from None
    seconds = time.perf_counter() - start
    received = sink.count_since(before, messages)
    if received != messages:
        raise BenchError(f"smtp-sink counted {received} messages of {messages}")
    return seconds


def measure_limit(sink: Sink, messages: int, sessions: int, *, repeats: int = 3) -> Rate:
    """smtp-source → smtp-sink, `messages` 5,120-byte messages over `sessions` connections;
    the median of `repeats` runs (they take seconds, and a 2-core machine is noisy)."""
    runs = sorted(_smtp_source(sink, messages, sessions) for _ in range(repeats))
    rates = sorted(messages / seconds for seconds in runs)
    return Rate(messages, runs[len(runs) // 2], 5120, spread=(rates[0], rates[-1]))


# -- 2. the naive baseline ---------------------------------------------------------------------

def _naive_message(person: dict[str, str]) -> bytes:
    message = EmailMessage()
    message["From"] = Address(FROM_NAME, addr_spec=FROM_ADDRESS)
    message["To"] = Address(f"{person['first_name']} {person['last_name']}",
                            addr_spec=person["email"])
    message["Subject"] = SUBJECT.format(**person)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=HELO)
    message.set_content(TEXT.format(**person))
    message.add_alternative(HTML.format(**{k: escape(v) for k, v in person.items()}),
                            subtype="html")
    return message.as_bytes(policy=SMTP)


def measure_naive(sink: Sink, messages: int) -> Rate:
    """A plain smtplib loop: build, serialize and send one message per recipient."""
    people = list(recipients(messages))
    before = sink.messages()
    size = 0
    start = time.perf_counter()
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, local_hostname=HELO, timeout=30) as smtp:
            for person in people:
                data = _naive_message(person)
                size += len(data)
                smtp.sendmail(ERRORS_TO, [person["email"]], data)
    except (smtplib.SMTPException, OSError) as exc:
        raise BenchError(f"smtplib: {type(exc).__name__}: {exc}") from None
    seconds = time.perf_counter() - start
    received = sink.count_since(before, messages)
    if received != messages:
        raise BenchError(f"smtp-sink counted {received} messages of {messages}")
    return Rate(messages, seconds, size / messages)


# -- 3 to 5. Postroom, in child processes ------------------------------------------------------

def _child_env() -> dict[str, str]:
    """The environment without POSTROOM_* variables: the bench's settings are the only ones."""
    return {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}


def run_child(folder: Path, name: str, spec: dict[str, Any], *,
              timeout: float) -> tuple[dict[str, Any], float]:
    """Run one Postroom measurement in a child; its result and its own peak RSS (MB)."""
    spec = {**spec, "result": str(folder / f"{name}.result.json")}
    spec_path = folder / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(CHILD), str(spec_path)],
                               stdin=subprocess.DEVNULL, stdout=sys.stderr, env=_child_env())
    reaped = False
    try:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                reaped = True
                process.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{name}: no result after {timeout:,.0f} s; stopped")
            time.sleep(0.05)
    finally:
        if not reaped:
            process.kill()
            os.wait4(process.pid, 0)
            process.returncode = -9
    if process.returncode != 0:
        raise BenchError(f"{name}: the child process failed (exit {process.returncode}); "
                         "see its traceback above")
    result: dict[str, Any] = json.loads(Path(spec["result"]).read_text(encoding="utf-8"))
    return result, usage.ru_maxrss / 1024  # KiB on Linux


def _spec(folder: Path, sinks: tuple[Sink, Sink], *, bcc: bool, connections: int,
          profile: Path | None, archive_process: bool = False,
          processes: int = 1) -> dict[str, Any]:
    return {"dir": str(folder), "db": str(folder / "postroom.db"), "bcc": bcc,
            "archive_process": archive_process, "processes": processes,
            "relay_port": sinks[0].port, "archive_port": sinks[1].port,
            "connections": connections, "profile": str(profile) if profile else None}


def prepare(folder: Path, sinks: tuple[Sink, Sink], size: int, *, bcc: bool, connections: int,
            mixed: bool, profile: Path | None = None) -> PostroomRun:
    """Import an audience and analyze a delivery to it (one child)."""
    spec = {**_spec(folder, sinks, bcc=bcc, connections=connections, profile=profile),
            "mode": "prepare", "size": size, "duplicates": DUPLICATES if mixed else 0.0,
            "quarantined": QUARANTINED if mixed else 0.0}
    result, rss = run_child(folder, "prepare", spec, timeout=300 + size * 0.02)
    return PostroomRun(result, rss, problems=tuple(result["problems"]))


def send(folder: Path, sinks: tuple[Sink, Sink], prepared: PostroomRun, *, bcc: bool,
         connections: int, profile: Path | None = None,
         archive_process: bool = False, processes: int = 1) -> PostroomRun:
    """Send the prepared delivery (one child); check both sinks' counts against the log."""
    expected = prepared.prepare["to_send"]
    spec = {**_spec(folder, sinks, bcc=bcc, connections=connections, profile=profile,
                    archive_process=archive_process, processes=processes),
            "mode": "send", "delivery_id": prepared.prepare["delivery_id"],
            "expected": expected}
    relay, archive = sinks[0].messages(), sinks[1].messages()
    result, rss = run_child(folder, "send", spec, timeout=300 + expected * 0.05)
    problems = list(prepared.problems) + result["problems"]
    got = sinks[0].count_since(relay, expected)
    if got != expected:
        problems.append(f"the relay sink counted {got} messages, expected {expected}")
    copies = sinks[1].count_since(archive, expected if bcc else 0)
    if copies != (expected if bcc else 0):
        problems.append(f"the archive sink counted {copies} copies, "
                        f"expected {expected if bcc else 0}")
    return PostroomRun(prepared.prepare, prepared.prepare_rss_mb, result, rss, tuple(problems))


def measure_postroom(tmp: Path, sinks: tuple[Sink, Sink], size: int, *, bcc: bool,
                     connections: int, mixed: bool = False,
                     archive_process: bool = False, processes: int = 1) -> PostroomRun:
    with tempfile.TemporaryDirectory(prefix="send-", dir=tmp) as name:
        folder = Path(name)
        prepared = prepare(folder, sinks, size, bcc=bcc, connections=connections, mixed=mixed)
        return send(folder, sinks, prepared, bcc=bcc, connections=connections,
                    archive_process=archive_process, processes=processes)


# -- the run -----------------------------------------------------------------------------------

def _phase(results: Results, name: str, measure: Callable[[], Any]) -> Any:
    """Run one phase; a BenchError is recorded for the report and the run goes on."""
    _log(f"[{time.strftime('%H:%M:%S')}] {name} ...")
    try:
        value = measure()
    except BenchError as exc:
        results.errors[name] = str(exc)
        _log(f"    FAILED: {exc}")
        return None
    if isinstance(value, Rate):
        _log(f"    {value.per_second:,.0f} msg/s ({value.messages:,} in {value.seconds:.1f} s)")
    elif isinstance(value, PostroomRun):
        p, s = value.prepare, value.send
        _log(f"    import {p['import_seconds']:.1f} s, analysis {p['analyze_seconds']:.1f} s"
             + (f", send {s['sent']:,} in {s['seconds']:.1f} s = {value.rate.per_second:,.0f}"
                f" msg/s, peak RSS {value.send_rss_mb:,.0f} MB" if s else
                f", peak RSS {value.prepare_rss_mb:,.0f} MB"))
        for problem in value.problems:
            _log(f"    problem: {problem}")
    return value


def run(options: dict[str, Any], tmp: Path) -> Results:
    results = Results(options, load_before=os.getloadavg()[0])
    n, connections = options["recipients"], options["connections"]
    with Sink(tmp, "relay") as relay, Sink(tmp, "archive") as archive:
        sinks = (relay, archive)
        results.limit_1 = _phase(results, "smtp-source, 1 connection",
                                 lambda: measure_limit(relay, n, 1))
        results.limit_16 = _phase(results, "smtp-source, 16 connections",
                                  lambda: measure_limit(relay, n, 16))
        results.naive = _phase(results, "naive smtplib", lambda: measure_naive(relay, n))
        results.bcc_off = _phase(results, "Postroom, Email BCC off",
                                 lambda: measure_postroom(tmp, sinks, n, bcc=False,
                                                          connections=connections))
        results.bcc_on = _phase(results, "Postroom, Email BCC on",
                                lambda: measure_postroom(tmp, sinks, n, bcc=True,
                                                         connections=connections))
        results.bcc_on_process = _phase(
            results, "Postroom, Email BCC on, archive in its own process",
            lambda: measure_postroom(tmp, sinks, n, bcc=True, connections=connections,
                                     archive_process=True))
        for bcc, name in ((False, "bcc_off_two"), (True, "bcc_on_two")):
            setattr(results, name, _phase(
                results, f"Postroom, Email BCC {'on' if bcc else 'off'}, 2 send processes",
                functools.partial(measure_postroom, tmp, sinks, n, bcc=bcc,
                                  connections=connections // 2, processes=2)))
        profiled = min(n, options["profile_recipients"])
        for bcc, measured in ((False, results.bcc_off), (True, results.bcc_on)):
            label = f"CPU split, Email BCC {'on' if bcc else 'off'} ({profiled:,} under cProfile)"
            results.cpu_split[bcc] = _phase(results, label, functools.partial(
                cpu_split, tmp, sinks, profiled, bcc=bcc, connections=connections,
                measured=measured))
        size, small, large = (options["analysis_recipients"], options["memory_small"],
                              options["memory_large"])
        with tempfile.TemporaryDirectory(prefix="analysis-", dir=tmp) as name:
            folder = Path(name)
            results.analysis = _phase(
                results, f"import + analysis of {size:,}",
                lambda: prepare(folder, sinks, size, bcc=False, connections=connections,
                                mixed=True))
            results.memory_small = _phase(
                results, f"send of a {small:,}-row audience",
                lambda: measure_postroom(tmp, sinks, small, bcc=False,
                                         connections=connections, mixed=True))
            analysed = results.analysis

            def large_send() -> PostroomRun:
                if analysed is not None and large == size:  # send the analyzed delivery
                    return send(folder, sinks, analysed, bcc=False, connections=connections)
                return measure_postroom(tmp, sinks, large, bcc=False, connections=connections,
                                        mixed=True)

            results.memory_large = _phase(results, f"send of a {large:,}-row audience",
                                          large_send)
    results.load_after = os.getloadavg()[0]
    return results


def cpu_split(tmp: Path, sinks: tuple[Sink, Sink], size: int, *, bcc: bool, connections: int,
              measured: PostroomRun | None) -> dict[str, float]:
    """CPU µs per message in render / SMTP / store / loop / engine / other: the shares of a
    profiled send of `size` (bench/cpu_split.py) applied to the CPU time per message of the
    `measured` send without the profiler (of the profiled one if there is none)."""
    with tempfile.TemporaryDirectory(prefix="profile-", dir=tmp) as name:
        folder = Path(name)
        prepared = prepare(folder, sinks, size, bcc=bcc, connections=connections, mixed=False)
        sent = send(folder, sinks, prepared, bcc=bcc, connections=connections,
                    profile=folder / "send.prof")
        if sent.problems:
            raise BenchError("; ".join(sent.problems))
        shares = split(pstats.Stats(str(folder / "send.prof")))
    source = measured if measured is not None and measured.send else sent
    assert source.send is not None
    figures = per_message(shares, source.send["cpu_seconds"], source.send["sent"])
    figures["total"] = source.send["cpu_seconds"] / source.send["sent"] * 1e6
    figures["wall"] = source.send["seconds"] / source.send["sent"] * 1e6
    _log("    " + ", ".join(f"{part} {us:.0f} µs" for part, us in figures.items()))
    return figures


def profile(options: dict[str, Any], tmp: Path, out: Path) -> None:
    """Prepare and send N recipients under cProfile; print the top of both profiles."""
    out.mkdir(parents=True, exist_ok=True)
    n, bcc, connections = options["recipients"], options["bcc"], options["connections"]
    with Sink(tmp, "relay") as relay, Sink(tmp, "archive") as archive:
        sinks = (relay, archive)
        prepared = prepare(tmp, sinks, n, bcc=bcc, connections=connections, mixed=False,
                           profile=out / "analyze.prof")
        sent = send(tmp, sinks, prepared, bcc=bcc, connections=connections,
                    profile=out / "send.prof")
    for name, seconds in (("analyze", prepared.prepare["analyze_seconds"]),
                          ("send", sent.send["seconds"] if sent.send else 0.0)):
        print(f"\n===== {name} of {n:,} recipients (Email BCC {'on' if bcc else 'off'}): "
              f"{seconds:.1f} s under cProfile; {out / (name + '.prof')} =====")
        stats = pstats.Stats(str(out / f"{name}.prof"), stream=sys.stdout)
        shares = split(stats)
        total = sum(shares.values()) or 1.0
        print("own time by part: " + ", ".join(f"{part} {100 * t / total:.0f}%"
                                                for part, t in shares.items()))
        stats.strip_dirs().sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(30)
    for problem in sent.problems:
        print(f"problem: {problem}")


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="smaller sizes: 5,000 messages, 100,000-row analysis and send")
    size.add_argument("--full", action="store_true",
                      help="the targets' sizes: 100,000 messages per send, 1,000,000-row "
                      "analysis and send (about 17 minutes on a 2-core machine; the run in "
                      "bench/RESULTS.md)")
    parser.add_argument("--recipients", type=int, help="messages per send measurement "
                        "(steps 1-3; default 10,000, --quick 5,000, --full 100,000)")
    parser.add_argument("--analysis-recipients", type=int,
                        help="audience analyzed in step 4 (default 100,000, --full 1,000,000)")
    parser.add_argument("--memory-small", type=int, default=10_000,
                        help="small audience of step 5 (default 10,000)")
    parser.add_argument("--memory-large", type=int, help="large audience of step 5 (default: "
                        "the analysis audience, whose analyzed delivery is then sent)")
    parser.add_argument("--connections", type=int, default=16,
                        help="Postroom's sending.connections (default 16)")
    parser.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="only profile (cProfile) the analysis and send of --recipients; "
                        "writes DIR/analyze.prof and DIR/send.prof")
    parser.add_argument("--bcc", action="store_true", help="with --profile: Email BCC on")
    parser.add_argument("--profile-recipients", type=int, default=10_000,
                        help="messages of the profiled sends that split the CPU time per "
                        "message into render / SMTP / store / loop (default 10,000, at most "
                        "--recipients)")
    args = parser.parse_args(argv)
    if args.recipients is None:
        args.recipients = 5_000 if args.quick else 100_000 if args.full else 10_000
    if args.analysis_recipients is None:
        args.analysis_recipients = 1_000_000 if args.full else 100_000
    if args.memory_large is None:
        args.memory_large = args.analysis_recipients
    for name in ("recipients", "analysis_recipients", "memory_small", "memory_large",
                 "connections", "profile_recipients"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _options(argv)
    options = {k: v for k, v in vars(args).items() if k != "profile"}
    try:
        with tempfile.TemporaryDirectory(prefix="postroom-throughput-") as name:
            if args.profile is not None:
                profile(options, Path(name), args.profile)
                return 0
            results = run(options, Path(name))
    except BenchError as exc:
        _log(f"error: {exc}")
        return 1
    command = shlex.join(["python", "bench/throughput.py", *(argv if argv is not None
                                                             else sys.argv[1:])])
    text = section(results, command)
    print(text)
    if not args.no_write:
        write_results(text)
        _log("wrote bench/RESULTS.md")
    return 0 if not results.errors else 1


if __name__ == "__main__":
    sys.exit(main())
