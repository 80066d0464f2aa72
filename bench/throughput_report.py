"""The figures of bench/throughput.py as a Markdown section: machine, table, targets, notes.

Pure formatting apart from `machine()` (reads /proc, asks postconf and git, read-only) and
`write_results()` (rewrites one section of bench/RESULTS.md, keeping the others).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results_file import replace_section

__all__ = ["SECTION", "PostroomRun", "Rate", "Results", "machine", "section", "write_results"]

SECTION = "## Throughput (issue 6)"
ROOT = Path(__file__).resolve().parents[1]
MILLION = 1_000_000
ANALYSIS_TARGET_S = 20.0
RSS_TARGET_MB = 150.0


@dataclass(frozen=True)
class Rate:
    messages: int
    seconds: float
    size: float = 0.0  # average message size in bytes, when known
    spread: tuple[float, float] | None = None  # lowest and highest msg/s of repeated runs

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class PostroomRun:
    """One Postroom audience: its preparation (import, analysis) and, if sent, its send."""

    prepare: dict[str, Any]
    prepare_rss_mb: float
    send: dict[str, Any] | None = None
    send_rss_mb: float = 0.0
    problems: tuple[str, ...] = ()

    @property
    def rate(self) -> Rate:
        assert self.send is not None
        return Rate(self.send["sent"], self.send["seconds"], self.send["avg_size"])


@dataclass
class Results:
    options: dict[str, Any]
    limit_1: Rate | None = None
    limit_16: Rate | None = None
    naive: Rate | None = None
    bcc_off: PostroomRun | None = None
    bcc_on: PostroomRun | None = None
    bcc_on_process: PostroomRun | None = None  # archive.own_process (ADR 0030)
    bcc_off_two: PostroomRun | None = None  # sending.processes = 2 (ADR 0031)
    bcc_on_two: PostroomRun | None = None
    analysis: PostroomRun | None = None
    memory_small: PostroomRun | None = None
    memory_large: PostroomRun | None = None
    # Email BCC on? → CPU µs per message by part (bench/cpu_split.py), "total" and "wall"
    cpu_split: dict[bool, dict[str, float] | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # phase → why it has no figure
    load_before: float = 0.0  # 1-minute load average when the run started
    load_after: float = 0.0


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _cpu() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else platform.machine()


def _ram() -> str:
    try:
        text = Path("/proc/meminfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    found = re.search(r"^MemTotal:\s*(\d+) kB", text, re.M)
    return f"{int(found.group(1)) / 1024 ** 2:.1f} GiB" if found else "unknown"


def _postfix() -> str:
    version = _run(["postconf", "-h", "mail_version"]) or _run(["/usr/sbin/postconf", "-h",
                                                                "mail_version"])
    package = _run(["dpkg-query", "-W", "-f=${Version}", "postfix"])
    if version and package:
        return f"{version} (Debian package postfix {package})"
    return version or package or "unknown"


def _postroom() -> str:
    try:
        version = importlib.metadata.version("postroom")
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed, from src/)"
    commit = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if not commit:
        return version
    # --no-optional-locks: a read that never refreshes (writes) the index
    dirty = _run(["git", "--no-optional-locks", "-C", str(ROOT), "status", "--porcelain",
                  "--untracked-files=no"])
    return f"{version}, commit {commit}" + (" with uncommitted changes" if dirty else "")


def machine() -> list[tuple[str, str]]:
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", _cpu()),
        ("cores", f"{os.cpu_count()} logical CPUs"),
        ("RAM", _ram()),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("SQLite", sqlite3.sqlite_version),
        ("Postfix (smtp-source, smtp-sink)", _postfix()),
        ("Postroom", _postroom()),
    ]


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _rate(rate: Rate | None) -> str:
    return f"{rate.per_second:,.0f} msg/s" if rate is not None else "—"


def _ratio(top: Rate | None, bottom: Rate | None, target: float, *,
           percent: bool) -> tuple[str, str]:
    if top is None or bottom is None or bottom.per_second == 0:
        return "—", "not measured"
    ratio = top.per_second / bottom.per_second
    shown = f"{ratio:.1%}" if percent else f"{ratio:.2f}x"
    return shown, "met" if ratio >= target else "not met"


def _analysis_verdict(run: PostroomRun) -> tuple[str, str]:
    rows, seconds = run.prepare["rows"], run.prepare["analyze_seconds"]
    shown = f"{seconds:,.1f} s ({rows / seconds:,.0f} recipients/s)"
    if rows >= MILLION:
        return shown, "met" if seconds <= ANALYSIS_TARGET_S else "not met"
    estimate = seconds * MILLION / rows
    shown += f"; linear estimate for 1M: {estimate:,.0f} s"
    if seconds > ANALYSIS_TARGET_S:
        return shown, f"not met (already {seconds:,.0f} s at {_n(rows)})"
    return shown, "met by estimate only" if estimate <= ANALYSIS_TARGET_S else \
        "not met by estimate"


def _rss_verdict(small: PostroomRun | None, large: PostroomRun) -> tuple[str, str]:
    rows, peak = large.prepare["rows"], large.send_rss_mb
    shown = f"{peak:,.0f} MB"
    if rows >= MILLION:
        return shown, "met" if peak <= RSS_TARGET_MB else "not met"
    if peak > RSS_TARGET_MB:
        return shown, f"not met (already at {_n(rows)})"
    if small is None or small.prepare["rows"] >= rows:
        return shown, f"not shown (measured at {_n(rows)} only)"
    slope = (peak - small.send_rss_mb) / (rows - small.prepare["rows"])
    estimate = peak + max(slope, 0.0) * (MILLION - rows)
    shown += f"; linear estimate for 1M: {estimate:,.0f} MB"
    return shown, "met by estimate only" if estimate <= RSS_TARGET_MB else \
        "not met by estimate"


def _send_row(label: str, run: PostroomRun | None, *, bcc: bool, connections: int,
              processes: int = 1) -> list[str]:
    if run is None or run.send is None:
        return [label, "", "—", "", ""]
    send = run.send
    extra = f", {_n(send['archived'])} archive copies sent and flushed" if bcc else ""
    steady = (f"; {send['report_throughput']:,.0f} msg/s first to last acceptance"
              if send["report_throughput"] else "")
    spread = (f"{connections // processes} connections in each of {processes} processes"
              if processes > 1 else f"{connections} connections")
    setup = (f"{_n(send['sent'])} recipients, {spread}, "
             f"avg {_n(send['avg_size'])} B{extra}; {send['seconds']:,.1f} s{steady}; "
             f"peak RSS {run.send_rss_mb:,.0f} MB")
    return [label, setup, _rate(run.rate), "", ""]


def table(results: Results) -> list[str]:
    o = results.options
    limit = f"{_n(o['recipients'])} msgs, 5,120-byte body, connections kept (-d)"

    def spread(rate: Rate | None) -> str:
        if rate is None or rate.spread is None:
            return ""
        return f"; median of 3 runs ({_n(rate.spread[0])} to {_n(rate.spread[1])} msg/s)"

    naive = results.naive
    naive_setup = (f"{_n(o['recipients'])} msgs, one EmailMessage built per recipient"
                   + (f", avg {_n(naive.size)} B" if naive else ""))
    rows = [
        ["smtp-source → smtp-sink, 1 connection", limit + spread(results.limit_1),
         _rate(results.limit_1), "", ""],
        ["smtp-source → smtp-sink, 16 connections", limit + spread(results.limit_16),
         _rate(results.limit_16), "", ""],
        ["naive smtplib loop, 1 connection", naive_setup, _rate(naive), "", ""],
        _send_row("Postroom send, Email BCC off", results.bcc_off, bcc=False,
                  connections=o["connections"]),
        _send_row("Postroom send, Email BCC on (recipients' messages)", results.bcc_on,
                  bcc=True, connections=o["connections"]),
        _send_row("Postroom send, Email BCC on, archive in its own process "
                  "(`archive.own_process`)", results.bcc_on_process, bcc=True,
                  connections=o["connections"]),
        _send_row("Postroom send, Email BCC off, 2 send processes (`sending.processes`)",
                  results.bcc_off_two, bcc=False, connections=o["connections"], processes=2),
        _send_row("Postroom send, Email BCC on, 2 send processes (`sending.processes`)",
                  results.bcc_on_two, bcc=True, connections=o["connections"], processes=2),
    ]

    def rate(run: PostroomRun | None) -> Rate | None:
        return run.rate if run is not None and run.send is not None else None

    off, on, naive16 = rate(results.bcc_off), rate(results.bcc_on), results.limit_16
    for label, top, bottom, target, percent, shown_target in (
            ("Postroom BCC off / smtp-source (16)", off, naive16, 0.5, True, "≥ 50%"),
            ("Postroom BCC on / smtp-source (16)", on, naive16, 0.25, True, "≥ 25%"),
            ("Postroom BCC off / naive smtplib", off, naive, 10.0, False, "≥ 10x")):
        shown, verdict = _ratio(top, bottom, target, percent=percent)
        rows.append([label, "", shown, shown_target, verdict])
    for variant, off_run, on_run in (
            ("1 send process", results.bcc_off, results.bcc_on),
            ("archive in its own process", None, results.bcc_on_process),
            ("2 send processes", results.bcc_off_two, results.bcc_on_two)):
        checks = []
        if off_run is not None:
            checks += [(f"issue 16, {variant}: BCC off / smtp-source (16)", rate(off_run),
                        naive16, 0.4, True, "≥ 40%"),
                       (f"issue 16, {variant}: BCC off / naive smtplib", rate(off_run), naive,
                        12.0, False, "≥ 12x")]
        checks.append((f"issue 16, {variant}: BCC on / smtp-source (16)", rate(on_run),
                       naive16, 0.2, True, "≥ 20%"))
        for label, top, bottom, target, percent, shown_target in checks:
            shown, verdict = _ratio(top, bottom, target, percent=percent)
            rows.append([label, "", shown, shown_target, verdict])
    rows += _audience_rows(results)
    lines = ["| measurement | run | result | target | met |", "|---|---|---:|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + _cpu_rows(results)


def _cpu_rows(results: Results) -> list[str]:
    """CPU time per message by part, for each send that has a split."""
    splits = [(bcc, split) for bcc, split in sorted(results.cpu_split.items()) if split]
    if not splits:
        return []
    parts = ["render", "SMTP", "store", "loop", "engine", "other"]
    lines = ["", "CPU time per message (µs), split by a profiled send of "
             f"{_n(min(results.options['recipients'], results.options['profile_recipients']))}"
             " recipients (bench/cpu_split.py: the profile's shares of the unprofiled send's "
             "CPU time; with Email BCC on, a message's figure includes its archive copy):", "",
             "| send | " + " | ".join(parts) + " | CPU total | wall |",
             "|---|" + "---:|" * (len(parts) + 2)]
    for bcc, split in splits:
        cells = [f"{split.get(part, 0.0):.0f}" for part in [*parts, "total", "wall"]]
        lines.append(f"| Email BCC {'on' if bcc else 'off'} | " + " | ".join(cells) + " |")
    return lines


def _audience_rows(results: Results) -> list[list[str]]:
    rows: list[list[str]] = []
    analysis = results.analysis
    if analysis is not None:
        p = analysis.prepare
        mix = (f"{_n(p['rows'])} rows ({_n(p['duplicates'])} case duplicates, "
               f"{_n(p['quarantined'])} quarantined)")
        rows.append(["import (CSV → recipients)", mix,
                     f"{p['import_seconds']:,.1f} s ({p['rows'] / p['import_seconds']:,.0f} "
                     "rows/s)", "", ""])
        shown, verdict = _analysis_verdict(analysis)
        rows.append(["analysis (`analyze` alone)", f"{mix} → {_n(p['to_send'])} to send",
                     shown, "≤ 20 s for 1M", verdict])
        rows.append(["peak RSS, import + analysis", f"{_n(p['rows'])} rows",
                     f"{analysis.prepare_rss_mb:,.0f} MB", "", ""])
    else:
        rows.append(["analysis (`analyze` alone)", "", "—", "≤ 20 s for 1M", "not measured"])
    small, large = results.memory_small, results.memory_large
    for run in (small, large):
        if run is not None and run.send is not None:
            rows.append(["peak RSS, send", f"{_n(run.prepare['rows'])}-row audience, "
                         f"{_n(run.send['sent'])} sent at {run.rate.per_second:,.0f} msg/s",
                         f"{run.send_rss_mb:,.0f} MB", "", ""])
    if large is not None and large.send is not None:
        shown, verdict = _rss_verdict(small, large)
        rows.append(["peak RSS of a 1M send", f"from the {_n(large.prepare['rows'])}-row send",
                     shown, "≤ 150 MB for 1M", verdict])
    else:
        rows.append(["peak RSS of a 1M send", "", "—", "≤ 150 MB for 1M", "not measured"])
    return rows


def _problems(results: Results) -> list[str]:
    lines = [f"- {phase}: {why}" for phase, why in results.errors.items()]
    for name in ("bcc_off", "bcc_on", "bcc_on_process", "bcc_off_two", "bcc_on_two",
                 "analysis", "memory_small", "memory_large"):
        run: PostroomRun | None = getattr(results, name)
        if run is not None:
            lines += [f"- {name}: {problem}" for problem in run.problems]
    return lines


def section(results: Results, command: str) -> str:
    o = results.options
    baseline = next((r.send["rss_mb_baseline"] for r in (results.bcc_off, results.bcc_on)
                     if r is not None and r.send is not None), None)
    notes = [
        "- `sending.processes = 2` (ADR 0031): `send` and one helper process share the "
        "delivery's claims, each with half the connections (16 in all), each archiving copies "
        "in its own loop; the helper's CPU and RSS are not in the send's figures.",
        "- All traffic is on loopback to `smtp-sink` (which discards messages); recipients' "
        "messages and archive copies go to two separate sinks, whose message counters are "
        "checked against Postroom's delivery log after each run.",
        "- Postroom runs through its service API (`wiring.build(Settings)`: SQLite in a temp "
        "folder, CSV import, template, `create_delivery`, `analyze`, `send`), each audience in "
        "child processes of its own: one to import and analyze, one to send. Peak RSS is the "
        "child's `ru_maxrss` (os.wait4).",
        f"- Send rate: recipients' messages sent / wall time of `send()`"
        f" ({o['connections']} connections); with Email BCC on the clock stops only when no "
        "archive copy is pending (`RunSummary.archive_pending`, else `archive_flush`).",
        "- Content: multipart/alternative (text + HTML), 5 personalized fields (first name, "
        "last name, city, member number, email; the subject uses two), ~5 KB per message; "
        "the naive loop sends the same content.",
        "- `archive.own_process` (ADR 0030): the archive copies go from a child process of the "
        "send child; that process's CPU and RSS are not in the send's figures.",
        "- Analysis audience: case variants of other rows' addresses (`Member…` next to "
        "`member…`) are the duplicates; quarantined addresses are `address_status` rows.",
    ]
    if baseline is not None:
        notes.append(f"- A send child's RSS right after importing Postroom and building the "
                     f"service is {baseline:,.0f} MB (interpreter and libraries).")
    problems = _problems(results)
    load = (f"{results.load_before:.2f} at the start, {results.load_after:.2f} at the end "
            "(1-minute load average; anything well above 0 means other processes shared the "
            "CPUs)")
    lines = [
        SECTION, "", f"Measured by `{command}`.", "",
        *[f"- {key}: {value}" for key, value in machine()], f"- load: {load}", "",
        *table(results), "",
        *notes, "",
    ]
    if problems:
        lines += ["Problems seen during the run (figures above may be affected):", "",
                  *problems, ""]
    return "\n".join(lines)


def write_results(text: str) -> None:
    """Replace (or add) this benchmark's section in RESULTS.md, keeping the others."""
    replace_section(SECTION, text)
